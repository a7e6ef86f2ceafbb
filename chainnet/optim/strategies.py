"""Search strategies, ask/tell: a strategy proposes candidates in batches (`ask`, given the share
of the budget spent) and learns their objective values (`tell`); `chainnet.optim.search` drives it.

- `random`: independent feasible draws;
- `greedy`: steepest descent over single-gene moves, restarted at random when stuck;
- `anneal`: simulated annealing, one chain per batch slot, temperature decaying with the budget
  spent;
- `genetic`: tournament selection, uniform crossover, mutation, (mu + lambda) survival;
- `exhaustive`: every feasible candidate (small problems, for the true optimum);
- `einet`: EINet's hybrid strategy: every combination of the first genes, then greedy coordinate
  descent over the rest;
- the baselines `exit_last`, `fixed_threshold`, `tc23` and `load_unaware`
  (`chainnet.optim.baselines`): the one deployment of a published policy, proposed once.

A strategy is built with the space, a random generator, the batch size and, where the search has
one, its evaluation budget (`budget_evals`: `einet` sizes its enumeration by it).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator

import numpy as np

from chainnet.optim.baselines import BASELINES, BaselineSettings, plan
from chainnet.optim.space import SearchSpace

STRATEGIES = ("random", "greedy", "anneal", "genetic", "exhaustive", "einet")  # the searches
EINET_SHARE = 0.5  # the most of an evaluation budget (or of the time) einet's enumeration takes
EINET_LIMIT = 4096  # the most combinations einet enumerates without an evaluation budget


def single_moves(space: SearchSpace, candidate: np.ndarray) -> list[np.ndarray]:
    """Every feasible candidate one gene away from `candidate`, genes then values in order."""
    return [m for g in space.free for m in gene_moves(space, candidate, int(g))]


def enumerated_genes(domains: np.ndarray, limit: int) -> int:
    """The largest k such that the first k `domains` have at most `limit` combinations."""
    k, combinations = 0, 1
    for d in domains:
        if combinations * int(d) > limit:
            break
        combinations *= int(d)
        k += 1
    return k


def gene_moves(space: SearchSpace, candidate: np.ndarray, gene: int) -> list[np.ndarray]:
    """Every feasible candidate that differs from `candidate` in `gene` only, values in order."""
    moves = []
    for v in range(int(space.domains[gene])):
        if v != candidate[gene]:
            c = candidate.copy()
            c[gene] = v
            if space.feasible(c):
                moves.append(c)
    return moves


class Strategy:
    def __init__(
        self,
        space: SearchSpace,
        rng: np.random.Generator,
        batch: int,
        budget_evals: int | None = None,
    ):
        self.space, self.rng, self.batch, self.budget_evals = space, rng, batch, budget_evals

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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.current, self.value = None, math.inf
        self.pending: list[np.ndarray] = []

    def _moves(self) -> list[np.ndarray]:
        moves = single_moves(self.space, self.current)
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
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
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.it = self.space.enumerate_feasible()

    def ask(self, spent):
        out = []
        for c in self.it:
            out.append(c)
            if len(out) == self.batch:
                break
        return out or None


class EINet(Strategy):
    """EINet's hybrid strategy. First every combination of the first k free genes, the others as
    in one random feasible base (a combination that does not fit, and that the greedy repair
    cannot fit without changing those k genes, is skipped): k is the largest whose combinations
    number at most `EINET_SHARE` of the evaluation budget (`EINET_LIMIT` without one), and the
    enumeration also ends at `EINET_SHARE` of a time budget. Then greedy coordinate descent from
    the best combination: each of the other genes in turn takes its best value, sweep after sweep
    until a sweep improves nothing; then sweeps over every gene likewise. At that local optimum it
    starts again from the next best combination, and from random points when none is left."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        free, evals = self.space.free, self.budget_evals
        limit = EINET_LIMIT if evals is None else max(1, int(EINET_SHARE * evals))
        self.k = enumerated_genes(self.space.domains[free], limit)
        self.head, self.tail = free[: self.k], free[self.k :]
        self.base = self.random()
        self.combos: Iterator[tuple[int, ...]] = itertools.product(
            *(range(int(self.space.domains[g])) for g in self.head)
        )
        self.mode = "enumerate"  # then "start" (a start is asked) and "move" (a gene's values)
        self.starts: list[tuple[float, np.ndarray]] = []  # the enumeration, best first
        self.current, self.value = self.base, math.inf
        self.sweep, self.queue, self.improved, self.full = self.tail, [], False, False

    def _combinations(self) -> list[np.ndarray]:
        out = []
        for combo in self.combos:
            c = self.base.copy()
            c[self.head] = combo
            if not self.space.feasible(c):
                c = self.space.repair(c, None)
                if c is None or not np.array_equal(c[self.head], combo):
                    continue
            out.append(c)
            if len(out) == self.batch:
                break
        return out

    def _start(self) -> list[np.ndarray]:
        self.mode = "start"
        return [self.starts.pop(0)[1] if self.starts else self.random()]

    def ask(self, spent):
        if self.mode == "enumerate":
            batch = self._combinations() if spent < EINET_SHARE else []
            if batch:
                return batch
            self.starts.sort(key=lambda vc: vc[0])
            return self._start()
        while True:
            if not self.queue:
                if not self.improved and self.full:  # a local optimum
                    return self._start()
                if not self.improved:
                    self.sweep, self.full = self.space.free, True
                self.queue, self.improved = [int(g) for g in self.sweep], False
            moves = gene_moves(self.space, self.current, self.queue.pop(0))
            if moves:
                return moves

    def tell(self, candidates, values):
        values = np.asarray(values, float)
        if self.mode == "enumerate":
            self.starts += list(zip(values.tolist(), candidates))
            return
        i = int(np.argmin(values))
        if self.mode == "start":
            self.mode, self.current, self.value = "move", candidates[i], float(values[i])
            self.sweep, self.queue, self.improved, self.full = self.tail, [], True, False
        elif values[i] < self.value - 1e-12:
            self.current, self.value, self.improved = candidates[i], float(values[i]), True


class Baseline(Strategy):
    """A published policy's one deployment (`chainnet.optim.baselines.plan`), proposed once;
    `plan` keeps what the policy says about it."""

    def __init__(self, *args, policy: str, settings: BaselineSettings | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.plan = plan(self.space, policy, settings)
        self.proposed = False

    def ask(self, spent):
        if self.proposed:
            return None
        self.proposed = True
        return [self.plan.candidate]


STRATEGY_CLASSES: dict[str, Callable[..., Strategy]] = {
    "random": RandomSearch,
    "greedy": Greedy,
    "anneal": Anneal,
    "genetic": Genetic,
    "exhaustive": Exhaustive,
    "einet": EINet,
    **{name: functools.partial(Baseline, policy=name) for name in BASELINES},
}
