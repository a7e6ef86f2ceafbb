"""Deployment problems and the search: decisions, memory, objectives, strategies, the CLI."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from tests_helpers import ROOT, run_command

import chainnet.optim.strategies as strategies
from chainnet.cli.optimize import main as optimize_main
from chainnet.optim.generators import random_problem
from chainnet.optim.objective import objective_value, objective_values
from chainnet.optim.problem import Problem
from chainnet.optim.report import json_safe
from chainnet.optim.scorers import Score, SimulatorScorer
from chainnet.optim.search import STALL_ROUNDS, confirm, run_search
from chainnet.optim.space import SearchSpace
from chainnet.optim.strategies import STRATEGIES, Greedy
from chainnet.scenario import Scenario, ScenarioError
from chainnet.sim import SimulatorSettings

EXAMPLE = ROOT / "examples/problem_small.yaml"


def example() -> SearchSpace:
    return SearchSpace(Problem.load(EXAMPLE))


def space_of(d: dict) -> SearchSpace:
    """Read and check a problem, then build its search space (which checks it can be deployed)."""
    return SearchSpace(Problem.from_dict(d))


def test_example_problem_reads_and_round_trips():
    space = example()
    p = space.problem
    assert [len(s.fragments) for s in p.services] == [3, 2]
    # gateways fix both first fragments; one exit with three thresholds
    assert space.domains.tolist() == [1, 3, 3, 1, 3, 3]
    assert Problem.from_dict(p.to_dict()).to_dict() == p.to_dict()
    assert Problem.from_dict(p.to_dict()) == p


def test_a_problem_and_its_space_cannot_go_stale():
    """The problem is frozen data; what the space derives from it is read-only."""
    space = example()
    with pytest.raises(dataclasses.FrozenInstanceError):
        space.problem.devices = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        space.problem.services[0].fragments[0].memory = 0.0
    assert isinstance(space.problem.services, tuple) and hash(space.problem)
    for name in ("domains", "ram", "weights", "job_memory", "fixed", "free"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(space, name)[0] = 0
    assert space.weights.tolist() == [200, 600, 300, 300, 700]  # per placement gene
    assert space.ram.tolist() == [1024, 2048, 2048]


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["devices"][0].update(speed=0), r"devices\[0\]\.speed"),
        (lambda d: d["devices"][0].update(colour="red"), r"devices\[0\]\.colour: .*unknown key"),
        (lambda d: d["services"][0].update(gateway="nowhere"), r"services\[0\]\.gateway"),
        (lambda d: d["services"][1]["fragments"][1].pop("accuracy"), "needs the final accuracy"),
        (
            lambda d: d["services"][1]["fragments"][1].update(exit=[{"exit_prob": 0.2}]),
            "last fragment cannot have an exit",
        ),
        (lambda d: d["services"][0]["fragments"][0].update(memory=10**6), "fits the devices' RAM"),
        (lambda d: d["objective"].update(kind="fastest"), r"objective\.kind"),
        (lambda d: d["objective"].pop("max_loss"), "loss target"),
        (
            lambda d: d["services"][0]["fragments"][1].update(distribution="weird"),
            r"services\[0\]\.fragments\[1\]\.distribution",  # named in the problem file
        ),
    ],
)
def test_bad_problems_say_what_and_where(edit, match):
    d = yaml.safe_load(EXAMPLE.read_text())
    edit(d)
    with pytest.raises(ScenarioError, match=match):
        space_of(d)


def test_memory_weights_use_ram_and_leave_the_rest_to_jobs():
    p = example()  # the search space
    # everything on box1 (2048 MB): stem is fixed on the gateway
    c = np.array([0, 1, 1, 0, 1, 1])
    weights, job = p.memory_use(c)
    assert weights.tolist() == [500.0, 1600.0, 0.0]
    assert p.feasible(c)
    sc = p.scenario(c)
    assert sc.devices[1].memory == pytest.approx(2048 - 1600)
    assert sc.devices[2].memory is None  # hosts nothing with job memory: no limit
    crowded = np.array([0, 2, 2, 0, 2, 2])  # 600 + 300 + 700 = 1600 on box2: fits
    assert p.feasible(crowded)
    gateway_full = np.array([0, 0, 0, 0, 0, 0])  # 2100 MB of weights on a 1024 MB gateway
    assert not p.feasible(gateway_full)


def test_random_moves_and_repair_stay_feasible():
    rng = np.random.default_rng(0)
    for i in range(15):
        p = SearchSpace(random_problem(rng, name=f"p{i}"))
        c = p.random_candidate(rng)
        for _ in range(30):
            c = p.neighbour(c, rng)
            assert p.feasible(c)
            Scenario.from_dict(p.scenario(c).to_dict())  # a valid scenario


def test_objectives():
    p = example().problem  # max_accuracy with loss under 0.05; rates 1.2 and 0.6
    obj, loss, acc = objective_value(p, np.array([0.0, 0.0]), np.array([0.9, 0.8]))
    assert loss == 0 and acc == pytest.approx((1.2 * 0.9 + 0.6 * 0.8) / 1.8) and obj == -acc
    obj, loss, acc = objective_value(p, np.array([0.15, 0.0]), np.array([0.9, 0.8]))
    assert loss == pytest.approx(0.1)  # 0.05 over the target: a penalty of 10 x 0.05
    assert acc == pytest.approx((1.02 * 0.9 + 0.6 * 0.8) / 1.62)  # weighted by throughput
    assert obj == pytest.approx(-acc + 0.5)
    d = p.to_dict()
    d["objective"] = {"kind": "min_loss"}
    q = Problem.from_dict(d)
    value = objective_value(q, np.array([0.3, 0.0]), np.array([np.nan] * 2))[0]
    assert value == pytest.approx(0.2)


def test_objectives_of_a_batch():
    """The scorer's batched objective, row by row against the definition, over rows where nothing
    is served (no accuracy), where one service has no accuracy, and the loss over target."""
    p = example().problem  # max_accuracy, loss under 0.05, penalty 10; rates 1.2 and 0.6
    rates = np.array([1.2, 0.6])
    rng = np.random.default_rng(0)
    loss = rng.uniform(0, 0.3, (50, 2))
    acc = rng.uniform(0.5, 1.0, (50, 2))
    loss[0] = 1.0  # nothing served
    acc[1, 0] = np.nan  # one service without an accuracy
    loss[2], acc[2] = 0.0, np.nan  # served, but no accuracy known
    obj, overall, accuracy = objective_values(p, loss, acc)
    for i in range(len(loss)):
        want_loss = float(rates @ loss[i]) / 1.8
        served = [(r * (1 - lo), a) for r, lo, a in zip(rates, loss[i], acc[i]) if a == a]
        served = [(w, a) for w, a in served if w > 0]
        want_acc = sum(w * a for w, a in served) / sum(w for w, _ in served) if served else np.nan
        over = 10 * max(0.0, want_loss - 0.05)
        assert overall[i] == pytest.approx(want_loss)
        assert accuracy[i] == pytest.approx(want_acc, nan_ok=True)
        assert obj[i] == pytest.approx((0.0 if served == [] else -want_acc) + over)
        # exactly the same value alone as in the batch: a search's choice cannot hang on its batch
        alone = objective_value(p, loss[i], acc[i])
        np.testing.assert_array_equal(alone, (obj[i], overall[i], accuracy[i]))
    assert obj[0] == pytest.approx(9.5) and np.isnan(accuracy[0])  # only the penalty
    assert obj[2] == 0.0 and np.isnan(accuracy[2])


class FakeScorer:
    """A known objective: the distance of the genes to a target (optimum 0 at the target)."""

    name = "surrogate"
    chunk = 10**9

    def __init__(self, problem, target):
        self.problem, self.target, self.calls = problem, target, 0

    def score(self, candidates, keep=False, deadline=None):
        self.calls += len(candidates)
        return [Score(float(np.abs(c - self.target).sum()), 0.0, np.nan) for c in candidates]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_finds_the_optimum_of_a_small_problem(strategy):
    p = example()
    target = np.array([0, 2, 1, 0, 2, 0])
    assert p.feasible(target)
    scorer = FakeScorer(p, target)
    res = run_search(p, scorer, strategy, budget_s=None, budget_evals=1000, seed=1, batch_size=8)
    best_c, best_s = res.top(1)[0]
    assert best_s.objective == 0 and np.array_equal(best_c, target)
    assert scorer.calls == len(res.scored)  # every candidate scored once
    assert res.history["best_objective"].is_monotonic_decreasing
    if strategy in ("random", "exhaustive", "greedy"):
        # the space (36 feasible candidates) is used up long before the budget: it stops there
        assert res.complete and len(res.scored) == len(list(p.enumerate_feasible()))
        assert res.stopped_by == "space"
    else:  # may re-propose what it scored: with no time limit, it stops when nothing is new
        assert res.stopped_by in ("space", "stall") and len(res.scored) <= 36


def big_space() -> SearchSpace:
    return SearchSpace(random_problem(np.random.default_rng(9), devices=(6, 6), fragments=(6, 6)))


@pytest.mark.parametrize("chunk", [1, 10**9])
@pytest.mark.parametrize("strategy", ["random", "greedy", "anneal", "genetic"])
def test_the_evaluation_budget_counts_candidates_scored(strategy, chunk):
    big = big_space()
    scorer = FakeScorer(big, np.zeros(len(big.domains), int))
    scorer.chunk = chunk  # like the simulator (1) or the surrogate (a whole batch)
    res = run_search(big, scorer, strategy, budget_s=None, budget_evals=10, batch_size=4)
    assert len(res.scored) == scorer.calls == 10  # the last batch cut short
    assert res.stopped_by == "budget_evals" and not res.complete
    assert res.history["scored"].iloc[-1] == 10
    # with both budgets, whichever runs out first: here the evaluations
    res = run_search(big, FakeScorer(big, 0), strategy, budget_s=3600, budget_evals=7, batch_size=4)
    assert len(res.scored) == 7 and res.stopped_by == "budget_evals"


def test_an_evaluation_budget_makes_a_search_reproducible():
    big = big_space()
    runs = [
        run_search(big, FakeScorer(big, 0), "anneal", None, budget_evals=200, seed=5, batch_size=8)
        for _ in range(2)
    ]
    assert list(runs[0].scored) == list(runs[1].scored)  # the same candidates, in order
    assert runs[0].history["best_objective"].tolist() == runs[1].history["best_objective"].tolist()


def test_the_time_budget_still_stops_a_search():
    big = big_space()  # 4.9e9 candidates: only the budget can stop the search
    res = run_search(big, FakeScorer(big, 0), "random", budget_s=0.1, batch_size=4)
    assert res.stopped_by == "budget_s" and not res.complete
    assert len(res.scored) < big.size / 1000  # well before the space is used up


def test_a_search_with_no_time_limit_stops_when_it_finds_nothing_new():
    p = example()
    scorer = FakeScorer(p, np.array([0, 2, 1, 0, 2, 0]))
    res = run_search(p, scorer, "genetic", None, budget_evals=10**6, seed=1, batch_size=8)
    assert res.stopped_by == "stall" and len(res.scored) < 36
    assert len(res.history) >= STALL_ROUNDS


def test_search_refuses_bad_settings():
    p = example()
    with pytest.raises(ValueError, match="strategy"):
        run_search(p, FakeScorer(p, 0), "tabu", budget_s=1)
    with pytest.raises(ValueError, match="budget_s"):
        run_search(p, FakeScorer(p, 0), "random", budget_s=0)
    for evals in (0, 2.5, True):
        with pytest.raises(ValueError, match="budget_evals"):
            run_search(p, FakeScorer(p, 0), "random", budget_s=1, budget_evals=evals)
    with pytest.raises(ValueError, match="budget_s, budget_evals or both"):
        run_search(p, FakeScorer(p, 0), "random", budget_s=None)
    with pytest.raises(ValueError, match="over the limit"):
        next(big_space().enumerate_feasible(limit=1000))


def test_confirm_simulates_the_top_candidates_afresh():
    p = example()
    settings = SimulatorSettings(precision=0.05, max_arrivals=20_000, warmup_arrivals=1000)
    sim = SimulatorScorer(p, settings, seed=3)
    res = run_search(p, sim, "exhaustive", budget_s=None, budget_evals=100, batch_size=8)
    assert res.complete
    table = confirm(p, res, sim, k=3, settings=settings, seed=4)
    assert len(table) == 3
    assert table["simulated_objective"].is_monotonic_increasing
    # another seed: close to, but not the same as, the search's estimate
    assert np.allclose(table["simulated_objective"], table["predicted_objective"], atol=0.05)


def test_optimize_cli_end_to_end(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "chainnet.optimize", f"ckpt_path={tiny_checkpoint}",
         f"problem={EXAMPLE}", "budget_s=null", "budget_evals=200", "strategy=genetic", "top_k=2",
         "progress=false",
         "simulator.max_arrivals=20000", f"hydra.run.dir={run}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # a model trained on dsn24 scores edge deployments: the command says it extrapolates
    assert "candidates scored have inputs outside the training ranges" in proc.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["scorer"] == "surrogate" and result["scored"] > 10
    assert result["budget_evals"] == 200 and result["budget_s"] is None
    assert set(result["placement"]) == {
        "classify/stem", "classify/body", "classify/head", "detect/backbone", "detect/neck"
    }  # fmt: skip
    assert result["placement"]["classify/stem"] == "gateway"
    assert result["thresholds"]["classify/stem"] in (0.9, 0.7, 0.5)
    assert len(result["predicted"]) == len(result["simulated"]) == 2
    assert np.isfinite(result["simulated_objective"])
    Scenario.load(run / "best_scenario.yaml")
    for name in ("convergence.png", "history.csv", "candidates.csv"):
        assert (run / name).is_file()
    args = [f"problem={EXAMPLE}", "budget_s=1", f"hydra.run.dir={tmp_path / 'bad'}"]
    code, _, err = run_command(optimize_main, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and "ckpt_path" in err


def test_repair_moves_fragments_off_full_devices():
    p = example()
    crowded = np.array([0, 0, 0, 0, 0, 0])  # 2100 MB of weights on the 1024 MB gateway
    assert p.overfull(crowded).tolist() == [True, False, False]
    fixed = p.repair(crowded, None)
    assert fixed is not None and p.feasible(fixed)
    assert fixed[0] == 0 and fixed[3] == 0  # gateway fragments stay
    rng = np.random.default_rng(0)
    assert all(p.feasible(p.repair(crowded, rng)) for _ in range(20))
    d = yaml.safe_load(EXAMPLE.read_text())
    d["services"][0]["fragments"][0]["memory"] = 1000  # with the other stem, over the gateway
    d["services"][1]["fragments"][0]["memory"] = 1000
    with pytest.raises(ScenarioError, match="fits the devices' RAM"):
        space_of(d)


def test_a_placement_is_found_where_few_fit():
    """Only `big` holds the weights: random draws almost never fit, repair finds the room."""
    d = {
        "devices": [
            {"name": "big", "speed": 1.0, "capacity": 5, "ram": 10000},
            {"name": "s1", "speed": 1.0, "capacity": 5, "ram": 100},
            {"name": "s2", "speed": 1.0, "capacity": 5, "ram": 100},
        ],
        "services": [
            {
                "name": "a",
                "arrival_rate": 0.1,
                "fragments": [{"name": f"f{i}", "work": 0.1, "memory": 200} for i in range(6)],
            }
        ],
    }
    p = space_of(d)
    assert p.device_of(p.random_candidate(np.random.default_rng(1))).tolist() == [0] * 6
    for strategy in ("random", "anneal", "genetic", "greedy"):
        scorer = FakeScorer(p, np.zeros(6, int))
        res = run_search(p, scorer, strategy, budget_s=None, budget_evals=100, batch_size=4)
        assert res.top(1)[0][1].objective == 0


def test_greedy_restarts_only_at_a_local_optimum():
    """No RAM limits and a separable objective: every point but the optimum has an improving
    move, so greedy may restart only from the optimum, even scoring 2 moves at a time."""
    d = {
        "devices": [{"name": f"d{i}", "speed": 1.0, "capacity": 5} for i in range(4)],
        "services": [
            {
                "name": f"s{s}",
                "arrival_rate": 0.1,
                "fragments": [{"name": f"f{k}", "work": 0.1} for k in range(4)],
            }
            for s in range(2)
        ],
    }
    p = space_of(d)
    target = np.array([3, 1, 2, 0, 1, 1, 3, 2])
    restarts = []

    class Counting(Greedy):
        def tell(self, candidates, values):
            was, value = self.current is not None, self.value
            super().tell(candidates, values)
            if was and self.current is None:
                restarts.append(value)

    strategies.STRATEGY_CLASSES["counting"] = Counting
    try:
        scorer = FakeScorer(p, target)
        res = run_search(
            p, scorer, "counting", budget_s=None, budget_evals=500, batch_size=2, seed=4
        )
    finally:
        del strategies.STRATEGY_CLASSES["counting"]
    assert res.top(1)[0][1].objective == 0
    assert restarts and all(v == 0 for v in restarts)


def test_a_service_that_served_nothing_does_not_erase_the_accuracy():
    p = example().problem
    obj, loss, acc = objective_value(p, np.array([0.0, 1.0]), np.array([0.9, np.nan]))
    assert acc == pytest.approx(0.9)
    assert obj == pytest.approx(-0.9 + 10 * (0.6 / 1.8 - 0.05))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["objective"].update(penalty=-10), "penalty"),
        (lambda d: d["services"][1]["fragments"][1].update(name="backbone"), "fragment names"),
        (lambda d: d["services"][1].update(name="classify"), "service names"),
    ],
)
def test_more_bad_problems(edit, match):
    d = yaml.safe_load(EXAMPLE.read_text())
    edit(d)
    with pytest.raises(ScenarioError, match=match):
        Problem.from_dict(d)


def test_bad_search_settings():
    p = example()
    res = run_search(p, FakeScorer(p, np.zeros(6, int)), "random", None, budget_evals=20)
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="top_k"):
            confirm(p, res, FakeScorer(p, 0), k=k)
    for b in (0, 16.5):
        with pytest.raises(ValueError, match="batch_size"):
            run_search(p, FakeScorer(p, 0), "random", None, budget_evals=20, batch_size=b)


def test_result_json_has_no_nan():
    out = json.dumps(json_safe({"a": float("nan"), "b": [np.float64(1.5), np.nan], "c": "x"}))
    assert json.loads(out, parse_constant=lambda c: pytest.fail(c)) == {
        "a": None, "b": [1.5, None], "c": "x"
    }  # fmt: skip
