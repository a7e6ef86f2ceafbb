"""The loss-accuracy front (`objective=front`): NSGA-II against the exhaustive front, the budget,
the confirmation by simulation, the command's outputs and what it refuses."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from pymoo.algorithms.moo.nsga2 import NSGA2
from tests_helpers import ROOT, run_command

from chainnet.cli.optimize import main as optimize_main
from chainnet.optim.front import confirm_front, front_search, objectives, pareto
from chainnet.optim.generators import problem_family
from chainnet.optim.problem import Problem
from chainnet.optim.scorers import Score, SimulatorScorer, make_scorer
from chainnet.optim.space import SearchSpace
from chainnet.sim import SimulatorSettings

EXAMPLE = ROOT / "examples/problem_small.yaml"
COARSE = SimulatorSettings(precision=0.1, max_arrivals=10_000, warmup_arrivals=500)


class FakeScorer:
    """A deterministic (loss, accuracy) per candidate, with a trade-off: more loss, more
    accuracy, and noise; counts what it scores."""

    name = "fake"
    chunk = 10**9

    def __init__(self):
        self.calls = 0

    def score(self, candidates, keep=False, deadline=None):
        self.calls += len(candidates)
        out = []
        for c in candidates:
            u = np.random.default_rng([int(x) for x in c]).random(2)
            out.append(Score(0.0, float(u[0]), float(0.5 + 0.5 * u[0] * u[1] ** 0.3)))
        return out


class AdditiveScorer(FakeScorer):
    """Loss and accuracy add up over the genes (each gene value has its share), and more loss
    comes with more accuracy: a front with structure for NSGA-II to exploit."""

    table = np.random.default_rng(7).random((64, 64, 2))

    def score(self, candidates, keep=False, deadline=None):
        self.calls += len(candidates)
        out = []
        for c in candidates:
            t = self.table[np.arange(len(c)), c]
            acc = 0.5 + 0.4 * (0.7 * t[:, 0] + 0.3 * t[:, 1]).mean()
            out.append(Score(0.0, float(t[:, 0].mean()), float(acc)))
        return out


def family(seed: int) -> SearchSpace:
    return SearchSpace(problem_family("small", seed, objective="max_accuracy"))


def exhaustive_front(space: SearchSpace, scorer=FakeScorer) -> set[bytes]:
    cands = list(space.enumerate_feasible())
    return {c.tobytes() for c, _ in pareto(list(zip(cands, scorer().score(cands))))}


def non_dominated(points) -> bool:
    f = np.array([objectives(s) for _, s in points])
    for i in range(len(f)):
        others = np.delete(f, i, axis=0)
        if ((others <= f[i]).all(axis=1) & (others < f[i]).any(axis=1)).any():
            return False
    return True


def test_with_the_space_used_up_the_front_is_the_exhaustive_one():
    space = family(1)  # 171 feasible candidates
    scorer = FakeScorer()
    res = front_search(space, scorer, None, budget_evals=1000, seed=0, pop_size=20)
    assert res.stopped_by == "space" and len(res.scored) == space.n_feasible == scorer.calls
    assert all(space.feasible(c) for c, _ in res.scored.values())
    assert {c.tobytes() for c, _ in res.front} == exhaustive_front(space)
    assert non_dominated(res.front) and len(res.front) > 10


def test_the_front_covers_the_exhaustive_front_of_a_larger_space():
    space = family(0)  # 1,215 feasible candidates, 42 on the front
    true = exhaustive_front(space, AdditiveScorer)
    cands = list(space.enumerate_feasible())
    for share in (0.3, 0.5):
        n = int(share * len(cands))
        res = front_search(space, AdditiveScorer(), None, budget_evals=n, seed=0, pop_size=20)
        assert res.stopped_by == "budget_evals" and len(res.scored) == n
        assert non_dominated(res.front)
        found = {c.tobytes() for c, _ in res.front}
        # as many random candidates find far less of it (16 of 42 at 30 %, 15 at 50 %)
        drawn = [cands[i] for i in np.random.default_rng(0).choice(len(cands), n, replace=False)]
        by_chance = {
            c.tobytes() for c, _ in pareto(list(zip(drawn, AdditiveScorer().score(drawn))))
        }
        assert len(found & true) >= 2 * len(by_chance & true)
    assert found == true  # with half the space scored: the whole front
    # the front is lowest loss first, accuracy rising along it
    loss, neg_acc = np.array([objectives(s) for _, s in res.front]).T
    assert (np.diff(loss) >= 0).all() and (np.diff(neg_acc) < 0).all()


def test_the_budget_of_evaluations_is_exact_and_reproducible():
    space = family(0)
    runs = [front_search(space, FakeScorer(), None, budget_evals=55, seed=3) for _ in range(2)]
    assert [len(r.scored) for r in runs] == [55, 55]
    assert list(runs[0].scored) == list(runs[1].scored)
    assert runs[0].history["scored"].is_monotonic_increasing
    res = front_search(space, FakeScorer(), 0.2, seed=0)  # a time budget stops it too
    assert res.stopped_by in ("budget_s", "stall", "space") and res.elapsed_s < 5


def test_every_point_of_the_front_is_simulated_afresh():
    space = SearchSpace(Problem.load(EXAMPLE))
    sim = SimulatorScorer(space, COARSE, seed=3)
    res = front_search(space, sim, None, budget_evals=20, seed=0, pop_size=10)
    table = confirm_front(space, res, sim, COARSE, seed=4)
    assert len(table) == len(res.front) and table["point"].tolist() == list(range(len(table)))
    again = SimulatorScorer(space, COARSE, seed=4).score([c for c, _ in res.front])
    assert table["simulated_loss"].tolist() == [s.loss for s in again]
    assert table["predicted_loss"].tolist() == [s.loss for _, s in res.front]
    assert all("placement" in json.loads(d) for d in table["decisions"])


def test_optimize_writes_the_front(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = [f"problem={EXAMPLE}", "objective=front", "scorer=simulator", "budget_s=null",
            "budget_evals=20", "front.pop_size=10", "progress=false",
            "simulator.max_arrivals=10000", f"paths.output_dir={out}"]  # fmt: skip
    code, stdout, err = run_command(optimize_main, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    front = pd.read_csv(out / "front.csv")
    assert len(front) >= 1 and np.isfinite(front["simulated_loss"]).all()
    assert {"predicted_accuracy", "simulated_accuracy", "decisions"} <= set(front.columns)
    result = json.loads((out / "result.json").read_text())
    assert result["objective"] == "front" and result["scored"] == 20
    assert len(result["front"]) == len(front)
    assert (out / "front.png").stat().st_size > 1000
    assert f"front: {len(front)} points" in stdout


def refused(tmp_path, monkeypatch, capsys, *args, problem=EXAMPLE) -> str:
    args = [f"problem={problem}", "objective=front", "scorer=simulator", "progress=false",
            f"paths.output_dir={tmp_path / 'bad'}", *args]  # fmt: skip
    code, _, err = run_command(optimize_main, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def test_bad_front_settings_are_refused_in_one_line(tmp_path, monkeypatch, capsys):
    d = yaml.safe_load(EXAMPLE.read_text())
    d["objective"] = {"kind": "min_loss"}
    min_loss = tmp_path / "min_loss.yaml"
    min_loss.write_text(yaml.safe_dump(d))
    err = refused(tmp_path, monkeypatch, capsys, problem=min_loss)
    assert "objective.kind 'min_loss'" in err and "max_accuracy" in err
    d["objective"] = {"kind": "max_accuracy", "max_loss": 0.05}
    d["services"][0]["fragments"][0]["exit"] = d["services"][0]["fragments"][0]["exit"][:1]
    one_row = tmp_path / "one_row.yaml"
    one_row.write_text(yaml.safe_dump(d))
    assert "no exit with a threshold" in refused(tmp_path, monkeypatch, capsys, problem=one_row)
    assert "budget_evals: got 0" in refused(tmp_path, monkeypatch, capsys, "budget_evals=0")
    assert "budget_s: got 0" in refused(tmp_path, monkeypatch, capsys, "budget_s=0")
    assert "front.pop_size: got 2" in refused(tmp_path, monkeypatch, capsys, "front.pop_size=2")
    assert "scorer=hybrid" in refused(tmp_path, monkeypatch, capsys, "scorer=hybrid")
    assert "objective: got 'pareto'" in refused(tmp_path, monkeypatch, capsys, "objective=pareto")


def test_front_search_refuses_bad_settings():
    space = family(1)
    with pytest.raises(ValueError, match="budget_evals"):
        front_search(space, FakeScorer(), None, budget_evals=0)
    with pytest.raises(ValueError, match="pop_size"):
        front_search(space, FakeScorer(), 1.0, pop_size=True)
    min_loss = SearchSpace(problem_family("small", 1))
    with pytest.raises(ValueError, match="min_loss"):
        front_search(min_loss, FakeScorer(), 1.0)


def test_the_surrogate_searches_a_front_and_the_simulator_confirms_it(tiny_checkpoint):
    space = SearchSpace(Problem.load(EXAMPLE))
    scorer = make_scorer("surrogate", space, tiny_checkpoint)
    res = front_search(space, scorer, None, budget_evals=30, seed=0, pop_size=10)
    assert len(res.scored) == 30 and non_dominated(res.front)
    table = confirm_front(space, res, scorer, COARSE, seed=4)
    assert table["predicted_loss"].tolist() == [s.loss for _, s in res.front]
    again = SimulatorScorer(space, COARSE, seed=4).score([c for c, _ in res.front])
    assert table["simulated_accuracy"].tolist() == [s.accuracy for s in again]


def test_a_search_that_makes_no_offspring_stops(monkeypatch):
    space = family(1)
    monkeypatch.setattr(NSGA2, "ask", lambda self: None)  # pymoo: no offspring left to make
    res = front_search(space, FakeScorer(), 60.0, seed=0)
    assert res.stopped_by == "stall" and not res.scored and res.front == []
    with pytest.raises(ValueError, match="scored no candidate"):
        confirm_front(space, res, FakeScorer())
