"""`scorer=hybrid`: the surrogate searches, the simulator confirms, one budget shared in phases.

1. **search**: the chosen strategy (`chainnet.optim.strategies`) scored by the surrogate, which
   keeps every candidate with its predicted objective and the bounds of its prediction interval
   (`SurrogateScorer` with a `level`);
2. **screen**: the simulator scores those candidates in the order of `simulation_order`: lowest
   lower bound first (optimistic: the best predicted and the least certain come first);
3. **local**: first-improvement descent by simulation over single-gene moves, from the best
   simulated candidate; a centre's moves are simulated in the order of their lower bounds, and at
   a local optimum the descent goes on from the next best simulated candidate not yet a centre.

`HybridSplit` shares the budget. Under `budget_s`, phase 1 takes `surrogate_share` of the seconds,
phase 2 `screen_share` of what is left, phase 3 the rest. Under `budget_evals`, which counts
simulations here (the costly evaluations: as many as `scorer=simulator` spends at that budget),
phase 1 scores `surrogate_evals` candidates by surrogate, phase 2 simulates `screen_share` of
`budget_evals` and phase 3 the rest. With both, each phase stops at whichever of its limits comes
first; a phase that ends early leaves the rest to the next. Under an evaluation budget alone, a
run is the same for a seed on any machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from chainnet.optim.scorers import HybridScorer, Score
from chainnet.optim.search import (
    Budget,
    Optimization,
    SearchResult,
    confirm,
    progress_bar,
    run_search,
    score_new,
)
from chainnet.optim.space import SearchSpace
from chainnet.optim.strategies import single_moves
from chainnet.sim import SimulatorSettings

PHASES = ("surrogate", "screen", "local")


@dataclass(frozen=True)
class HybridSplit:
    """How `run_hybrid` shares its budget between its phases (see the module's docstring)."""

    surrogate_share: float = 0.3  # of budget_s: phase 1
    screen_share: float = 0.5  # of budget_evals, or of the seconds phase 1 left: phase 2
    surrogate_evals: int = 5000  # with budget_evals: the candidates phase 1 scores by surrogate

    def __post_init__(self) -> None:
        for name, closed in (("surrogate_share", False), ("screen_share", True)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            if not (ok and v > 0 and (v <= 1 if closed else v < 1)):
                span = "(0, 1]" if closed else "(0, 1)"
                raise ValueError(f"hybrid.{name}: got {v!r}; a share in {span}")
        n = self.surrogate_evals
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"hybrid.surrogate_evals: got {n!r}; an integer >= 1")


def simulation_order(objective, lower) -> np.ndarray:
    """The indices of candidates in the order phase 2 simulates them: the lowest lower bound of
    the objective first (the most promising, optimistically), ties by the predicted objective,
    then by position (the order they were scored); NaN last."""
    objective, lower = np.asarray(objective, float), np.asarray(lower, float)
    if objective.ndim != 1 or objective.shape != lower.shape:
        raise ValueError(
            f"simulation_order: objective {objective.shape} and lower {lower.shape} must be "
            "vectors of one length"
        )
    return np.lexsort((np.arange(len(objective)), objective, lower))


class _Phases:
    """What phases 2 and 3 share: the surrogate's predictions (`pool`), the candidates simulated,
    the history rows and the progress bar."""

    def __init__(
        self, scorer: HybridScorer, first: SearchResult, budget: Budget, t0: float, progress: bool
    ):
        self.scorer, self.first, self.budget, self.t0 = scorer, first, budget, t0
        self.pool: dict[bytes, Score] = {k: s for k, (_, s) in first.scored.items()}
        self.scored: dict[bytes, tuple[np.ndarray, Score]] = {}
        self.counts = dict.fromkeys(PHASES[1:], 0)
        self.predicted = 0  # candidates phase 3 had the surrogate predict (not in the pool)
        self.best = math.inf
        self.rows: list[dict[str, Any]] = []  # the history of phases 2 and 3
        self.bar = progress_bar(budget, "hybrid (simulator)", progress)

    def simulate(self, c: np.ndarray, budget: Budget, t: float, phase: str) -> str | None:
        """Simulate `c` while `budget` (its seconds counted from `t`) lasts; the budget that ran
        out, if one did."""
        before = len(self.scored)
        stop = score_new([c], self.scored, self.scorer.simulator, budget, t)
        if len(self.scored) > before:
            self.counts[phase] += 1
            self.best = min(self.best, self.scored[c.tobytes()][1].objective)
            elapsed = time.perf_counter() - self.t0
            self.rows.append(
                {
                    "elapsed_s": elapsed,
                    "scored": len(self.pool) + len(self.scored),
                    "best_objective": self.best,
                    "phase": phase,
                    "simulated": len(self.scored),
                }
            )
            seconds = self.budget.seconds
            self.bar.n = round(min(elapsed, seconds), 1) if seconds else len(self.scored)
            self.bar.set_postfix_str(f"best {self.best:.4g}, {len(self.scored)} simulated")
            self.bar.refresh()
        return stop

    def predict(self, candidates: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The surrogate's objective and lower bound of `candidates` (from the pool, else
        predicted now)."""
        missing = [c for c in candidates if c.tobytes() not in self.pool]
        if missing:
            for c, s in zip(missing, self.scorer.surrogate.score(missing)):
                self.pool[c.tobytes()] = s
            self.predicted += len(missing)
        scores = [self.pool[c.tobytes()] for c in candidates]
        return np.array([s.objective for s in scores]), np.array([s.lower for s in scores])


def _screen(state: _Phases, budget: Budget, t: float) -> str | None:
    """Phase 2: the candidates of phase 1, simulated in `simulation_order` while `budget` lasts."""
    items = list(state.first.scored.values())
    order = simulation_order([s.objective for _, s in items], [s.lower for _, s in items])
    for i in order:
        stop = state.simulate(items[i][0], budget, t, "screen")
        if stop is not None:
            return stop
    return None


def _local(space: SearchSpace, state: _Phases, budget: Budget) -> str:
    """Phase 3: descents (`_descend`) from the simulated candidates, best first, each one a centre
    once; what stopped it ("stall": every simulated candidate has been a centre)."""
    centres: set[bytes] = set()
    while True:
        before = len(state.scored)
        for c, s in sorted(state.scored.values(), key=lambda cs: cs[1].objective):
            if c.tobytes() in centres:
                continue
            stop = _descend(space, state, budget, c, s.objective, centres)
            if stop is not None:
                return stop
            if len(state.scored) > before:  # new simulations: rank again
                break
        else:
            return "stall"


def _descend(
    space: SearchSpace,
    state: _Phases,
    budget: Budget,
    current: np.ndarray,
    value: float,
    centres: set[bytes],
) -> str | None:
    """First-improvement descent by simulation from `current` (simulated `value`): its
    single-gene moves not simulated yet, in `simulation_order`, until one improves on it, then
    from there; every point it stands on becomes a centre. The budget that ran out, if one did."""
    centres.add(current.tobytes())
    improved = True
    while improved:
        moves = [m for m in single_moves(space, current) if m.tobytes() not in state.scored]
        improved = False
        for i in simulation_order(*state.predict(moves)) if moves else ():
            stop = state.simulate(moves[i], budget, state.t0, "local")
            if stop is not None:
                return stop
            v = state.scored[moves[i].tobytes()][1].objective
            if v < value - 1e-12:
                current, value, improved = moves[i], v, True
                centres.add(current.tobytes())
                break
    return None


def run_hybrid(
    space: SearchSpace,
    scorer: HybridScorer,
    strategy: str = "anneal",
    budget_s: float | None = 60.0,
    *,
    budget_evals: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    split: HybridSplit | None = None,
    progress: bool = False,
) -> SearchResult:
    """The three phases under one budget (`budget_evals` counts simulations). The result's
    `scored` holds the simulated candidates (their simulated scores), its history every phase's
    rows (phase 1: the surrogate's best predicted objective), its `phases` what each spent."""
    if getattr(scorer, "name", None) != "hybrid":
        raise ValueError("run_hybrid: needs a HybridScorer (make_scorer('hybrid', ...))")
    split = HybridSplit() if split is None else split
    budget = Budget(budget_s, budget_evals)
    t0 = time.perf_counter()
    first = run_search(
        space, scorer.surrogate, strategy,
        None if budget_s is None else split.surrogate_share * budget_s,
        budget_evals=None if budget_evals is None else split.surrogate_evals,
        seed=seed, batch_size=batch_size, progress=progress,
    )  # fmt: skip
    state = _Phases(scorer, first, budget, t0, progress)
    t1 = time.perf_counter()
    left = None if budget_s is None else max(split.screen_share * (budget_s - (t1 - t0)), 1e-9)
    sims = None if budget_evals is None else max(1, round(split.screen_share * budget_evals))
    _screen(state, Budget(left, sims), t1)
    t2 = time.perf_counter()
    stop = _local(space, state, budget)
    state.bar.close()
    t3 = time.perf_counter()
    feasible = space.n_feasible
    complete = feasible is not None and len(state.scored) >= feasible
    history = pd.concat(
        [first.history.assign(phase="surrogate", simulated=0), pd.DataFrame(state.rows)],
        ignore_index=True,
    )
    phases = {
        "level": scorer.surrogate.level,
        **{k: getattr(split, k) for k in ("surrogate_share", "screen_share", "surrogate_evals")},
        "surrogate_scored": len(first.scored),
        "surrogate_stopped_by": first.stopped_by,
        "surrogate_s": first.elapsed_s,
        "screened": state.counts["screen"],
        "screen_s": t2 - t1,
        "local": state.counts["local"],
        "local_s": t3 - t2,
        "local_predicted": state.predicted,
        "simulated": len(state.scored),
    }
    stopped = "space" if complete else stop
    return SearchResult(state.scored, history, t3 - t0, complete, stopped, phases=phases)


def optimize_hybrid(
    space: SearchSpace,
    scorer: HybridScorer,
    strategy: str = "anneal",
    budget_s: float | None = 60.0,
    *,
    budget_evals: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    split: HybridSplit | None = None,
    top_k: int = 5,
    settings: SimulatorSettings | None = None,
    engine: str | None = None,
    confirm_seed: int | None = None,
    progress: bool = False,
) -> Optimization:
    """`run_hybrid`, then `confirm` of its `top_k` best by simulation (simulated afresh with
    `confirm_seed`, by default `seed + 1`; `settings` and `engine` by default the hybrid
    scorer's): what `python -m chainnet.optimize scorer=hybrid` does."""
    result = run_hybrid(
        space, scorer, strategy, budget_s, budget_evals=budget_evals, seed=seed,
        batch_size=batch_size, split=split, progress=progress,
    )  # fmt: skip
    t0 = time.perf_counter()
    settings = scorer.simulator.settings if settings is None else settings
    engine = scorer.simulator.engine if engine is None else engine
    confirm_seed = seed + 1 if confirm_seed is None else confirm_seed
    table = confirm(space, result, scorer, top_k, settings, engine, confirm_seed)
    confirm_s = time.perf_counter() - t0
    return Optimization(
        space, scorer, strategy, Budget(budget_s, budget_evals), result, table, confirm_s
    )
