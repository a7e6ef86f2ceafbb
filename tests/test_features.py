"""The featurizer and the PyG dataset: graphs that say what the scenario says, batched correctly."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from tests_helpers import KINDS, ROOT, random_scenario
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from chainnet.dataset.store import DatasetError
from chainnet.learn.data import QoSDataset, split_of
from chainnet.learn.features import (
    DEVICE_LOAD,
    DEVICE_STATIC,
    FRAGMENT_LOAD,
    FRAGMENT_STATIC,
    Normalizer,
    attach_targets,
    graph_batch,
    resident_memory,
    scenario_graph,
)
from chainnet.learn.prior import (
    chain_of_fragments,
    chain_outputs,
    load_features,
    reach_probabilities,
)
from chainnet.learn.stations import memory_admission, mm1k
from chainnet.queueing.exact import macgregor_smith_loss
from chainnet.queueing.exact import mm1k as exact_mm1k
from chainnet.scenario import Device, Region, Scenario, ServiceChain, Stage
from chainnet.sim import SimulatorSettings
from datagen.defaults import preset
from datagen.generate import generate
from datagen.presets import make_sampler


def birth_death(rho, rates, shares, capacity, mean=0.0, variance=0.0):
    """One device's resident jobs, state by state, as `memory_admission` defines them: in state n
    a job of share s is admitted with probability P(normal(n x mean, n x variance) <= 1 - s)
    (a job of share 0: always) while n < capacity; jobs leave at sum(rates) / rho. (Each class's
    probability of being refused; the mean number.)"""

    def fits(n, s):
        if s == 0:
            return 1.0
        room = 1.0 - s - n * mean
        width = math.sqrt(n * variance)
        return float(room >= 0) if width == 0 else 0.5 * math.erfc(-room / (width * math.sqrt(2)))

    admitted = [[fits(n, s) if n < capacity else 0.0 for s in shares] for n in range(capacity + 1)]
    p = [1.0]
    for n in range(capacity):
        p.append(p[-1] * rho * sum(r * a for r, a in zip(rates, admitted[n])) / sum(rates))
    p = [x / sum(p) for x in p]
    refused = [
        sum(p[n] * (1 - admitted[n][c]) for n in range(capacity + 1)) for c in range(len(rates))
    ]
    return refused, sum(n * x for n, x in enumerate(p))


def example() -> Scenario:
    return Scenario(
        [Device("a", capacity=4, speed=2.0), Device("b", capacity=10, memory=100.0)],
        [
            ServiceChain(
                "x", 0.5, [Stage("a", 1.0, exit_prob=0.2), Stage("b", 3.0, job_memory=25.0)]
            ),
            ServiceChain("y", 0.25, [Stage("b", 1.0)]),
        ],
    )


def test_graph_structure_and_features():
    g = scenario_graph(example())
    assert g["chain"].num_nodes == 2 and g["fragment"].num_nodes == 3 and g["device"].num_nodes == 2
    assert g["fragment", "placed_on", "device"].edge_index.tolist() == [[0, 1, 2], [0, 1, 1]]
    # only the relations the models read: no fragment-next or device-hosts edges to keep in sync
    assert sorted(g.edge_types) == [
        ("chain", "contains", "fragment"),
        ("device", "in", "region"),
        ("fragment", "placed_on", "device"),
    ]
    assert g["region"].num_nodes == 0 and g["device", "in", "region"].edge_index.shape == (2, 0)
    assert g["chain", "contains", "fragment"].edge_index.tolist() == [[0, 0, 1], [0, 1, 2]]
    assert g["fragment"].hop.tolist() == [0, 1, 0]
    x = dict(zip(FRAGMENT_STATIC, g["fragment"].x[1].tolist()))
    assert x["inv_capacity"] == pytest.approx(0.1) and x["memory_share"] == pytest.approx(0.25)
    assert x["service_share"] == pytest.approx(3.0 / 3.5)  # 0.5 (work 1 / speed 2) + 3.0
    d = dict(zip(DEVICE_STATIC, g["device"].x[1].tolist()))
    assert d["fragments_per_capacity"] == pytest.approx(0.2) and d["memory_limited"] == 1.0
    # base_load = rate x mean service time: unit-free, the same whatever the time unit
    assert g["fragment"].base_load.tolist() == pytest.approx([0.25, 1.5, 0.25])


def contention(flood: float) -> Scenario:
    """Large jobs (chain big) beside small ones arriving at rate `flood` (chain small), on two
    devices that share a region of 300 MB."""
    return Scenario(
        [Device("a", capacity=8, speed=1.0), Device("b", capacity=8, speed=1.0)],
        [
            ServiceChain("big", 0.1, [Stage("a", 1.0, job_memory=200.0)]),
            ServiceChain("small", flood, [Stage("b", 1.0, job_memory=20.0)]),
        ],
        regions=[Region("r", ("a", "b"), memory=300.0)],
    )


def test_region_features_say_how_full_a_shared_region_gets():
    light, flooded = scenario_graph(contention(0.1)), scenario_graph(contention(5.0))
    share = FRAGMENT_STATIC.index("region_share")
    # one large job takes 2/3 of the region, a small one 1/15, whatever the loads
    assert flooded["fragment"].x[:, share].tolist() == pytest.approx([2 / 3, 1 / 15])
    load = DEVICE_STATIC.index("region_load")
    # light: a resident 1/9 job of each chain (rho 0.1), 200/9 + 20/9 MB of 300: u = 22/270
    u = (200 / 9 + 20 / 9) / 300
    assert light["device"].x[:, load].tolist() == pytest.approx([u / (1 + u)] * 2)
    # flooded: b is full (8 jobs of 20 MB) beside a's 1/9 job: the region is over 60 % full
    u = (200 / 9 + 160) / 300
    assert flooded["device"].x[:, load].tolist() == pytest.approx([u / (1 + u)] * 2)
    plain = scenario_graph(example())
    assert plain["fragment"].x[:, share].eq(0).all() and plain["device"].x[:, load].eq(0).all()


def test_the_contention_features_are_zero_on_dsn24_scenarios():
    """dsn24 has no memory and no regions: these features are constant there, so a model trained
    on it computes what it did before them (their weights multiply zeros once normalised)."""
    sample = make_sampler(preset("dsn24"))
    graph = graph_batch([sample(np.random.default_rng(seed)) for seed in range(50)])
    for node, name in (("fragment", "region_share"), ("device", "memory_load")):
        columns = FRAGMENT_STATIC if node == "fragment" else DEVICE_STATIC
        assert graph[node].x[:, columns.index(name)].eq(0).all()
    assert graph["device"].x[:, DEVICE_STATIC.index("region_load")].eq(0).all()
    edge = graph_batch([make_sampler(preset("edge"))(np.random.default_rng(s)) for s in range(50)])
    assert edge["device"].x[:, DEVICE_STATIC.index("memory_load")].gt(0).any()
    assert edge["device"].x[:, DEVICE_STATIC.index("region_load")].gt(0).any()
    # and no memory admission: a device refuses every stage's jobs alike
    loads = load_features(graph)
    dev_of = graph["fragment", "placed_on", "device"].edge_index[1]
    stage = loads["fragment"][:, FRAGMENT_LOAD.index("blocking")]
    device = loads["device"][:, DEVICE_LOAD.index("blocking")]
    assert torch.equal(stage, device[dev_of])


def test_region_fill_follows_the_jobs_that_reach_the_region():
    """The load features' region fill: the memory the region's resident jobs hold (M/M/1/K
    numbers at the current loads) over its memory; fewer jobs passing upstream hold less."""
    sc = Scenario(
        [Device("g", capacity=50, speed=100.0), Device("a", capacity=8), Device("b", capacity=8)],
        [
            ServiceChain("big", 0.5, [Stage("a", 1.0, job_memory=200.0)]),
            ServiceChain("small", 5.0, [Stage("g", 1.0), Stage("b", 1.0, job_memory=20.0)]),
        ],
        regions=[Region("r", ("a", "b"), memory=300.0)],
    )
    g = scenario_graph(sc)
    fill = DEVICE_LOAD.index("region_fill")
    nominal = load_features(g)["device"][:, fill]
    assert nominal[0] == 0 and nominal[1] == nominal[2]  # g is in no region
    # a: rho 0.5, its jobs of 200 fit one at a time in the region's 300 (M/M/1/1); b: saturated,
    # 8 jobs of 20 (M/M/1/8); with 90 % of small's jobs lost at g, b at rho 0.5 (M/M/1/8)
    _, number = mm1k(torch.tensor([0.5, 5.0, 0.5]), torch.tensor([1.0, 8.0, 8.0]))
    at_a, at_b, at_b_lossy = number.tolist()
    u = (at_a * 200.0 + at_b * 20.0) / 300.0
    assert nominal[1].item() == pytest.approx(u / (1 + u), rel=1e-5)
    lossy = load_features(g, torch.tensor([1.0, 0.1, 1.0]))["device"][:, fill]
    u = (at_a * 200.0 + at_b_lossy * 20.0) / 300.0
    assert lossy[1].item() == pytest.approx(u / (1 + u), rel=1e-5) and lossy[1] < nominal[1]
    memory = DEVICE_LOAD.index("memory_fill")
    assert load_features(g)["device"][:, memory].eq(0).all()  # no device has its own memory
    # squeeze: a job against the memory left free (300 - held), per fragment; the large job fits
    # worse
    squeeze = load_features(g)["fragment"][:, FRAGMENT_LOAD.index("squeeze")]
    free = 300.0 - (at_a * 200.0 + at_b * 20.0)
    assert squeeze.tolist() == pytest.approx([200 / (200 + free), 0.0, 20 / (20 + free)], rel=1e-5)
    assert squeeze[0] > 2 * squeeze[2]
    # 90 % of small's jobs lost upstream: more memory free, every job squeezed less
    lossy = load_features(g, torch.tensor([1.0, 0.1, 1.0]))["fragment"]
    free = 300.0 - (at_a * 200.0 + at_b_lossy * 20.0)
    expected = [200 / (200 + free), 0.0, 20 / (20 + free)]
    assert lossy[:, FRAGMENT_LOAD.index("squeeze")].tolist() == pytest.approx(expected, rel=1e-5)
    # example's b (100 of memory, jobs of 25 or none): saturated; x's jobs are refused when the
    # residents (1.2 of its load 1.45 x's) leave less than 25 free, y's at its capacity 10
    # (`memory_admission`); the mean number holds a mean share 0.4 x 0.25 / 0.65
    # (arrival-weighted): under 1, but nearly full
    g = scenario_graph(example())
    _, number = birth_death(
        1.45,
        [0.4, 0.25],
        [0.25, 0.0],
        10,
        mean=0.25 * 1.2 / 1.45,
        variance=0.25**2 * 1.2 / 1.45 - (0.25 * 1.2 / 1.45) ** 2,
    )
    u = number * 0.4 * 0.25 / 0.65
    assert load_features(g)["device"][:, memory].tolist() == pytest.approx([0.0, u / (1 + u)])
    # x's 25 at b against the 1 - u share left free; y's jobs hold no memory
    squeeze = load_features(g)["fragment"][:, FRAGMENT_LOAD.index("squeeze")]
    assert squeeze.tolist() == pytest.approx([0.0, 0.25 / (0.25 + 1 - u), 0.0], rel=1e-5)


def test_resident_memory_is_the_mm1_number_within_the_limits():
    def one(load, capacity=10.0, memory=np.nan):
        number, held = resident_memory(
            np.array([2.0]), np.array([load]), np.array([2.0 * 30.0]), capacity, memory
        )
        return float(number[0]), float(held[0])

    assert one(0.5) == pytest.approx((1.0, 30.0))  # rho / (1 - rho) jobs of 30 MB
    assert one(0.95) == (10.0, 300.0)  # 19 jobs exceed the capacity
    assert one(1.0) == one(3.0) == (10.0, 300.0)  # saturated: full
    assert one(3.0, memory=90.0) == (3.0, 90.0)  # the memory holds 3 jobs
    fill = DEVICE_STATIC.index("memory_load")
    # a: no memory; b at rho 1.2 + 0.25 is saturated and its 100 MB full (u = 1)
    assert scenario_graph(example())["device"].x[:, fill].tolist() == [0.0, 0.5]
    light = Scenario(  # rho 0.7 (2.33 jobs), of 25 MB or none, arrival-weighted
        [Device("b", capacity=10, memory=100.0)],
        [
            ServiceChain("x", 0.4, [Stage("b", 1.0, job_memory=25.0)]),
            ServiceChain("y", 0.3, [Stage("b", 1.0)]),
        ],
    )
    u = 0.7 / 0.3 * (0.4 * 25.0 / 0.7) / 100.0
    assert scenario_graph(light)["device"].x[0, fill].item() == pytest.approx(u / (1 + u))


def test_load_features_and_reach():
    sc = example()
    g = scenario_graph(sc)
    lf = load_features(g)
    assert torch.expm1(lf["device"][:, 0]).tolist() == pytest.approx(sc.offered_loads(), rel=1e-6)
    # Half the jobs pass device a: device b sees 0.5 * 0.8 of chain x's load.
    lf = load_features(g, torch.tensor([0.5, 1.0, 1.0]))
    assert torch.expm1(lf["fragment"][:, 3]).tolist() == pytest.approx([1.0, 0.4, 1.0])
    assert torch.expm1(lf["device"][1, 0]).item() == pytest.approx(1.5 * 0.4 + 0.25, rel=1e-6)


def test_batching_keeps_chains_and_hops_apart():
    graphs = [scenario_graph(example()) for _ in range(3)]
    batch = next(iter(DataLoader(graphs, batch_size=3)))
    chain, hop = chain_of_fragments(batch)
    assert chain.tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5]
    assert hop.tolist() == [0, 1, 0] * 3  # `hop` has no 'index' in its name: not shifted
    p = torch.rand(9)
    r = reach_probabilities(p, batch["fragment"].exit_prob, chain, hop, 6)
    expected = torch.ones(9)
    for i in (1, 4, 7):
        expected[i] = p[i - 1] * 0.8
    assert torch.allclose(r, expected)


def test_targets_and_normalizer():
    g = attach_targets(
        scenario_graph(example()),
        {"throughput_ratio": [0.9, 1.0], "response_ratio": [0.5, 0.7]},
        {"arrivals": [100, 80, 0], "drops": [10, 0, 0]},
    )
    assert torch.allclose(g["chain"].y, torch.tensor([[0.9, 0.5], [1.0, 0.7]]))
    yp = g["fragment"].y_pass
    assert yp[:2].tolist() == pytest.approx([0.9, 1.0]) and torch.isnan(yp[2])
    norm = Normalizer().fit([g, scenario_graph(example())])
    z = norm("fragment", g["fragment"].x)
    assert torch.allclose(z.mean(0), torch.zeros(z.shape[1]), atol=1e-5)


def test_split_is_deterministic_by_sample_id():
    ids = np.arange(20_000)
    w = split_of(ids, (0.8, 0.1, 0.1))
    assert np.allclose(np.bincount(w) / len(w), [0.8, 0.1, 0.1], atol=0.01)
    assert (split_of(ids[::-1], (0.8, 0.1, 0.1)) == w[::-1]).all()


def test_dataset_from_a_generated_dataset(tmp_path):
    preset = yaml.safe_load((ROOT / "conf/scenario/dsn24.yaml").read_text())
    settings = SimulatorSettings(precision=0.1, max_arrivals=15_000, warmup_arrivals=1000)
    generate(n=30, seed=3, out=tmp_path / "ds", preset=preset, settings=settings, shard_size=10)
    splits = {s: QoSDataset(tmp_path / "ds", s) for s in ("train", "val", "test")}
    ids = sorted(int(g.sample) for d in splits.values() for g in d)
    assert ids == list(range(30))
    g = splits["train"][0]
    assert g["chain"].y.shape == (g["chain"].num_nodes, 2)
    assert not torch.isnan(g["fragment"].y_pass).any()
    cache = sorted(p.name for p in (tmp_path / "ds/processed").iterdir())
    other = QoSDataset(tmp_path / "ds", "train", fractions=(0.5, 0.25, 0.25))
    assert len(sorted((tmp_path / "ds/processed").iterdir())) == len(cache) + 1
    assert len(other) < len(splits["train"])
    manifest = json.loads((tmp_path / "ds/manifest.json").read_text())
    assert manifest["complete"]
    # A whole dataset as one split (evaluation): the other splits are empty, and say so.
    whole = QoSDataset(tmp_path / "ds", "test", fractions=(0.0, 0.0, 1.0))
    assert len(whole) == 30
    with pytest.raises(ValueError, match="'train' .* is empty"):
        QoSDataset(tmp_path / "ds", "train", fractions=(0.0, 0.0, 1.0))


def test_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset folder"):
        QoSDataset(tmp_path)
    with pytest.raises(ValueError, match="split"):
        QoSDataset(tmp_path, "dev")


def test_graph_batch_equals_collated_graphs():
    scenarios = [random_scenario(kind, seed) for kind in KINDS for seed in range(3)]
    direct = graph_batch(scenarios)
    collated = Batch.from_data_list([scenario_graph(s) for s in scenarios])
    for key in direct.node_types + direct.edge_types:
        for attr, value in direct[key].items():
            assert torch.equal(value, collated[key][attr]), (key, attr)
    assert sorted(direct.node_types) == sorted(collated.node_types)


@pytest.mark.parametrize("rho", [1e-6, 0.3, 0.9, 1.0, 1.0 + 1e-8, 1.7, 40.0])
@pytest.mark.parametrize("k", [1, 4, 25, 400])
def test_mm1k_matches_the_exact_queue(rho, k):
    from chainnet.queueing.exact import mm1k as exact

    blocking, number = mm1k(torch.tensor([rho], dtype=torch.float64), torch.tensor([float(k)]))
    ref = exact(rho, 1.0, k)
    assert float(blocking) == pytest.approx(ref.loss_ratio, rel=1e-5, abs=1e-300)
    assert float(number) == pytest.approx(ref.mean_jobs, rel=1e-5)


def test_queueing_prior_is_exact_for_one_exponential_station():
    """One M/M/1/K station: the prior's throughput and response ratios are the exact ones."""
    from chainnet.queueing.exact import mm1k as exact

    sc = Scenario(
        [Device("a", capacity=5, speed=1.0)],
        [ServiceChain("x", 0.8, [Stage("a", 1.0, distribution="exp")])],
    )
    loads = load_features(scenario_graph(sc))
    ref = exact(0.8, 1.0, 5)
    assert float(loads["prior"][0, 0]) == pytest.approx(1 - ref.loss_ratio, rel=1e-5)
    assert float(loads["prior"][0, 1]) == pytest.approx(1.0 / ref.response_time, rel=1e-5)
    # a network that outputs no correction predicts the prior
    out = chain_outputs(torch.zeros(1, 2), loads)
    assert out[0].tolist() == pytest.approx(loads["prior"][0].tolist(), rel=1e-5)


def test_response_ratio_can_exceed_one_with_early_exits():
    """With exits, sum of all service times / response time may exceed 1: the cap allows it."""
    sc = Scenario(
        [Device("a", capacity=50, speed=1.0), Device("b", capacity=50, speed=1.0)],
        [ServiceChain("x", 0.01, [Stage("a", 1.0, exit_prob=0.8), Stage("b", 4.0)])],
    )
    loads = load_features(scenario_graph(sc))
    assert float(loads["cap"][0]) == pytest.approx(5.0 / (1.0 + 0.2 * 4.0))
    assert float(loads["prior"][0, 1]) > 2.5  # nearly idle: close to the cap
    out = chain_outputs(torch.full((1, 2), 3.0), loads)
    assert 1.0 < float(out[0, 1]) < float(loads["cap"][0])


def test_queueing_prior_holds_as_many_jobs_as_memory_allows():
    """Capacity 10 but memory for 4 jobs of 25: the prior is the M/M/1/4 queue."""
    from chainnet.queueing.exact import mm1k as exact

    sc = Scenario(
        [Device("a", capacity=10, speed=1.0, memory=100.0)],
        [ServiceChain("x", 0.9, [Stage("a", 1.0, distribution="exp", job_memory=25.0)])],
    )
    loads = load_features(scenario_graph(sc))
    assert float(loads["prior"][0, 0]) == pytest.approx(1 - exact(0.9, 1.0, 4).loss_ratio, rel=1e-5)


@pytest.mark.parametrize("rho", [0.3, 1.0, 1.7, 40.0])
@pytest.mark.parametrize(("share", "capacity", "k"), [(0.0, 4, 4), (0.25, 10, 4), (0.3, 10, 3)])
def test_memory_admission_of_one_job_size_is_mm1k(rho, share, capacity, k):
    """One job size (or none): the chain is the M/M/1/K queue, K the jobs that fit."""
    refused, number = memory_admission(
        torch.tensor([rho], dtype=torch.float64),
        torch.tensor([0.2, 0.7], dtype=torch.float64),
        torch.tensor([share, share], dtype=torch.float64),
        (torch.full((2,), share, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)),
        torch.tensor([float(capacity)], dtype=torch.float64),
        torch.tensor([0, 0]),
    )
    blocking, mean = mm1k(torch.tensor([rho], dtype=torch.float64), torch.tensor([float(k)]))
    assert refused.tolist() == pytest.approx([float(blocking)] * 2, rel=1e-9)
    assert float(number) == pytest.approx(float(mean), rel=1e-9)


def test_large_jobs_are_refused_before_small_ones():
    """Jobs of 60 and of 10 on a device of memory 100 and capacity 10: the prior refuses the large
    ones far more often than the small ones, and the device is the chain of `memory_admission`."""
    sc = Scenario(
        [
            Device("a", capacity=10, speed=1.0, memory=100.0, discipline="ps"),  # insensitive
            Device("b", capacity=10, speed=1.0, discipline="ps"),
        ],
        [
            ServiceChain("large", 0.3, [Stage("a", 1.0, job_memory=60.0)]),
            ServiceChain("small", 0.6, [Stage("a", 1.0, job_memory=10.0), Stage("b", 1.0)]),
        ],
    )
    loads = load_features(scenario_graph(sc))
    # the residents' shares, load-weighted: a third of 0.6, two thirds of 0.1
    mean = (0.3 * 0.6 + 0.6 * 0.1) / 0.9
    variance = (0.3 * 0.36 + 0.6 * 0.01) / 0.9 - mean**2
    refused, number = birth_death(0.9, [0.3, 0.6], [0.6, 0.1], 10, mean, variance)
    blocking = loads["fragment"][:, FRAGMENT_LOAD.index("blocking")]
    assert blocking[:2].tolist() == pytest.approx(refused, rel=1e-5)
    assert refused[0] > 3 * refused[1]
    b, _ = mm1k(torch.tensor([0.6]), torch.tensor([10.0]))  # b alone: nominal load, one class
    assert float(blocking[2]) == pytest.approx(float(b), rel=1e-5)
    assert float(loads["prior"][0, 0]) == pytest.approx(1 - refused[0], rel=1e-5)
    assert loads["prior"][0, 0] < loads["prior"][1, 0]
    # the device's blocking is the arrival-weighted mean of its classes'
    device = loads["device"][0, DEVICE_LOAD.index("blocking")]
    assert float(device) == pytest.approx((0.3 * refused[0] + 0.6 * refused[1]) / 0.9, rel=1e-5)
    fill = loads["device"][0, DEVICE_LOAD.index("fill")]
    assert float(fill) == pytest.approx(number / 10, rel=1e-5)  # mean number / the capacity


def test_a_region_memory_limits_the_devices_within_it():
    """A device without memory of its own, in a region of memory 100: jobs of 25 fit 4 at a time,
    so the prior is the M/M/1/4 queue, as on a device of memory 100."""
    sc = Scenario(
        [Device("a", capacity=10, speed=1.0), Device("b", capacity=10, speed=1.0)],
        [ServiceChain("x", 0.9, [Stage("a", 1.0, distribution="exp", job_memory=25.0)])],
        regions=[Region("r", ("a", "b"), memory=100.0)],
    )
    loads = load_features(scenario_graph(sc))
    assert float(loads["prior"][0, 0]) == pytest.approx(
        1 - exact_mm1k(0.9, 1.0, 4).loss_ratio, rel=1e-5
    )


@pytest.mark.parametrize(("distribution", "scv"), [("det", 0.0), ("general", 4.0)])
def test_general_service_on_fcfs_is_macgregor_smith(distribution, scv):
    """One overloaded FCFS station: the prior's loss is MacGregor Smith's M/G/1/K loss (less than
    M/M/1/K's for deterministic service, more for scv 4); on PS, insensitive, it is M/M/1/K."""

    def prior_loss(discipline):
        sc = Scenario(
            [Device("a", capacity=5, speed=1.0, discipline=discipline)],
            [ServiceChain("x", 1.5, [Stage("a", 1.0, distribution=distribution, scv=scv or None)])],
        )
        return 1.0 - float(load_features(scenario_graph(sc))["prior"][0, 0])

    assert prior_loss("fcfs") == pytest.approx(macgregor_smith_loss(1.5, 5, scv), rel=1e-5)
    assert prior_loss("ps") == pytest.approx(exact_mm1k(1.5, 1.0, 5).loss_ratio, rel=1e-5)
    assert (prior_loss("fcfs") < prior_loss("ps")) == (scv < 1)


def test_a_mix_of_service_times_on_fcfs_refuses_more():
    """Exponential jobs of means 1 and 0.1 on one FCFS device at load 1: their mix has scv 5.05,
    so the prior is M/M/1/K at the size (K + a) / (1 + a), a = sqrt(rho) (scv - 1) / 2, above
    M/M/1/K's loss; damped by rho below load 1 (`service_stretch`)."""
    for rate, damping in ((0.5, 1.0), (0.25, 0.5)):  # load 1, then 0.5
        sc = Scenario(
            [Device("a", capacity=6, speed=1.0)],
            [
                ServiceChain("slow", rate, [Stage("a", 1.0, distribution="exp")]),
                ServiceChain("fast", 10 * rate, [Stage("a", 0.1, distribution="exp")]),
            ],
        )
        rho = 2 * rate
        first, second = (
            (rate * 1.0 + 10 * rate * 0.1) / (11 * rate),
            (rate * 2.0 + 10 * rate * 2 * 0.01) / (11 * rate),
        )
        a = math.sqrt(rho) * (second / first**2 - 2.0) / 2.0 * damping
        want, _ = mm1k(torch.tensor([rho]), torch.tensor([(6.0 + a) / (1.0 + a)]))
        plain, _ = mm1k(torch.tensor([rho]), torch.tensor([6.0]))
        prior = load_features(scenario_graph(sc))["prior"][:, 0]
        assert (1.0 - prior).tolist() == pytest.approx([float(want)] * 2, rel=1e-5)
        assert float(want) > 1.5 * float(plain)


def test_service_variability_scales_every_jobs_odds_of_refusal_alike():
    """Jobs of 60 and of 10 on a device of memory 100, service of scv 4: on FCFS every job's odds
    of refusal are those on PS (memory admission alone) times one factor above 1."""

    def blocking(discipline):
        sc = Scenario(
            [Device("a", capacity=10, speed=1.0, memory=100.0, discipline=discipline)],
            [
                ServiceChain(name, rate, [Stage("a", 1.0, "general", scv=4.0, job_memory=job)])
                for name, rate, job in (("large", 0.4, 60.0), ("small", 0.8, 10.0))
            ],
        )
        b = load_features(scenario_graph(sc))["fragment"][:, FRAGMENT_LOAD.index("blocking")]
        return b.double() / (1.0 - b.double())

    factor = blocking("fcfs") / blocking("ps")
    assert float(factor[0]) == pytest.approx(float(factor[1]), rel=1e-4) and factor[0] > 1.2
