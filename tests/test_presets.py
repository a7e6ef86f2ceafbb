"""Scenario presets: dsn24 reproduces the published ChainNet distribution; the others are valid."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests_helpers import FAST_ARGS, PUBLISHED, run_command

from chainnet.dataset.published import read_chainnet_split
from chainnet.dataset.store import read_table
from chainnet.sim import SimulatorSettings, simulate
from datagen.__main__ import main as datagen_main
from datagen.generate import sample_seeds
from datagen.presets import make_sampler

ROOT = Path(__file__).resolve().parents[1]
SPLIT = PUBLISHED


def preset(name):
    return yaml.safe_load((ROOT / f"conf/scenario/{name}.yaml").read_text())


def draw(name, n, seed=0):
    sampler = make_sampler(preset(name))
    return [sampler(np.random.default_rng(sample_seeds(seed, i)[0])) for i in range(n)]


def pmf(values) -> dict:
    c = Counter(values)
    total = sum(c.values())
    return {k: v / total for k, v in c.items()}


def max_gap(a: dict, b: dict) -> float:
    return max(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def marginals(scenarios) -> dict:
    return {
        "devices": pmf(len(s.devices) for s in scenarios),
        "chains": pmf(len(s.chains) for s in scenarios),
        "length": pmf(len(c.stages) for s in scenarios for c in s.chains),
        "capacity": pmf(min(d.capacity // 5, 9) for s in scenarios for d in s.devices),
        "load": pmf(
            min(int(x / 0.25), 8) for s in scenarios for x in s.offered_loads()
        ),  # per-device offered load in bands of 0.25, above 2 together
    }


needs_data = pytest.mark.published


@pytest.fixture(scope="module")
def published():
    return [s.scenario for s in read_chainnet_split(SPLIT)]


@needs_data
def test_dsn24_inputs_match_the_published_marginals(published):
    ours, theirs = marginals(draw("dsn24", 10_000)), marginals(published)
    for key in theirs:
        assert max_gap(ours[key], theirs[key]) < 0.02, (key, ours[key], theirs[key])


@needs_data
def test_the_marginals_comparison_can_tell_another_distribution(published):
    other = preset("dsn24") | {"device_pool": 20}
    sampler = make_sampler(other)
    ours = marginals([sampler(np.random.default_rng(i)) for i in range(3000)])
    assert max_gap(ours["devices"], marginals(published)["devices"]) > 0.05


def loss_shares(scenarios, seed=0) -> dict:
    settings = SimulatorSettings(precision=0.05, max_arrivals=30_000, warmup_arrivals=2000)
    loss = np.array(
        [
            c["loss_ratio"]
            for i, s in enumerate(scenarios)
            for c in simulate(s, sample_seeds(seed, i)[1], settings).chains
        ]
    )
    return {t: float((loss > t).mean()) for t in (0.01, 0.10, 0.50)}


def _published_shares() -> dict:
    loss = 1.0 - np.array([float(x) for x in (SPLIT / "raw/tputRatio.txt").read_text().split()])
    return {t: float((loss > t).mean()) for t in (0.01, 0.10, 0.50)}


@needs_data
def test_dsn24_loss_shares_match_the_published_set():
    ours, theirs = loss_shares(draw("dsn24", 150)), _published_shares()
    for t in theirs:  # ~300 chains: standard error ~2.7 points
        assert abs(ours[t] - theirs[t]) < 0.08, (t, ours, theirs)


@needs_data
@pytest.mark.slow
def test_dsn24_loss_shares_match_the_published_set_closely():
    ours, theirs = loss_shares(draw("dsn24", 1000, seed=1)), _published_shares()
    for t in theirs:  # ~2000 chains: standard error ~1 point
        assert abs(ours[t] - theirs[t]) < 0.035, (t, ours, theirs)


def test_dsn24_large_is_larger_and_keeps_the_placement_rules():
    scenarios = draw("dsn24_large", 300)
    n = [len(s.devices) for s in scenarios]
    assert max(n) > 45 and np.mean(n) > 20
    assert max(len(s.chains) for s in scenarios) == 12
    for s in scenarios:
        used = {st.device for c in s.chains for st in c.stages}
        assert used == {d.name for d in s.devices}  # every device used
        for c in s.chains:
            assert len({st.device for st in c.stages}) == len(c.stages) <= 12
        assert all(1 <= d.capacity <= 100 for d in s.devices)


def test_edge_has_heterogeneity_memory_exits_and_regions():
    scenarios = draw("edge", 300)
    stages = [st for s in scenarios for c in s.chains for st in c.stages]
    assert {st.distribution for st in stages} == {"exp", "general"}
    assert any(st.exit_prob > 0 for st in stages)
    assert all(st.job_memory > 0 for st in stages)
    assert sum(bool(s.regions) for s in scenarios) > 100
    assert {d.discipline for s in scenarios for d in s.devices} == {"fcfs", "ps"}
    speeds = [d.speed for s in scenarios for d in s.devices]
    assert max(speeds) / min(speeds) > 10
    for s in scenarios:
        for c in s.chains:
            acc = [st.exit_accuracy for st in c.stages]
            assert acc == sorted(acc)  # deeper exits are at least as accurate


def test_edge_large_has_the_stated_sizes_and_the_edge_features():
    scenarios = draw("edge_large", 100)
    devices = [len(s.devices) for s in scenarios]
    chains = [len(s.chains) for s in scenarios]
    lengths = [len(c.stages) for s in scenarios for c in s.chains]
    assert min(devices) >= 20 and max(devices) <= 40 and max(devices) - min(devices) > 12
    assert (min(chains), max(chains)) == (6, 12)
    assert (min(lengths), max(lengths)) == (3, 8)
    stages = [st for s in scenarios for c in s.chains for st in c.stages]
    assert {st.distribution for st in stages} == {"exp", "general"}
    assert 0.3 < np.mean([st.exit_prob > 0 for st in stages]) < 0.6
    assert all(2 <= len(s.regions) <= 6 for s in scenarios)
    assert {d.discipline for s in scenarios for d in s.devices} == {"fcfs", "ps"}
    speeds = [d.speed for s in scenarios for d in s.devices]
    assert max(speeds) / min(speeds) > 10


@pytest.mark.filterwarnings("ignore::chainnet.parsing.ScenarioWarning")  # jobs a region can't hold
def test_edge_large_samples_simulate():
    settings = SimulatorSettings(precision=0.1, max_arrivals=15_000, warmup_arrivals=1000)
    for i, s in enumerate(draw("edge_large", 3, seed=5)):
        result = simulate(s, sample_seeds(5, i)[1], settings)
        assert len(result.chains) == len(s.chains) and result.arrivals > 0
        assert all(0.0 <= c["loss_ratio"] <= 1.0 for c in result.chains)


def test_datagen_generates_an_edge_large_dataset(tmp_path, monkeypatch, capsys):
    args = [f"out={tmp_path / 'el'}", f"hydra.run.dir={tmp_path / 'run'}", "workers=1"]
    args += ["n=2", "scenario=edge_large", *FAST_ARGS]
    code, _, err = run_command(datagen_main, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    samples = read_table(tmp_path / "el", "samples")
    assert len(samples) == 2 and samples["n_devices"].between(20, 40).all()
