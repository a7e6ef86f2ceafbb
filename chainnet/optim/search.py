"""The search loop (SPEC section 6): a strategy asks, a scorer scores, under a budget; then the best
candidates are confirmed by fresh simulation.

`run_search` runs a strategy (`chainnet.optim.strategies`) with a scorer (`chainnet.optim.scorers`)
until its budget runs out: `budget_s` seconds of wall clock, `budget_evals` candidates scored, or
both (whichever comes first); a small space can be used up before, and the search stops there
(with no time limit, it also stops after `STALL_ROUNDS` rounds in a row that propose nothing new).
Every candidate is scored once (a cache); `SearchResult.stopped_by` says what ended the search.
`confirm` simulates the best `top_k` distinct candidates afresh (a seed the search never used);
`optimize` does both and returns the best by simulation, with the QoS its scorer predicted and
the QoS simulated. `scorer=hybrid` runs in phases of its own (`chainnet.optim.hybrid`), on
these pieces.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from chainnet.optim.baselines import BASELINES, BaselineSettings, Plan
from chainnet.optim.scorers import Score, SimulatorScorer
from chainnet.optim.space import SearchSpace
from chainnet.optim.strategies import STRATEGIES, STRATEGY_CLASSES
from chainnet.sim import SimulatorSettings

STOPS = ("space", "budget_s", "budget_evals", "stall", "proposed")  # what can end a search
STALL_ROUNDS = 1000  # with no time limit: rounds in a row without a new candidate before it stops


@dataclass
class SearchResult:
    scored: dict[bytes, tuple[np.ndarray, Score]]
    history: pd.DataFrame  # elapsed_s, scored, best objective (after each batch)
    elapsed_s: float
    complete: bool  # every feasible candidate was scored
    stopped_by: str = "budget_s"  # one of STOPS
    best: list[tuple[np.ndarray, Score]] = field(default_factory=list)
    phases: dict[str, Any] = field(default_factory=dict)  # scorer=hybrid: what each phase spent
    plan: Plan | None = None  # a baseline strategy: its deployment and what it says about it

    def top(self, k: int) -> list[tuple[np.ndarray, Score]]:
        return sorted(self.scored.values(), key=lambda cs: cs[1].objective)[:k]


@dataclass(frozen=True)
class Budget:
    """Seconds of wall clock, candidates scored, or both: the search stops at whichever runs out
    first. None: no limit of that kind (but one of the two must be set)."""

    seconds: float | None = 60.0
    evals: int | None = None

    def __post_init__(self) -> None:
        s, n = self.seconds, self.evals
        if s is None and n is None:
            raise ValueError("budget: set budget_s, budget_evals or both")
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0):
            raise ValueError(f"budget_s: got {s!r}; must be > 0, or null")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"budget_evals: got {n!r}; an integer >= 1, or null")

    def evals_left(self, scored: int) -> float:
        return math.inf if self.evals is None else self.evals - scored

    def stop(self, elapsed: float, scored: int) -> str | None:
        """ "budget_s" or "budget_evals" if that budget has run out, else None."""
        if self.seconds is not None and elapsed >= self.seconds:
            return "budget_s"
        if self.evals is not None and scored >= self.evals:
            return "budget_evals"
        return None

    def spent(self, elapsed: float, scored: int) -> float:
        """The share of the budget used: the larger of the time and evaluation shares."""
        time_share = 0.0 if self.seconds is None else elapsed / self.seconds
        return time_share if self.evals is None else max(time_share, scored / self.evals)


def batch_for(scorer: Any, batch_size: int | None) -> int:
    """Candidates per round: `batch_size`, or 256 for the surrogate and 8 for the simulator."""
    if batch_size is None:
        return 256 if scorer.name == "surrogate" else 8
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size!r}; an integer >= 1, or null")
    return batch_size


def progress_bar(budget: Budget, desc: str, progress: bool) -> tqdm:
    """A bar over the budget's seconds, or its evaluations where it has no time limit."""
    by_time = budget.seconds is not None
    unit = "s" if by_time else "evals"
    return tqdm(
        total=round(budget.seconds, 1) if by_time else budget.evals,
        unit=unit,
        desc=desc,
        disable=not progress,
        bar_format=f"{{l_bar}}{{bar}}| {{n:.0f}}/{{total:.0f}} {unit} {{postfix}}",
    )


def run_search(
    space: SearchSpace,
    scorer: Any,
    strategy: str = "anneal",
    budget_s: float | None = 60.0,
    *,
    budget_evals: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
    baseline: BaselineSettings | None = None,
) -> SearchResult:
    """Search `space` with `strategy` and `scorer` until `budget_s` seconds pass or `budget_evals`
    candidates are scored (whichever first; None: no limit of that kind), or the space is used up.
    The budget is checked before every batch and between the scorer's chunks. With no time limit,
    a search that proposes no new candidate for `STALL_ROUNDS` rounds in a row stops too. A
    baseline strategy (settings: `baseline`) proposes its one deployment and stops ("proposed")."""
    if strategy not in STRATEGY_CLASSES:
        raise ValueError(f"strategy: got {strategy!r}; one of {(*STRATEGIES, *BASELINES)}")
    if scorer.name == "hybrid":
        raise ValueError(
            "scorer=hybrid runs in phases: use chainnet.optim.hybrid.run_hybrid or optimize_hybrid"
        )
    budget = Budget(budget_s, budget_evals)
    extra = {"settings": baseline} if strategy in BASELINES else {}
    strat = STRATEGY_CLASSES[strategy](
        space, np.random.default_rng(seed), batch_for(scorer, batch_size),
        budget_evals=budget.evals, **extra,
    )  # fmt: skip
    feasible = space.n_feasible  # a small space can be used up before the budget
    scored: dict[bytes, tuple[np.ndarray, Score]] = {}
    rows = []
    best = math.inf
    stop, idle = None, 0
    t0 = time.perf_counter()
    bar = progress_bar(budget, f"{strategy} search ({scorer.name})", progress)
    while stop is None:
        elapsed = time.perf_counter() - t0
        stop = budget.stop(elapsed, len(scored))
        if stop is not None:
            break
        cands = strat.ask(budget.spent(elapsed, len(scored)))
        if cands is None:
            stop = "proposed" if strategy in BASELINES else "space"
            break
        before = len(scored)
        stop = score_new(cands, scored, scorer, budget, t0)
        known = [(c, scored[c.tobytes()][1].objective) for c in cands if c.tobytes() in scored]
        if known:
            strat.tell([c for c, _ in known], np.array([v for _, v in known]))
            best = min(best, min(v for _, v in known))
        elapsed = time.perf_counter() - t0
        rows.append({"elapsed_s": elapsed, "scored": len(scored), "best_objective": best})
        if feasible is not None and len(scored) >= feasible:
            stop = stop or "space"
            break
        idle = idle + 1 if len(scored) == before else 0
        if budget.seconds is None and idle >= STALL_ROUNDS:
            stop = "stall"
        bar.n = round(min(elapsed, budget.seconds), 1) if budget.seconds else len(scored)
        bar.set_postfix_str(f"best {best:.4g}, {len(scored)} scored")
        bar.refresh()
    bar.close()
    result = SearchResult(
        scored, pd.DataFrame(rows), time.perf_counter() - t0, stop == "space", stop
    )
    result.plan = getattr(strat, "plan", None)
    return result


def score_new(
    cands: list[np.ndarray],
    scored: dict[bytes, tuple[np.ndarray, Score]],
    scorer: Any,
    budget: Budget,
    t0: float,
) -> str | None:
    """Score the candidates of `cands` not scored yet, a chunk at a time, into `scored`, while
    the budget lasts (its seconds counted from `t0`, its evaluations as the size of `scored`);
    the budget that ran out first if it stopped before all were scored."""
    todo, keys = [], set()
    for c in cands:
        k = c.tobytes()
        if k not in scored and k not in keys:
            keys.add(k)
            todo.append(c)
    for start in range(0, len(todo), scorer.chunk):
        stop = budget.stop(time.perf_counter() - t0, len(scored))
        if stop is not None:
            return stop
        chunk = todo[start : start + scorer.chunk]
        part = chunk[: int(min(len(chunk), budget.evals_left(len(scored))))]
        deadline = None if budget.seconds is None else t0 + budget.seconds
        for c, s in zip(part, scorer.score(part, deadline=deadline)):
            if s is None:  # its simulation ran past the time budget: not scored
                return "budget_s"
            scored[c.tobytes()] = (c, s)
        if len(part) < len(chunk):
            return "budget_evals"
    return None


def confirm(
    space: SearchSpace,
    result: SearchResult,
    scorer: Any,
    k: int = 5,
    settings: SimulatorSettings | None = None,
    engine: str = "fast",
    seed: int = 10_000,
) -> pd.DataFrame:
    """Simulate the best `k` scored candidates afresh (a seed the search never used); one row
    each, best by simulation first: rank, predicted and simulated objective, loss, accuracy."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k: got {k!r}; an integer >= 1")
    top = result.top(k)
    if not top:
        raise ValueError("the search scored no candidate: raise budget_s or budget_evals")
    table = confirm_candidates(space, top, scorer, settings, engine, seed)
    return table.sort_values("simulated_objective", kind="stable")


def confirm_candidates(
    space: SearchSpace,
    top: list[tuple[np.ndarray, Score]],
    scorer: Any,
    settings: SimulatorSettings | None = None,
    engine: str = "fast",
    seed: int = 10_000,
) -> pd.DataFrame:
    """Simulate the scored candidates `top` afresh (seed `seed`), in their order: one row each,
    predicted and simulated objective, loss, accuracy and per-service QoS."""
    sim = SimulatorScorer(space, settings, engine, seed)
    if any(s.services is None for _, s in top):  # the surrogate's per-service QoS, again
        predicted = scorer.score([c for c, _ in top], keep=True)
    else:
        predicted = [s for _, s in top]
    simulated = sim.score([c for c, _ in top])
    rows = []
    for rank, ((c, s), p, v) in enumerate(zip(top, predicted, simulated)):
        rows.append(
            {
                "search_rank": rank,
                "candidate": c,
                "predicted_objective": s.objective,
                "predicted_loss": s.loss,
                "predicted_accuracy": s.accuracy,
                "simulated_objective": v.objective,
                "simulated_loss": v.loss,
                "simulated_accuracy": v.accuracy,
                "predicted_services": p.services,
                "simulated_services": v.services,
            }
        )
    return pd.DataFrame(rows)


@dataclass
class Optimization:
    """What `optimize` returns: the search, the confirmation table (best by simulation first)
    and the seconds the confirmation took."""

    space: SearchSpace
    scorer: Any
    strategy: str
    budget: Budget
    result: SearchResult
    table: pd.DataFrame
    confirm_s: float

    @property
    def best(self) -> pd.Series:
        return self.table.iloc[0]

    @property
    def best_candidate(self) -> np.ndarray:
        return np.asarray(self.best["candidate"])


def optimize(
    space: SearchSpace,
    scorer: Any,
    strategy: str = "anneal",
    budget_s: float | None = 60.0,
    *,
    budget_evals: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    top_k: int = 5,
    settings: SimulatorSettings | None = None,
    engine: str = "fast",
    confirm_seed: int | None = None,
    progress: bool = False,
    baseline: BaselineSettings | None = None,
) -> Optimization:
    """`run_search`, then `confirm` of its `top_k` (simulated with `confirm_seed`, by default
    `seed + 1`): what `python -m chainnet.optimize` does."""
    result = run_search(
        space, scorer, strategy, budget_s, budget_evals=budget_evals, seed=seed,
        batch_size=batch_size, progress=progress, baseline=baseline,
    )  # fmt: skip
    t0 = time.perf_counter()
    confirm_seed = seed + 1 if confirm_seed is None else confirm_seed
    table = confirm(space, result, scorer, top_k, settings, engine, confirm_seed)
    confirm_s = time.perf_counter() - t0
    return Optimization(
        space, scorer, strategy, Budget(budget_s, budget_evals), result, table, confirm_s
    )
