"""The arrival cap bounds every run, warm-up included, and a time budget bounds one simulation."""

import time

import pytest
from tests_helpers import ROOT

from chainnet.optim.problem import Problem
from chainnet.optim.scorers import SimulatorScorer
from chainnet.optim.search import run_search
from chainnet.optim.space import SearchSpace
from chainnet.scenario import Device, Scenario, ServiceChain, Stage
from chainnet.sim import SimulatorSettings, make_engine, simulate


def flooded(rate: float) -> Scenario:
    """A chain fed far beyond its capacity (about 2 jobs per time unit)."""
    return Scenario(
        [Device("a", capacity=5), Device("b", capacity=5, speed=2.0)],
        [ServiceChain("c", rate, [Stage("a", 0.5), Stage("b", 1.0, "exp")])],
    )


@pytest.mark.parametrize("engine", ["fast", "simpy"])
@pytest.mark.parametrize("rate", [1e6, 1e9])
def test_the_cap_bounds_the_warm_up(rate, engine):
    settings = SimulatorSettings(max_arrivals=20_000)
    res = simulate(flooded(rate), 0, settings, engine=engine)
    assert res.arrivals <= 1.05 * settings.max_arrivals  # not the 7.5M of a 10 s warm-up
    assert res.stop_reason == "arrival_cap_in_warmup"
    assert res.chain_frame()["throughput"].iloc[0] < 2.5  # the capacity, not the arrival rate


def test_an_ordinary_run_keeps_its_full_warm_up():
    sc = flooded(0.5)
    res = simulate(sc, 0, SimulatorSettings(precision=0.05))
    assert res.stop_reason == "precision"
    assert res.warmup_time == pytest.approx(max(5_000 / 0.5, 10 * 1.0))


def test_a_deadline_stops_a_simulation_between_batches():
    settings = SimulatorSettings(precision=1e-9, max_arrivals=10**9)  # would run for hours
    res = make_engine(flooded(1.0), 0, settings).run(deadline=time.perf_counter())
    assert res.stop_reason == "deadline"
    assert res.arrivals < 10**6


def test_the_time_budget_holds_within_one_simulation():
    """A simulation that would outlast the budget is cut at the budget and not scored."""
    space = SearchSpace(Problem.load(ROOT / "examples/problem_small.yaml"))
    endless = SimulatorSettings(precision=1e-9, max_arrivals=10**9)
    scorer = SimulatorScorer(space, endless, "fast", seed=0)
    result = run_search(space, scorer, "random", budget_s=0.5, seed=0)
    assert result.stopped_by == "budget_s"
    assert result.scored == {}  # the cut simulation gave no (noisy) score
