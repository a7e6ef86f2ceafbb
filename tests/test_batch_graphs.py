"""The fast path from genes to predictions (`chainnet.optim.batch_graphs`): the same graph, limits,
predictions and search as decoding every candidate to a scenario."""

import numpy as np
import pandas as pd
import pytest
import torch
from tests_helpers import ROOT

from chainnet.learn.features import DEVICE_STATIC, graph_batch
from chainnet.learn.models.chainnet import ChainNet
from chainnet.learn.models.mlp import ChainMLP
from chainnet.learn.surrogate import Surrogate, physical_limits
from chainnet.learn.tally import RangeTally
from chainnet.optim.batch_graphs import CandidateGraphs, predict_candidates
from chainnet.optim.generators import random_problem
from chainnet.optim.objective import objective_value
from chainnet.optim.problem import ExitOption, Fragment, HostDevice, Problem, Service
from chainnet.optim.scorers import QOS, Score, SurrogateScorer
from chainnet.optim.search import run_search
from chainnet.optim.space import SearchSpace


def candidates(space: SearchSpace, n: int, seed: int) -> np.ndarray:
    """`n` feasible candidates: random draws and short walks of single moves."""
    rng = np.random.default_rng(seed)
    out, c = [], space.random_candidate(rng)
    while len(out) < n:
        c = space.neighbour(c, rng) if rng.random() < 0.7 else space.random_candidate(rng)
        out.append(c)
    return np.array(out)


def medium(seed: int, objective: str = "min_loss") -> SearchSpace:
    rng = np.random.default_rng(seed)
    return SearchSpace(random_problem(rng, (4, 8), (2, 4), (2, 4), 0.5, objective, f"m{seed}"))


def spare_devices() -> SearchSpace:
    """Six devices, three fragments: most devices host nothing; some have no RAM limit, and one
    fragment holds no job memory."""
    devices = (
        HostDevice("gw", 1.0, 4, ram=900.0),
        HostDevice("a", 2.0, 8, ram=None, discipline="ps"),
        HostDevice("b", 0.5, 3, ram=700.0),
        HostDevice("c", 4.0, 20, ram=None),
        HostDevice("d", 1.5, 1, ram=5000.0, discipline="ps"),
        HostDevice("e", 3.0, 6, ram=2000.0),
    )
    frags = (
        Fragment("f0", 0.2, memory=300.0, job_memory=0.0, distribution="exp"),
        Fragment(
            "f1", 0.7, memory=400.0, job_memory=120.0, distribution="general", scv=2.5,
            exit=(ExitOption(0.8, 0.25, None), ExitOption(0.6, 0.6, 0.7)),
        ),
        Fragment("f2", 1.1, memory=250.0, job_memory=90.0, accuracy=0.9),
    )  # fmt: skip
    return SearchSpace(Problem(devices, (Service("s", 0.9, frags, gateway="gw"),)))


def extreme(rate: float, work: float) -> SearchSpace:
    """A rate outside [TINY, HUGE], or service times outside it on some devices only."""
    devices = (HostDevice("slow", 0.05, 5), HostDevice("one", 1.0, 5), HostDevice("fast", 4.0, 5))
    frags = (Fragment("a", work), Fragment("b", 2 * work, distribution="exp"))
    return SearchSpace(Problem(devices, (Service("s", rate, frags), Service("t", 1.0, frags))))


def mixed() -> SearchSpace:
    """The small example's services (exit tables) beside a service written with the digits
    profile (one threshold-vector gene for all its fragments), every measured vector a choice."""
    d = Problem.load(ROOT / "examples/problem_small.yaml").to_dict()
    profile = {"path": "profiles/digits.yaml", "flops_per_work": 2e5, "bytes_per_memory": 100}
    profile |= {"vectors": "all", "distribution": "exp"}
    d["services"].insert(1, {"name": "digits", "arrival_rate": 0.7, "profile": profile})
    return SearchSpace(Problem.from_dict(d, base=ROOT / "examples"))


SPACES = {
    "example": lambda: SearchSpace(Problem.load(ROOT / "examples/problem_small.yaml")),
    "digits": lambda: SearchSpace(Problem.load(ROOT / "examples/problem_digits.yaml")),
    "mixed": mixed,
    "medium_loss": lambda: medium(3),
    "medium_accuracy": lambda: medium(4, "max_accuracy"),
    "medium_search": lambda: medium(11),
    "spare_devices": spare_devices,
    "huge_rate": lambda: extreme(1e40, 0.5),
    "tiny_service": lambda: extreme(2.0, 2e-30),  # under TINY on the fast device only
    "huge_service": lambda: extreme(2.0, 1e29),  # over HUGE on the slow device only
}


def assert_same_graph(fast, slow) -> None:
    assert fast.node_types == slow.node_types and fast.edge_types == slow.edge_types
    for key in fast.node_types + fast.edge_types:
        a, b = fast[key], slow[key]
        names = sorted(b.keys())
        assert sorted(a.keys()) == names, key
        for name in names:
            x, y = a[name], b[name]
            assert x.dtype == y.dtype and x.shape == y.shape, (key, name)
            # bit for bit, NaN where the other has NaN
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=f"{key} {name}")


@pytest.mark.parametrize("kind", SPACES)
def test_the_graph_of_the_genes_is_the_graph_of_the_decoded_scenarios(kind):
    space = SPACES[kind]()
    assert_fast_path_is_decoding(space, candidates(space, 40, seed=1))


def assert_fast_path_is_decoding(space, genes) -> list:
    """The fast path's graph and limits of `genes` are bit for bit those of the decoded
    scenarios (returned)."""
    scenarios = [space.scenario(c) for c in genes]
    fast, limits = CandidateGraphs(space).build(genes)
    assert_same_graph(fast, graph_batch(scenarios))
    slow = physical_limits(scenarios)
    for name in ("rate", "service", "throughput", "never", "admits"):
        np.testing.assert_array_equal(getattr(limits, name), getattr(slow, name), err_msg=name)
    return scenarios


def test_the_special_cases_are_really_exercised():
    """The spaces above reach what they are meant to test."""
    space = spare_devices()
    g, _ = CandidateGraphs(space).build(candidates(space, 20, seed=1))
    hosted = g["device"].x[:, 1]
    assert (hosted == 0).any() and (hosted > 0).any()  # devices with and without fragments
    memory_limited = g["device"].x[:, 3]
    assert (memory_limited == 0).any() and (memory_limited == 1).any()
    fill = g["device"].x[:, DEVICE_STATIC.index("memory_load")]
    assert (fill[memory_limited == 1] > 0).any() and (fill[memory_limited == 0] == 0).all()
    assert torch.isnan(g["fragment"].accuracy).any()  # an exit row without accuracy
    for kind in ("huge_rate", "tiny_service", "huge_service"):
        space = SPACES[kind]()
        genes = candidates(space, 30, seed=2)
        graphs = CandidateGraphs(space)
        rate = graphs.build(genes)[0]["fragment"].rate.view(len(genes), -1)
        nominal = torch.tensor(graphs.frag_rate, dtype=torch.float32)
        rescaled = (rate != nominal).any(1)  # its rates in another time unit
        if kind == "huge_rate":
            assert rescaled.all()
        else:  # only where a fragment's service time leaves [TINY, HUGE]
            assert rescaled.any() and not rescaled.all(), kind


def test_threshold_vectors_really_set_whole_services():
    """The profile spaces reach what they are meant to test: a vector gene sets all four stages
    of its service, jobs all leaving at one exit (probability 1) in some candidates, and the
    exit tables of the other services still decoded row by row."""
    space = SPACES["mixed"]()
    genes = candidates(space, 60, seed=5)
    assert [e.fragment for e in space.exit_genes] == [0, None]  # classify/stem; digits
    assert len(set(genes[:, -1])) > 20  # many of the 512 vectors drawn
    g, _ = CandidateGraphs(space).build(genes)
    exit_prob = g["fragment"].exit_prob.view(len(genes), -1)
    digits = exit_prob[:, 3:7]  # after classify's three fragments
    assert (digits == 1).any() and (digits[:, 3] == 0).all()
    vectors = space.problem.services[1].exit_vectors
    expected = torch.tensor([vectors[v].exit_prob for v in genes[:, -1]], dtype=torch.float32)
    torch.testing.assert_close(digits, expected, rtol=0, atol=0)
    stem = space.problem.services[0].fragments[0].exit
    expected = torch.tensor([stem[r].exit_prob for r in genes[:, -2]], dtype=torch.float32)
    torch.testing.assert_close(exit_prob[:, 0], expected, rtol=0, atol=0)


def test_wrong_genes_are_refused_in_one_line():
    space = SPACES["example"]()
    graphs = CandidateGraphs(space)
    good = candidates(space, 3, seed=0)
    width = len(space.domains)
    bad_domain = good.copy()
    bad_domain[1, 2] = 9
    negative = good.copy()
    negative[0, 4] = -1
    crowded = np.array([[0, 0, 0, 0, 0, 0]])  # 2,100 MB of weights on a 1,024 MB gateway
    cases = [
        (good[0], rf"genes: expected an integer matrix \[n >= 1, {width}\], got shape \(6,\)"),
        (good[:, :4], r"got shape \(3, 4\)"),
        (np.zeros((0, width), dtype=int), r"got shape \(0, 6\)"),
        (good.astype(float), "genes: expected integers, got dtype float64"),
        (good.astype(bool), "genes: expected integers, got dtype bool"),
        ([[0, 1], [0, 1, 2]], "genes: candidates of different lengths"),
        (bad_domain, r"genes: candidate 1, gene 2 is 9; its domain is 0\.\.2"),
        (negative, r"genes: candidate 0, gene 4 is -1; its domain is 0\.\.2"),
        (crowded, "genes: candidate 0 does not fit the RAM of device 'gateway'"),
    ]
    for genes, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            graphs.build(genes)
        assert "\n" not in str(err.value)


def untrained(net_class, kw: dict) -> Surrogate:
    torch.manual_seed(0)
    return Surrogate(net_class(**kw))


def reference(space: SearchSpace, surrogate: Surrogate, genes) -> tuple[dict, list[Score]]:
    """What the scorer did before the fast path: decode, `predict_arrays`, then the objective."""
    arrays = surrogate.predict_arrays([space.scenario(c) for c in genes])
    n = len(space.problem.services)
    loss = arrays["loss_ratio"].reshape(-1, n)
    acc = arrays["accuracy"].reshape(-1, n)
    return arrays, [Score(*objective_value(space.problem, lo, ac)) for lo, ac in zip(loss, acc)]


@pytest.mark.parametrize(
    "net", [(ChainNet, {"hidden": 8, "rounds": 1}), (ChainMLP, {"hidden": 8})], ids=["gnn", "mlp"]
)
@pytest.mark.parametrize(
    "kind", ["example", "digits", "mixed", "medium_accuracy", "spare_devices", "huge_rate"]
)
def test_predictions_are_those_of_the_decoded_scenarios(kind, net):
    """The MLP has no per-stage output: the queueing prior's pass probabilities are used."""
    space = SPACES[kind]()
    surrogate = untrained(*net)
    genes = candidates(space, 30, seed=3)
    timings: dict[str, float] = {}
    fast = predict_candidates(surrogate, CandidateGraphs(space), genes, timings)
    slow, _ = reference(space, surrogate, genes)
    assert sorted(fast) == sorted(slow)
    for key in slow:
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)
    assert np.isnan(fast["out_of_range"]).all()  # no training ranges: unknown
    assert set(timings) == {"graph", "surrogate"} and min(timings.values()) > 0
    first = dict(timings)
    predict_candidates(surrogate, CandidateGraphs(space), genes, timings)  # adds up
    assert timings["surrogate"] > first["surrogate"] and len(timings) == 2


def test_the_scorer_scores_as_decoding_did(tiny_checkpoint):
    """A trained model, whose training ranges (dsn24) these edge candidates leave: the same
    objectives, QoS, flags and tally."""
    surrogate = Surrogate.load(tiny_checkpoint)
    space = SPACES["medium_accuracy"]()
    genes = list(candidates(space, 50, seed=4))
    scorer = SurrogateScorer(space, surrogate)
    fast = scorer.score(genes)
    slow_arrays, slow = reference(space, surrogate, genes)
    for a, b in zip(fast, slow):
        assert a.services is None
        np.testing.assert_allclose(
            [a.objective, a.loss, a.accuracy], [b.objective, b.loss, b.accuracy], rtol=0, atol=1e-6
        )
    tally = RangeTally()
    tally.add(
        slow_arrays["out_of_range"],
        slow_arrays["out_of_range_why"],
        per_item=len(space.problem.services),
    )
    assert tally.flagged > 0
    assert vars(scorer.tally) == vars(tally)
    kept = scorer.score(genes[:5], keep=True)
    n = len(space.problem.services)
    for i, s in enumerate(kept):
        expected = pd.DataFrame(
            {"service": [sv.name for sv in space.problem.services]}
            | {k: slow_arrays[k][i * n : (i + 1) * n] for k in QOS}
        )
        pd.testing.assert_frame_equal(s.services, expected)
    assert scorer.tally.items == 50  # the final rescoring is not counted twice
    assert scorer.score([]) == []
    assert min(scorer.timings.values()) > 0


class DecodingScorer:
    """The surrogate scorer as it was: every candidate decoded to a scenario."""

    name, chunk = "surrogate", 10**9

    def __init__(self, space, surrogate):
        self.space, self.surrogate = space, surrogate

    def score(self, cands, keep=False, deadline=None):
        return reference(self.space, self.surrogate, cands)[1]


@pytest.mark.parametrize("strategy", ["anneal", "genetic"])
def test_a_search_finds_the_same_as_with_decoded_scenarios(tiny_checkpoint, strategy):
    surrogate = Surrogate.load(tiny_checkpoint)
    space = SPACES["medium_search"]()
    runs = [
        run_search(space, scorer, strategy, None, budget_evals=400, seed=7, batch_size=64)
        for scorer in (SurrogateScorer(space, surrogate), DecodingScorer(space, surrogate))
    ]
    fast, slow = (r.scored for r in runs)
    assert list(fast) == list(slow)  # the same candidates, in the same order
    np.testing.assert_allclose(
        [s.objective for _, s in fast.values()],
        [s.objective for _, s in slow.values()],
        rtol=0,
        atol=1e-6,
    )
    (best_fast, _), (best_slow, _) = runs[0].top(1)[0], runs[1].top(1)[0]
    np.testing.assert_array_equal(best_fast, best_slow)
