"""The hybrid search (`scorer=hybrid`: the surrogate searches, the simulator confirms), the
objective's bounds from the surrogate's intervals, EINet's strategy, and budgets in evaluations."""

import json
import math

import numpy as np
import pytest
from tests_helpers import ROOT, run_command, without_intervals

from chainnet.cli.optimize import main as optimize_main
from chainnet.learn.surrogate import Surrogate
from chainnet.learn.tally import RangeTally
from chainnet.optim.generators import random_problem
from chainnet.optim.hybrid import HybridSplit, optimize_hybrid, run_hybrid, simulation_order
from chainnet.optim.objective import objective_value
from chainnet.optim.problem import Problem
from chainnet.optim.scorers import (
    HybridScorer,
    Score,
    SimulatorScorer,
    SurrogateScorer,
    make_scorer,
)
from chainnet.optim.search import optimize, run_search
from chainnet.optim.space import SearchSpace
from chainnet.optim.strategies import (
    EINET_LIMIT,
    EINET_SHARE,
    EINet,
    enumerated_genes,
    single_moves,
)
from chainnet.sim import SimulatorSettings

EXAMPLE = ROOT / "examples/problem_small.yaml"
SETTINGS = SimulatorSettings(precision=0.05, max_arrivals=20_000, warmup_arrivals=1000)
SIM_ARGS = ["simulator.precision=0.05", "simulator.max_arrivals=20000", "progress=false"]


def example() -> SearchSpace:
    return SearchSpace(Problem.load(EXAMPLE))


def big_space() -> SearchSpace:
    return SearchSpace(random_problem(np.random.default_rng(9), devices=(6, 6), fragments=(6, 6)))


def free_space(devices: int = 4, fragments: int = 4) -> SearchSpace:
    """No RAM and no gateway: every combination of genes is feasible."""
    return SearchSpace(
        Problem.from_dict(
            {
                "devices": [{"name": f"d{i}", "speed": 1.0, "capacity": 5} for i in range(devices)],
                "services": [
                    {
                        "name": f"s{s}",
                        "arrival_rate": 0.1,
                        "fragments": [{"name": f"f{k}", "work": 0.1} for k in range(fragments)],
                    }
                    for s in range(2)
                ],
            }
        )
    )


def distance(c: np.ndarray, target: np.ndarray) -> float:
    return float(np.abs(c - target).sum())


class FakeSurrogate:
    """A surrogate scorer with a level: the distance to `target`, sure (width 0.5) where gene 1
    is even and unsure (width 4) where it is odd."""

    name, chunk, level = "surrogate", 10**9, 0.9

    def __init__(self, space, target):
        self.space, self.target, self.tally, self.calls = space, target, RangeTally(), 0

    def score(self, candidates, keep=False, deadline=None):
        self.calls += len(candidates)
        out = []
        for c in candidates:
            obj, width = distance(c, self.target), 4.0 if c[1] % 2 else 0.5
            out.append(Score(obj, 0.0, math.nan, lower=obj - width, upper=obj + width))
        return out


class FakeSimulator:
    """The truth the simulator would tell: the distance to another target; every call logged."""

    name, chunk = "simulator", 1

    def __init__(self, space, target):
        self.space, self.target, self.log = space, target, []

    def score(self, candidates, keep=False, deadline=None):
        self.log += [c.copy() for c in candidates]
        return [Score(distance(c, self.target), 0.0, math.nan) for c in candidates]


def fake_hybrid(space, seed=0):
    rng = np.random.default_rng(seed)
    truth, guess = space.random_candidate(rng), space.random_candidate(rng)
    return HybridScorer(FakeSurrogate(space, guess), FakeSimulator(space, truth))


# ---- the rule that picks what to simulate ------------------------------------------------------


def test_simulation_order_takes_the_lowest_lower_bound_first():
    objective = [0.10, 0.50, 0.20, 0.30, 0.05, 0.40]
    lower = [0.05, 0.00, 0.20, 0.05, np.nan, 0.05]
    # the unsure 0.5 (lower 0) first; ties at 0.05 by the prediction, then by position; NaN last
    assert simulation_order(objective, lower).tolist() == [1, 0, 3, 5, 2, 4]
    assert simulation_order([3.0, 1.0, 2.0], [1.0] * 3).tolist() == [1, 2, 0]
    assert simulation_order([1.0, 1.0], [0.0, 0.0]).tolist() == [0, 1]
    assert simulation_order([], []).tolist() == []
    with pytest.raises(ValueError, match="vectors of one length"):
        simulation_order([1.0, 2.0], [1.0])


def test_the_simulator_scores_only_what_the_rule_picks():
    """Phase 2 simulates the first candidates of phase 1 in `simulation_order`; phase 3 only
    single-gene moves of candidates simulated before, the lowest lower bound first."""
    space = big_space()
    scorer = fake_hybrid(space)
    split = HybridSplit(surrogate_evals=300, screen_share=0.5)
    res = run_hybrid(space, scorer, "anneal", None, budget_evals=20, seed=3, split=split)
    log = scorer.simulator.log
    assert len(log) == len(res.scored) == 20 and res.stopped_by == "budget_evals"
    assert res.phases["screened"] == 10 and res.phases["local"] == 10
    assert res.phases["surrogate_scored"] == 300
    # phase 1 again, alone (the same seed): its candidates in the rule's order
    first = run_search(space, scorer.surrogate, "anneal", None, budget_evals=300, seed=3)
    items = list(first.scored.values())
    order = simulation_order([s.objective for _, s in items], [s.lower for _, s in items])
    assert [c.tolist() for c in log[:10]] == [items[i][0].tolist() for i in order[:10]]
    for k, c in enumerate(log[10:], start=10):  # a move of a candidate simulated before
        assert min(int((c != d).sum()) for d in log[:k]) == 1
    # the first centre: the best of phase 2; its first move simulated: the lowest lower bound
    centre = min(log[:10], key=lambda c: distance(c, scorer.simulator.target))
    moves = single_moves(space, centre)
    predicted = scorer.surrogate.score(moves)
    best = simulation_order([s.objective for s in predicted], [s.lower for s in predicted])[0]
    assert log[10].tolist() == moves[best].tolist()
    assert list(res.history["phase"].unique()) == ["surrogate", "screen", "local"]
    assert res.history.loc[res.history["phase"] != "surrogate", "simulated"].tolist() == list(
        range(1, 21)
    )


def test_local_moves_improve_on_what_the_surrogate_ranked_best():
    """The surrogate aims at the wrong target: the local phase walks to the simulator's."""
    space = free_space()
    scorer = fake_hybrid(space, seed=1)
    split = HybridSplit(surrogate_evals=200, screen_share=0.1)
    res = run_hybrid(space, scorer, "anneal", None, budget_evals=200, seed=0, split=split)
    screened = [s.objective for _, s in list(res.scored.values())[:20]]
    assert res.top(1)[0][1].objective < min(screened)
    assert res.top(1)[0][1].objective == 0  # the simulator's optimum
    assert np.array_equal(res.top(1)[0][0], scorer.simulator.target)


def test_an_evaluation_budget_makes_the_hybrid_reproducible_and_the_split_exact():
    space = big_space()
    runs = []
    for _ in range(2):
        scorer = fake_hybrid(space)
        split = HybridSplit(surrogate_evals=500, screen_share=0.3)
        runs.append(
            run_hybrid(space, scorer, "genetic", None, budget_evals=30, seed=7, split=split)
        )
    a, b = runs
    assert list(a.scored) == list(b.scored)  # the same simulations, in order
    assert a.history["best_objective"].tolist() == b.history["best_objective"].tolist()
    assert (a.phases["surrogate_scored"], a.phases["screened"], a.phases["local"]) == (500, 9, 21)


def test_a_time_budget_is_shared_between_the_phases():
    space = big_space()
    # 2 s, not less: on a loaded machine (make test's two workers) a shorter budget can leave the
    # last phase no time at all
    res = run_hybrid(space, fake_hybrid(space), "anneal", 2.0, seed=0)
    phases = res.phases
    assert phases["surrogate_stopped_by"] == "budget_s" and phases["surrogate_s"] >= 0.6
    assert phases["screened"] > 0 and phases["local"] > 0
    assert res.stopped_by == "budget_s" and 2.0 <= res.elapsed_s < 10.0


def test_a_small_space_is_simulated_whole_and_the_search_says_so():
    space = example()  # 36 feasible candidates
    res = run_hybrid(space, fake_hybrid(space), "random", None, budget_evals=100, seed=0)
    assert res.complete and res.stopped_by == "space" and len(res.scored) == 36


# ---- the objective's bounds from the surrogate's intervals --------------------------------------


def test_the_surrogate_bounds_the_objective_from_its_intervals(tiny_checkpoint):
    surrogate = Surrogate.load(tiny_checkpoint, warn_ranges=False)
    assert surrogate.intervals_known  # the fixture's checkpoint is calibrated
    for space in (example(), SearchSpace(random_problem(np.random.default_rng(4), name="p4"))):
        rng = np.random.default_rng(0)
        cands = [space.random_candidate(rng) for _ in range(12)]
        plain = SurrogateScorer(space, surrogate).score(cands)
        assert all(math.isnan(s.lower) and math.isnan(s.upper) for s in plain)
        wide, narrow = (SurrogateScorer(space, surrogate, lv).score(cands) for lv in (0.99, 0.5))
        arrays = surrogate.predict_arrays([space.scenario(c) for c in cands], level=0.99)
        n = len(space.problem.services)
        for i, (p, w, s) in enumerate(zip(plain, wide, narrow)):
            assert p.objective == w.objective == s.objective  # the level changes only bounds
            assert w.lower <= s.lower <= s.objective <= s.upper <= w.upper
            loss = arrays["loss_ratio_lower"][i * n : (i + 1) * n]
            acc = arrays["accuracy"][i * n : (i + 1) * n]
            expected = objective_value(space.problem, loss, acc)[0]
            assert w.lower == pytest.approx(min(w.objective, expected), abs=1e-6)


# ---- against the surrogate alone, with a real model ---------------------------------------------


def generated(i: int) -> SearchSpace:
    """The `i`-th of a series of problems with 5-6 devices and 6-12 fragments (2e4-2e8
    candidates), `min_loss` for odd `i`."""
    rng = np.random.default_rng(11)
    for j in range(i + 1):
        objective = "min_loss" if j % 2 else "max_accuracy"
        problem = random_problem(rng, (5, 6), (2, 3), (3, 4), objective=objective, name=f"g{j}")
    return SearchSpace(problem)


@pytest.mark.parametrize("problem", ["example", "generated"])
def test_the_hybrid_does_at_least_as_well_as_the_surrogate_alone(tiny_checkpoint, problem):
    """At the same seed, the surrogate alone (its top 5 simulated afresh) and the hybrid (16
    simulations), both judged by the same confirming simulation."""
    space = example() if problem == "example" else generated(1)
    surrogate = make_scorer("surrogate", space, tiny_checkpoint, SETTINGS)
    alone = optimize(space, surrogate, "anneal", None, budget_evals=400, seed=0, settings=SETTINGS)
    hybrid = make_scorer("hybrid", space, tiny_checkpoint, SETTINGS)
    split = HybridSplit(surrogate_evals=400)
    runs = [
        optimize_hybrid(space, hybrid, "anneal", None, budget_evals=16, seed=0, split=split)
        for _ in range(2)
    ]
    best = runs[0].best
    assert best["simulated_objective"] <= alone.best["simulated_objective"]
    if problem == "generated":  # strictly better here (0.0137 against 0.0193 for the fixture)
        assert best["simulated_objective"] < alone.best["simulated_objective"] - 1e-3
    assert list(runs[0].result.scored) == list(runs[1].result.scored)  # reproducible
    assert (
        runs[0].table["simulated_objective"].tolist()
        == runs[1].table["simulated_objective"].tolist()
    )
    phases = runs[0].result.phases
    assert phases["screened"] + phases["local"] == len(runs[0].result.scored) == 16
    # its estimate is a simulation: the search's seed, then the confirmation's
    assert best["predicted_services"] is not None and best["simulated_services"] is not None


# ---- EINet's hybrid strategy --------------------------------------------------------------------


def test_enumerated_genes_fit_the_limit():
    assert enumerated_genes(np.array([3, 3, 3]), 9) == 2
    assert enumerated_genes(np.array([3, 3, 3]), 27) == 3
    assert enumerated_genes(np.array([5, 2]), 4) == 0
    assert enumerated_genes(np.array([], dtype=int), 4) == 0


class Distance:
    """A scorer of known optimum: the distance to `target`; every candidate scored logged."""

    name, chunk = "surrogate", 10**9

    def __init__(self, target):
        self.target, self.log = target, []

    def score(self, candidates, keep=False, deadline=None):
        self.log += [c.copy() for c in candidates]
        return [Score(distance(c, self.target), 0.0, math.nan) for c in candidates]


def test_einet_enumerates_exactly_the_first_genes_then_descends():
    space = free_space()  # 8 free genes of 4 devices each
    target = np.array([3, 1, 2, 0, 1, 1, 3, 2])
    scorer = Distance(target)
    res = run_search(space, scorer, "einet", None, budget_evals=200, seed=2, batch_size=8)
    k = enumerated_genes(space.domains[space.free], int(EINET_SHARE * 200))
    assert k == 3  # 4^3 = 64 <= 100 < 256
    head = [c[:k].tolist() for c in scorer.log[:64]]
    assert sorted(map(tuple, head)) == sorted(np.ndindex(4, 4, 4))  # each combination once
    rest = {tuple(c[k:]) for c in scorer.log[:64]}
    assert len(rest) == 1  # the other genes as in the base
    start = min(scorer.log[:64], key=lambda c: distance(c, target))
    # then greedy: each batch changes one gene of the best point so far, the others first
    batch = scorer.log[64:67]
    assert all(int((c != start).sum()) == 1 for c in batch)
    assert {int(np.flatnonzero(c != start)[0]) for c in batch} == {k}
    assert res.top(1)[0][1].objective == 0  # coordinate descent on a separable objective


def test_einet_skips_combinations_that_do_not_fit_and_ends_enumerating_at_its_share():
    space = big_space()  # RAM limits: some combinations cannot be completed
    strat = EINet(space, np.random.default_rng(0), 64, budget_evals=400)
    assert strat.k == enumerated_genes(space.domains[space.free], 200)
    fits = 0  # the combinations the base completes, or the greedy repair without changing them
    for combo in np.ndindex(*space.domains[strat.head]):
        c = strat.base.copy()
        c[strat.head] = combo
        fixed = c if space.feasible(c) else space.repair(c, None)
        fits += fixed is not None and fixed[strat.head].tolist() == list(combo)
    asked = []
    while (batch := strat.ask(0.0)) and strat.mode == "enumerate":
        asked += batch
        strat.tell(batch, np.zeros(len(batch)))
    assert strat.mode == "start" and len(batch) == 1  # then it descends from the best
    assert all(space.feasible(c) for c in asked)
    assert len({tuple(c[strat.head]) for c in asked}) == len(asked) == fits
    assert fits < np.prod(space.domains[strat.head])  # some were skipped
    # under a time budget, the enumeration ends at its share: then it descends from the best
    strat = EINet(space, np.random.default_rng(0), 64)
    assert strat.k == enumerated_genes(space.domains[space.free], EINET_LIMIT)
    told = strat.ask(0.2)
    strat.tell(told, np.arange(64.0))
    start = strat.ask(EINET_SHARE)
    assert len(start) == 1 and strat.mode == "start" and np.array_equal(start[0], told[0])


# ---- bad input: one line each -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"surrogate_share": 0}, "hybrid.surrogate_share: got 0"),
        ({"surrogate_share": 1.0}, r"share in \(0, 1\)"),
        ({"screen_share": 1.5}, r"hybrid.screen_share: got 1.5; a share in \(0, 1\]"),
        ({"screen_share": True}, "hybrid.screen_share"),
        ({"surrogate_evals": 0}, "hybrid.surrogate_evals: got 0"),
        ({"surrogate_evals": 2.5}, "hybrid.surrogate_evals"),
    ],
)
def test_bad_splits_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HybridSplit(**kwargs)


def test_bad_hybrid_input_is_one_line(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    space = example()
    old = without_intervals(tiny_checkpoint, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match="hybrid.level: .*holds no calibrated intervals.*retrain"):
        make_scorer("hybrid", space, old)
    scorer = fake_hybrid(space)
    with pytest.raises(ValueError, match="scorer=hybrid runs in phases"):
        run_search(space, scorer, "anneal", None, budget_evals=10)
    with pytest.raises(ValueError, match="needs a HybridScorer"):
        run_hybrid(space, SimulatorScorer(space), "anneal", None, budget_evals=10)
    with pytest.raises(ValueError, match="needs a level"):
        HybridScorer(
            SurrogateScorer(space, Surrogate.load(tiny_checkpoint)), SimulatorScorer(space)
        )
    common = [f"problem={EXAMPLE}", "scorer=hybrid", "budget_s=null", *SIM_ARGS]
    cases = [
        ([f"ckpt_path={old}", "budget_evals=10"], "error: scorer=hybrid: hybrid.level: "),
        # the budget is checked before the checkpoint is read
        ([f"ckpt_path={tmp_path / 'none.ckpt'}", "budget_evals=0"], "error: budget_evals: got 0"),
        ([f"ckpt_path={tiny_checkpoint}", "budget_evals=8", "hybrid.screen_share=2"], "share"),
        ([f"ckpt_path={tiny_checkpoint}", "budget_evals=8", "hybrid.level=1.5"], "level: got 1.5"),
        (["budget_evals=10"], "error: ckpt_path: scorer=hybrid needs a checkpoint"),
    ]
    for i, (args, match) in enumerate(cases):
        where = f"hydra.run.dir={tmp_path / f'bad{i}'}"
        code, _, err = run_command(
            optimize_main, *common, *args, where, monkeypatch=monkeypatch, capsys=capsys
        )
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and match in lines[0], err


def test_optimize_cli_hybrid_end_to_end(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    args = [f"ckpt_path={tiny_checkpoint}", f"problem={EXAMPLE}", "scorer=hybrid", "budget_s=null"]
    args += ["budget_evals=12", "hybrid.surrogate_evals=100", "top_k=2", *SIM_ARGS]
    code, out, err = run_command(
        optimize_main, *args, f"hydra.run.dir={run}", monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 0, err
    result = json.loads((run / "result.json").read_text())
    assert result["scorer"] == "hybrid" and result["scored"] == 12 and result["budget_evals"] == 12
    hybrid = result["hybrid"]
    assert hybrid["screened"] == 6 and hybrid["local"] == 6 and hybrid["level"] == 0.9
    assert hybrid["surrogate_scored"] == 36  # the space (36 feasible) is used up before 100
    assert "hybrid: the surrogate scored 36 candidates" in out
    assert "the simulator 6 by lower bound at level 0.9" in out and "6 local moves" in out
    assert np.isfinite(result["simulated_objective"])
    history = (run / "history.csv").read_text().splitlines()
    assert history[0] == "elapsed_s,scored,best_objective,phase,simulated"
