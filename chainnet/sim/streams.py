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

BLOCK = 4096


def _blocks(draw: Callable[[], np.ndarray]) -> Iterator[float]:
    # iter(callable, sentinel) never sees the sentinel: an endless stream of python floats.
    return _chain.from_iterable(iter(lambda: draw().tolist(), None))


def interarrival_stream(gen: np.random.Generator, rate: float) -> Iterator[float]:
    scale = 1.0 / rate
    return _blocks(lambda: gen.standard_exponential(BLOCK) * scale)


def requirement_stream(gen: np.random.Generator, stage: Stage) -> Iterator[float] | None:
    """Service requirements in work units; None when they are deterministic (no draw needed)."""
    if stage.distribution == "det":
        return None
    if stage.distribution == "exp":
        work = stage.work
        return _blocks(lambda: gen.standard_exponential(BLOCK) * work)
    # general: gamma with mean `work` and squared coefficient of variation `scv`.
    shape, scale = 1.0 / stage.scv, stage.work * stage.scv
    return _blocks(lambda: gen.standard_gamma(shape, BLOCK) * scale)


def uniform_stream(gen: np.random.Generator) -> Iterator[float]:
    return _blocks(lambda: gen.random(BLOCK))


class Streams:
    """All the random streams of one run of `scenario` from `seed`."""

    def __init__(self, scenario: Scenario, seed: int | np.random.SeedSequence):
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        n_stages = sum(len(c.stages) for c in scenario.chains)
        children = iter(ss.spawn(len(scenario.chains) + 2 * n_stages))
        gens = lambda: np.random.default_rng(next(children))  # noqa: E731
        self.arrivals = [interarrival_stream(gens(), c.arrival_rate) for c in scenario.chains]
        self.requirements: list[list[Iterator[float] | None]] = []
        self.exits: list[list[Iterator[float] | None]] = []
        for c in scenario.chains:
            req, ex = [], []
            for st in c.stages:
                req.append(requirement_stream(gens(), st))
                gen = gens()
                ex.append(uniform_stream(gen) if 0.0 < st.exit_prob < 1.0 else None)
            self.requirements.append(req)
            self.exits.append(ex)
