"""Search strategies, ask/tell: a strategy proposes candidates in batches (`ask`, given the share
of the budget spent) and learns their objective values (`tell`); `chainnet.optim.search` drives it.

- `random`: independent feasible draws;
- `greedy`: steepest descent over single-gene moves, restarted at random when stuck;
- `anneal`: simulated annealing, one chain per batch slot, temperature decaying with the budget
  spent;
- `genetic`: tournament selection, uniform crossover, mutation, (mu + lambda) survival;
- `exhaustive`: every feasible candidate (small problems, for the true optimum).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from chainnet.optim.space import SearchSpace

STRATEGIES = ("random", "greedy", "anneal", "genetic", "exhaustive")


class Strategy:
    def __init__(self, space: SearchSpace, rng: np.random.Generator, batch: int):
        self.space, self.rng, self.batch = space, rng, batch

    def random(self) -> np.ndarray:
        c = self.space.random_candidate(self.rng)
        if c is None:
            raise ValueError(
                f"problem {self.space.problem.name}: could not draw a feasible placement"
            )
        return c

    def ask(self, spent: float) -> list[np.ndarray] | None:
        """The next batch (None: nothing left to propose); `spent`: the share of the budget used."""
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
        for g in self.space.free:
            for v in range(int(self.space.domains[g])):
                if v != self.current[g]:
                    c = self.current.copy()
                    c[g] = v
                    if self.space.feasible(c):
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
        return [self.space.neighbour(s, self.rng) for s in self.states]

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
                child = self.space.neighbour(child, self.rng)
            if not self.space.feasible(child):
                child = self.space.repair(child, self.rng)
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
        self.it = self.space.enumerate_feasible()

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
