"""The simulator's rules that every engine must apply alike, each written once.

Plain Python on scalars. The layout (`chainnet.sim.layout`) applies the build-time rules to a
scenario; the SimPy engine calls the run-time rules as they are, and the fast kernel calls the same
functions compiled by numba (`chainnet.sim.kernel`), so both evaluate the same expressions. The
oracle (`chainnet.sim.oracle`) writes its rules independently on purpose: it is the check.

- Memory: a limit is the stated memory with a relative slack of `MEMORY_SLACK`, so that adding and
  removing the same amounts in another order never flips an admission; a job fits while the memory
  held plus its own stays within the limit.
- A stage is *limited* when admitting a job there needs the memory and region bookkeeping: its
  device belongs to a region, or the job holds memory on a device with a memory limit.
- Exits: a stage with `exit_prob` 0 never exits, one with 1 always does, and only one in between
  draws a uniform `u` per finishing job (its own stream); the job goes on when `u >= exit_prob`.
"""

from __future__ import annotations

import math

from chainnet.scenario import MEMORY_SLACK, Stage

EXIT_NEVER, EXIT_ALWAYS, EXIT_DRAW = 0, 1, 2


def job_limit(capacity: int | None) -> float:
    """A region's job capacity; no capacity is no limit."""
    return math.inf if capacity is None else capacity


def memory_limit(memory: float | None) -> float:
    """The memory a device or region may hold, slack included; no memory is no limit."""
    return math.inf if memory is None else memory * (1 + MEMORY_SLACK)


def memory_fits(held: float, need: float, limit: float) -> bool:
    """True when `need` more memory fits beside `held` under `limit` (from `memory_limit`)."""
    return held + need <= limit


def is_limited(in_region: bool, job_memory: float, device_memory_limit: float) -> bool:
    """True when a stage needs the memory and region bookkeeping (see the module docstring)."""
    return in_region or (job_memory > 0 and device_memory_limit < math.inf)


def exit_kind(exit_prob: float) -> int:
    """EXIT_NEVER, EXIT_ALWAYS or EXIT_DRAW (only the last draws from the stage's exit stream)."""
    if exit_prob <= 0.0:
        return EXIT_NEVER
    return EXIT_ALWAYS if exit_prob >= 1.0 else EXIT_DRAW


def moves_on(kind: int, u: float, exit_prob: float) -> bool:
    """True when a job that finished a stage (not the last) goes on to the next stage.

    `u` is the exit stream's next value when `kind` is EXIT_DRAW, and is not read otherwise.
    """
    return kind == EXIT_NEVER or (kind == EXIT_DRAW and u >= exit_prob)


def draws_requirement(stage: Stage) -> bool:
    """True when the stage's service requirement is random (drawn from its own stream)."""
    return stage.distribution != "det"
