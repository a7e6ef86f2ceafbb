"""Random streams of a simulation: one per chain's arrivals, per stage's service and per exit.

Every stream is spawned from one `numpy.random.SeedSequence`, so a run depends only on its seed, and
two engines fed the same streams must give the same per-job outcomes. Values are drawn in blocks for
speed, and each stream is consumed in a fixed order (arrivals in time order; service requirements
in the order jobs are admitted to the stage; exit decisions in the order jobs finish the stage),
which is what makes the engines comparable job by job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import chain as _chain

import numpy as np

from chainnet.scenario import Scenario, Stage
from chainnet.sim.rules import EXIT_DRAW, draws_requirement, exit_kind

BLOCK = 4096


def _blocks(draw: Callable[[], np.ndarray]) -> Iterator[float]:
    # iter(callable, sentinel) never sees the sentinel: an endless stream of python floats.
    return _chain.from_iterable(iter(lambda: draw().tolist(), None))


Draw = Callable[[], np.ndarray]  # the next block of a stream


def interarrival_draw(gen: np.random.Generator, rate: float) -> Draw:
    scale = 1.0 / rate
    return lambda: gen.standard_exponential(BLOCK) * scale


def requirement_draw(gen: np.random.Generator, stage: Stage) -> Draw | None:
    """Service requirements in work units; None when they are deterministic (no draw needed)."""
    if not draws_requirement(stage):
        return None
    if stage.distribution == "exp":
        work = stage.work
        return lambda: gen.standard_exponential(BLOCK) * work
    # general: gamma with mean `work` and squared coefficient of variation `scv`.
    shape, scale = 1.0 / stage.scv, stage.work * stage.scv
    return lambda: gen.standard_gamma(shape, BLOCK) * scale


def uniform_draw(gen: np.random.Generator) -> Draw:
    return lambda: gen.random(BLOCK)


class Streams:
    """All the random streams of one run of `scenario` from `seed`.

    `*_draws` give each stream's next block (for an engine that keeps its own buffers);
    `arrivals`, `requirements` and `exits` are the same streams as iterators of floats.
    """

    def __init__(self, scenario: Scenario, seed: int | np.random.SeedSequence):
        if isinstance(seed, np.random.SeedSequence):
            # A copy: spawning from the caller's object would change what it gives next time.
            ss = np.random.SeedSequence(
                seed.entropy, spawn_key=seed.spawn_key, pool_size=seed.pool_size
            )
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: got {seed!r}; expected an integer >= 0")
        else:
            ss = np.random.SeedSequence(int(seed))
        n_stages = sum(len(c.stages) for c in scenario.chains)
        children = iter(ss.spawn(len(scenario.chains) + 2 * n_stages))
        gens = lambda: np.random.default_rng(next(children))  # noqa: E731
        self.arrival_draws = [interarrival_draw(gens(), c.arrival_rate) for c in scenario.chains]
        self.requirement_draws: list[list[Draw | None]] = []
        self.exit_draws: list[list[Draw | None]] = []
        for c in scenario.chains:
            req, ex = [], []
            for st in c.stages:
                req.append(requirement_draw(gens(), st))
                gen = gens()
                ex.append(uniform_draw(gen) if exit_kind(st.exit_prob) == EXIT_DRAW else None)
            self.requirement_draws.append(req)
            self.exit_draws.append(ex)
        self.arrivals = [_blocks(d) for d in self.arrival_draws]
        self.requirements = [[d and _blocks(d) for d in row] for row in self.requirement_draws]
        self.exits = [[d and _blocks(d) for d in row] for row in self.exit_draws]
