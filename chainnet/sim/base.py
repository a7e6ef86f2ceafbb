"""What every engine shares: the steady-state run (warm-up, batch means, stopping rule).

An engine provides `start()` (schedule the first arrivals), `advance(until)` (process every event
before `until`), `now`, `counts_row()` (cumulative per-chain counters, the batch-means layout),
`snapshot_state()`, `in_system()` and `events`. Because the run loop is the same code for every
engine, two engines that process the same events give the same labels, bit for bit.
"""

from __future__ import annotations

import time

import numpy as np

from chainnet.scenario import Scenario
from chainnet.sim.result import SimulationResult, SimulatorSettings, build_result
from chainnet.sim.stats import ARRIVED, BatchMeans


class Engine:
    def __init__(
        self, scenario: Scenario, settings: SimulatorSettings | None = None, trace: bool = False
    ):
        self.scenario = scenario
        self.settings = settings or SimulatorSettings()
        self.trace: list[tuple] | None = [] if trace else None

    def start(self) -> None:
        raise NotImplementedError

    def advance(self, until: float) -> None:
        raise NotImplementedError

    @property
    def now(self) -> float:
        raise NotImplementedError

    def counts_row(self) -> np.ndarray:
        raise NotImplementedError

    def snapshot_state(self) -> dict:
        raise NotImplementedError

    def in_system(self) -> list[int]:
        raise NotImplementedError

    @property
    def events(self) -> int:
        raise NotImplementedError

    def run_until(self, horizon: float) -> list[tuple]:
        """Simulate exactly up to `horizon` (no warm-up, no stopping rule); return the trace."""
        self.start()
        self.advance(horizon)
        return self.trace if self.trace is not None else []

    def run(self, progress=None, deadline: float | None = None) -> SimulationResult:
        """Warm up, then run batches until the precision target or the arrival cap is reached.

        The cap bounds the whole run, warm-up included: when the warm-up would leave too few of the
        cap's arrivals for the minimum number of batches, it is cut (`warmup_time`), and
        `stop_reason` is `arrival_cap_in_warmup` however the batches ended (the labels may then
        carry the transient; their half-widths say whether the precision target was met).
        `deadline` (a `time.perf_counter()` value) stops the run between batches once passed,
        with `stop_reason` `deadline`: a caller's wall-clock budget, never a setting of the labels.
        """
        s = self.settings
        wall0 = time.perf_counter()
        chains = self.scenario.chains
        total_rate = sum(c.arrival_rate for c in chains)
        warmup, cut = warmup_time(self.scenario, s)
        self.start()
        self.advance(warmup)
        warm = self.snapshot_state()
        batches = BatchMeans(
            [len(c.stages) for c in chains], [c.arrival_rate for c in chains], s.min_batches
        )
        batches.add(warm["time"], self.counts_row())
        length = s.batch_arrivals / total_rate
        reason = None
        while reason is None:
            self.advance(self.now + length)
            row = self.counts_row()
            if batches.add(self.now, row):
                length *= 2.0
            arrived = int(row[batches.offsets[:-1] + ARRIVED].sum())
            if progress is not None:
                progress(arrived)
            if batches.converged(s.precision):
                reason = "precision"
            elif arrived >= s.max_arrivals:
                reason = "arrival_cap"
            elif deadline is not None and time.perf_counter() >= deadline:
                reason = "deadline"
        if cut and reason != "deadline":
            reason = "arrival_cap_in_warmup"
        end = self.snapshot_state()
        return build_result(
            self.scenario,
            warm,
            end,
            batches,
            in_system=self.in_system(),
            stop_reason=reason,
            events=self.events,
            wall_time=time.perf_counter() - wall0,
            settings=s,
        )


def warmup_time(scenario: Scenario, settings: SimulatorSettings) -> tuple[float, bool]:
    """(the warm-up's length, whether the arrival cap cut it short).

    The expected time of `warmup_arrivals` arrivals, and at least ten times the longest chain's
    total mean service time, so that slow chains are past their transient; but never the time of
    more arrivals than the cap leaves for the minimum number of batches (and at most half the cap
    when it is smaller than that), so that the cap bounds the whole run.
    """
    total_rate = sum(c.arrival_rate for c in scenario.chains)
    longest = max(sum(scenario.mean_service_time(st) for st in c.stages) for c in scenario.chains)
    wanted = max(settings.warmup_arrivals / total_rate, 10.0 * longest)
    # room for the minimum number of batches after it (at least half the cap)
    room = settings.min_batches * settings.batch_arrivals
    allowed = max(settings.max_arrivals - room, 0.5 * settings.max_arrivals) / total_rate
    return (allowed, True) if wanted > allowed else (wanted, False)
