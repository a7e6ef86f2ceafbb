"""Search placements and exit thresholds under a wall-clock budget (SPEC section 6).

A strategy proposes candidates in batches (ask) and learns their objective values (tell); a scorer
gives those values, from the surrogate (a whole batch in one forward pass) or from the simulator
(one simulation per candidate, the baseline). Every candidate is scored once (a cache). At the end
the best `top_k` distinct candidates are simulated afresh and the best by simulation is returned,
with the QoS its scorer predicted and the QoS simulated.

Strategies: `random`; `greedy` (steepest descent over single-gene moves, restarted at random when
stuck); `anneal` (simulated annealing, one chain per batch slot, temperature decaying with the
budget spent); `genetic` (tournament selection, uniform crossover, mutation, (mu + lambda)
survival); `exhaustive` (every feasible candidate; small problems, for the true optimum).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from chainnet.problem import Problem
from chainnet.sim import SimulatorSettings, simulate

STRATEGIES = ("random", "greedy", "anneal", "genetic", "exhaustive")
SCORERS = ("surrogate", "simulator")
QOS = ("throughput", "loss_ratio", "response_time", "accuracy")  # per service, kept at the end


# ---- scorers: candidates -> (objective, loss ratio, accuracy) ---------------------------------
@dataclass
class Score:
    objective: float
    loss: float
    accuracy: float
    services: pd.DataFrame | None = None  # per service QoS, kept for the final candidates


class SurrogateScorer:
    """Scores a whole batch with one forward pass of the surrogate."""

    name = "surrogate"
    chunk = 10**9  # the whole batch at once

    def __init__(self, problem: Problem, surrogate):
        self.problem, self.surrogate = problem, surrogate

    def score(self, candidates: list[np.ndarray], keep: bool = False) -> list[Score]:
        scenarios = [self.problem.scenario(c) for c in candidates]
        arrays = self.surrogate.predict_arrays(scenarios)
        n = len(self.problem.services)  # one chain per service, in order
        loss = arrays["loss_ratio"].reshape(len(candidates), n)
        acc = arrays["accuracy"].reshape(len(candidates), n)
        qos = {k: arrays[k].reshape(len(candidates), n) for k in QOS} if keep else {}
        names = [s.name for s in self.problem.services]
        out = []
        for i in range(len(candidates)):
            obj, lo, ac = self.problem.objective_value(loss[i], acc[i])
            services = (
                pd.DataFrame({"service": names, **{k: v[i] for k, v in qos.items()}})
                if keep
                else None
            )
            out.append(Score(obj, lo, ac, services))
        return out


class SimulatorScorer:
    """Scores candidates one simulation each (the baseline a surrogate must beat)."""

    name = "simulator"
    chunk = 1  # the budget is checked between simulations

    def __init__(
        self,
        problem: Problem,
        settings: SimulatorSettings | None = None,
        engine: str = "fast",
        seed: int = 0,
    ):
        self.problem, self.settings, self.engine, self.seed = problem, settings, engine, seed

    def score(self, candidates: list[np.ndarray], keep: bool = False) -> list[Score]:
        out = []
        for c in candidates:
            res = simulate(self.problem.scenario(c), self.seed, self.settings, engine=self.engine)
            df = res.chain_frame()
            loss = df["loss_ratio"].to_numpy(float)
            acc = df["accuracy"].to_numpy(float)
            obj, lo, ac = self.problem.objective_value(loss, acc)
            services = pd.DataFrame({"service": df["chain"], **{k: df[k] for k in QOS}})
            out.append(Score(obj, lo, ac, services))  # kept always: it costs nothing here
        return out


# ---- strategies: ask for candidates, tell their objective values -------------------------------
class Strategy:
    def __init__(self, problem: Problem, rng: np.random.Generator, batch: int):
        self.problem, self.rng, self.batch = problem, rng, batch

    def random(self) -> np.ndarray:
        c = self.problem.random_candidate(self.rng)
        if c is None:
            raise ValueError(f"problem {self.problem.name}: could not draw a feasible placement")
        return c

    def ask(self, spent: float) -> list[np.ndarray] | None:  # spent: share of the budget used
        raise NotImplementedError

    def tell(self, candidates: list[np.ndarray], values: np.ndarray) -> None:
        pass


class RandomSearch(Strategy):
    def ask(self, spent):
        return [self.random() for _ in range(self.batch)]


class Greedy(Strategy):
    """Steepest descent over single-gene moves: the moves from the current point are scored a
    batch at a time; the best move is taken as soon as a batch improves on the current point, and
    only when every move has been scored without improvement (a local optimum) does the search
    restart from a random point."""

    def __init__(self, *args):
        super().__init__(*args)
        self.current, self.value = None, math.inf
        self.pending: list[np.ndarray] = []

    def _moves(self) -> list[np.ndarray]:
        moves = []
        for g in np.flatnonzero(self.problem.domains > 1):
            for v in range(int(self.problem.domains[g])):
                if v != self.current[g]:
                    c = self.current.copy()
                    c[g] = v
                    if self.problem.feasible(c):
                        moves.append(c)
        return [moves[i] for i in self.rng.permutation(len(moves))]

    def ask(self, spent):
        if self.current is None:
            return [self.random()]
        if not self.pending:
            self.pending = self._moves()
            if not self.pending:  # nowhere to move
                self.current = None
                return [self.random()]
        batch, self.pending = self.pending[: self.batch], self.pending[self.batch :]
        return batch

    def tell(self, candidates, values):
        i = int(np.argmin(values))
        if self.current is None or values[i] < self.value - 1e-12:
            self.current, self.value = candidates[i], float(values[i])
            self.pending = []
        elif not self.pending:  # every move scored, none better: a local optimum
            self.current, self.value = None, math.inf


class Anneal(Strategy):
    """`batch` annealing chains; each proposes a neighbour per round, accepted by Metropolis at
    temperature t0 * (t1 / t0) ** spent, t0 set from the spread of the first round's values."""

    def __init__(self, *args):
        super().__init__(*args)
        self.states: list[np.ndarray] | None = None
        self.values = None
        self.t0 = None
        self.spent = 0.0

    def ask(self, spent):
        self.spent = spent
        if self.states is None:
            return [self.random() for _ in range(self.batch)]
        return [self.problem.neighbour(s, self.rng) for s in self.states]

    def tell(self, candidates, values):
        values = np.asarray(values, float)
        if self.states is None:
            self.states, self.values = list(candidates), values
            spread = float(np.std(values)) if len(values) > 1 else 0.0
            self.t0 = max(spread, 1e-3)
            return
        t = self.t0 * (1e-3) ** min(self.spent, 1.0)
        for i, (c, v) in enumerate(zip(candidates, values)):
            if i >= len(self.states):
                break
            if v <= self.values[i] or self.rng.random() < math.exp(-(v - self.values[i]) / t):
                self.states[i], self.values[i] = c, v


class Genetic(Strategy):
    """A population of `batch`; tournament selection, uniform crossover, one-gene mutation,
    repair of infeasible children, survival of the best of parents and children."""

    def __init__(self, *args):
        super().__init__(*args)
        self.pop: list[np.ndarray] | None = None
        self.fit = None

    def _tournament(self) -> np.ndarray:
        idx = self.rng.choice(len(self.pop), size=min(3, len(self.pop)), replace=False)
        return self.pop[min(idx, key=lambda i: self.fit[i])]

    def ask(self, spent):
        if self.pop is None:
            return [self.random() for _ in range(self.batch)]
        children = []
        for _ in range(self.batch):
            a, b = self._tournament(), self._tournament()
            child = np.where(self.rng.random(len(a)) < 0.5, a, b)
            if self.rng.random() < 0.7:
                child = self.problem.neighbour(child, self.rng)
            if not self.problem.feasible(child):
                child = self.problem.repair(child, self.rng)
                if child is None:
                    child = self.random()
            children.append(child)
        return children

    def tell(self, candidates, values):
        values = list(np.asarray(values, float))
        if self.pop is None:
            self.pop, self.fit = list(candidates), values
            return
        merged = list(zip(self.pop + list(candidates), self.fit + values))
        seen, keep = set(), []
        for c, v in sorted(merged, key=lambda cv: cv[1]):
            key = c.tobytes()
            if key not in seen:
                seen.add(key)
                keep.append((c, v))
        keep = keep[: self.batch]
        self.pop, self.fit = [c for c, _ in keep], [v for _, v in keep]


class Exhaustive(Strategy):
    def __init__(self, *args):
        super().__init__(*args)
        self.it = self.problem.enumerate_feasible()

    def ask(self, spent):
        out = []
        for c in self.it:
            out.append(c)
            if len(out) == self.batch:
                break
        return out or None


STRATEGY_CLASSES: dict[str, Callable[..., Strategy]] = {
    "random": RandomSearch,
    "greedy": Greedy,
    "anneal": Anneal,
    "genetic": Genetic,
    "exhaustive": Exhaustive,
}


# ---- the driver --------------------------------------------------------------------------------
@dataclass
class SearchResult:
    scored: dict[bytes, tuple[np.ndarray, Score]]
    history: pd.DataFrame  # elapsed_s, scored, best objective (after each batch)
    elapsed_s: float
    complete: bool  # every feasible candidate was scored
    best: list[tuple[np.ndarray, Score]] = field(default_factory=list)

    def top(self, k: int) -> list[tuple[np.ndarray, Score]]:
        return sorted(self.scored.values(), key=lambda cs: cs[1].objective)[:k]


def run_search(
    problem: Problem,
    scorer,
    strategy: str = "anneal",
    budget_s: float = 60.0,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> SearchResult:
    if strategy not in STRATEGY_CLASSES:
        raise ValueError(f"strategy: got {strategy!r}; one of {STRATEGIES}")
    if not budget_s > 0:
        raise ValueError(f"budget_s: got {budget_s}; must be > 0")
    if batch_size is None:
        batch = 256 if scorer.name == "surrogate" else 8
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size!r}; an integer >= 1, or null")
    else:
        batch = batch_size
    rng = np.random.default_rng(seed)
    strat = STRATEGY_CLASSES[strategy](problem, rng, batch)
    # A small space can be used up before the budget: then the search stops, complete.
    feasible = (
        sum(1 for _ in problem.enumerate_feasible()) if problem.space_size() <= 20_000 else None
    )
    scored: dict[bytes, tuple[np.ndarray, Score]] = {}
    rows = []
    best = math.inf
    complete = False
    t0 = time.perf_counter()
    bar = tqdm(
        total=round(budget_s, 1),
        unit="s",
        desc=f"{strategy} search ({scorer.name})",
        disable=not progress,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}",
    )
    out_of_time = False
    while not out_of_time:
        elapsed = time.perf_counter() - t0
        if elapsed >= budget_s:
            break
        cands = strat.ask(elapsed / budget_s)
        if cands is None:
            complete = True
            break
        todo, keys = [], set()
        for c in cands:
            k = c.tobytes()
            if k not in scored and k not in keys:
                keys.add(k)
                todo.append(c)
        for start in range(0, len(todo), scorer.chunk):
            if time.perf_counter() - t0 >= budget_s:
                out_of_time = True
                break
            part = todo[start : start + scorer.chunk]
            for c, s in zip(part, scorer.score(part)):
                scored[c.tobytes()] = (c, s)
        known = [(c, scored[c.tobytes()][1].objective) for c in cands if c.tobytes() in scored]
        if known:
            strat.tell([c for c, _ in known], np.array([v for _, v in known]))
            best = min(best, min(v for _, v in known))
        elapsed = time.perf_counter() - t0
        rows.append({"elapsed_s": elapsed, "scored": len(scored), "best_objective": best})
        if feasible is not None and len(scored) >= feasible:
            complete = True
            break
        bar.n = round(min(elapsed, budget_s), 1)
        bar.set_postfix_str(f"best {best:.4g}, {len(scored)} scored")
        bar.refresh()
    bar.close()
    return SearchResult(
        scored, pd.DataFrame(rows), time.perf_counter() - t0, complete and not out_of_time
    )


def confirm(
    problem: Problem,
    result: SearchResult,
    scorer,
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
        raise ValueError("the search scored no candidate: raise budget_s")
    sim = SimulatorScorer(problem, settings, engine, seed)
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
    return pd.DataFrame(rows).sort_values("simulated_objective", kind="stable")
