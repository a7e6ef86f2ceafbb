"""The SimPy engine and the independent oracle give the same outcome for every job."""

import pytest
from tests_helpers import KINDS, random_scenario

from chainnet.sim import SimPyEngine
from chainnet.sim.oracle import run_oracle


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_engines_give_the_same_outcome_for_every_job(kind, seed):
    sc = random_scenario(kind, seed)
    horizon = 1500.0 / sum(c.arrival_rate for c in sc.chains)
    ours = sorted(SimPyEngine(sc, seed, trace=True, debug=True).run_until(horizon))
    oracle = run_oracle(sc, seed, horizon)
    theirs = sorted(oracle.trace)
    assert len(ours) == len(theirs) > 500
    for a, b in zip(ours, theirs):
        assert a[:4] == b[:4] and close(a[1], b[1]) and close(a[4], b[4]), (a, b)
    for c in range(len(sc.chains)):
        assert oracle.arrived[c] == oracle.completed[c] + oracle.dropped[c] + oracle.in_system[c]


@pytest.mark.parametrize(
    "kind, needed",
    [
        ("dsn24", {"complete", "drop"}),
        ("mixed_memory_regions", {"complete", "drop", "exit"}),
        ("exits", {"complete", "exit"}),
    ],
)
def test_the_random_scenarios_exercise_every_path(kind, needed):
    """Guards the test above: its scenarios do drop and exit jobs, so agreement covers them."""
    seen = set()
    for seed in range(4):
        sc = random_scenario(kind, seed)
        seen |= {row[2] for row in SimPyEngine(sc, seed, trace=True).run_until(200.0)}
    assert needed <= seen


def test_engines_agree_on_the_event_count():
    sc = random_scenario("mixed_memory_regions", 7)
    eng = SimPyEngine(sc, 7)
    eng.run_until(2000.0)
    assert eng.events == run_oracle(sc, 7, 2000.0).events > 1000


def test_a_different_seed_changes_the_outcomes():
    sc = random_scenario("dsn24", 1)
    a = SimPyEngine(sc, 1, trace=True).run_until(300.0)
    b = SimPyEngine(sc, 2, trace=True).run_until(300.0)
    assert a != b
