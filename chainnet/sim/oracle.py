"""An independent reference engine: a plain event list, written for clarity rather than speed.

It shares nothing with the SimPy engine but the scenario and the random streams, and keeps its state
differently (lists of resident jobs; processor sharing by decrementing every job's remaining work).
Tests run both on the same streams and require the same outcome for every job.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from chainnet.scenario import MEMORY_SLACK, Scenario
from chainnet.sim.result import OUTCOME_COMPLETE, OUTCOME_DROP, OUTCOME_EXIT
from chainnet.sim.streams import Streams

_ARRIVAL, _FCFS_DONE, _PS_DONE = 0, 1, 2


@dataclass
class OracleRun:
    """Trace rows are (chain, arrival time, outcome, stage, time of leaving)."""

    trace: list[tuple] = field(default_factory=list)
    arrived: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    in_system: list[int] = field(default_factory=list)
    events: int = 0


def _limit(x):
    return math.inf if x is None else x


class _Oracle:
    """The state of one oracle run and a method per event kind."""

    def __init__(self, scenario: Scenario, seed: int | np.random.SeedSequence):
        self.sc = scenario
        self.streams = Streams(scenario, seed)
        n_dev = len(scenario.devices)
        self.dev_index = {d.name: i for i, d in enumerate(scenario.devices)}
        # A limit set = (member devices, job capacity, memory); devices, then explicit regions.
        self.limits = [
            ({i}, _limit(d.capacity), _limit(d.memory)) for i, d in enumerate(scenario.devices)
        ] + [
            ({self.dev_index[n] for n in r.devices}, _limit(r.capacity), _limit(r.memory))
            for r in scenario.regions
        ]
        self.jobs_at = [[] for _ in range(n_dev)]  # resident jobs per device, FCFS order
        self.remaining = [{} for _ in range(n_dev)]  # PS: job id -> remaining work
        self.ps_version = [0] * n_dev
        self.ps_clock = [0.0] * n_dev
        self.job_info: dict[int, list] = {}  # id -> [chain, stage, arrival time, requirement]
        n_chains = len(scenario.chains)
        self.run = OracleRun(
            arrived=[0] * n_chains, completed=[0] * n_chains, dropped=[0] * n_chains
        )
        self.queue: list[tuple] = []
        self.seq = 0
        self.next_id = 0

    def push(self, t, kind, payload) -> None:
        """Schedule an event; `seq` breaks ties in time by order of scheduling."""
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, kind, payload))

    # ---- admission -----------------------------------------------------------------------------
    def occupancy(self, members) -> tuple[int, float]:
        """Jobs and memory resident on the devices `members`."""
        n = sum(len(self.jobs_at[d]) for d in members)
        chains = self.sc.chains
        mem = sum(
            chains[self.job_info[j][0]].stages[self.job_info[j][1]].job_memory
            for d in members
            for j in self.jobs_at[d]
        )
        return n, mem

    def fits(self, d, need_mem) -> bool:
        """Whether one more job needing `need_mem` fits every limit set device `d` belongs to."""
        for members, cap, memlim in self.limits:
            if d not in members:
                continue
            n, mem = self.occupancy(members)
            if n + 1 > cap or mem + need_mem > memlim * (1 + MEMORY_SLACK):
                return False
        return True

    def enter(self, job, now) -> None:
        """Admit `job` at its current stage (drawing its requirement) or drop it."""
        c, k, t0, _ = self.job_info[job]
        stage = self.sc.chains[c].stages[k]
        d = self.dev_index[stage.device]
        if not self.fits(d, stage.job_memory):
            self.run.dropped[c] += 1
            self.run.trace.append((c, t0, OUTCOME_DROP, k, now))
            del self.job_info[job]
            return
        draw = self.streams.requirements[c][k]
        req = stage.work if draw is None else next(draw)
        self.job_info[job][3] = req
        if self.sc.devices[d].discipline == "ps":
            self.ps_advance(d, now)
            self.jobs_at[d].append(job)
            self.remaining[d][job] = req
            self.ps_reschedule(d, now)
        else:
            self.jobs_at[d].append(job)
            if len(self.jobs_at[d]) == 1:
                self.push(now + req / self.sc.devices[d].speed, _FCFS_DONE, job)

    def leave_stage(self, job, now) -> None:
        """`job` has finished its stage: it completes, exits early or enters its next stage."""
        c, k, t0, _ = self.job_info[job]
        chain = self.sc.chains[c]
        stage = chain.stages[k]
        last = k == len(chain.stages) - 1
        if not last and 0.0 < stage.exit_prob < 1.0:
            exits = next(self.streams.exits[c][k]) < stage.exit_prob
        else:
            exits = stage.exit_prob >= 1.0
        if last or exits:
            self.run.completed[c] += 1
            self.run.trace.append((c, t0, OUTCOME_COMPLETE if last else OUTCOME_EXIT, k, now))
            del self.job_info[job]
        else:
            self.job_info[job][1] = k + 1
            self.enter(job, now)

    # ---- processor sharing ---------------------------------------------------------------------
    def ps_advance(self, d, now) -> None:
        """Take from every job at PS device `d` its share of the work done since the last call."""
        n = len(self.jobs_at[d])
        if n:
            share = (now - self.ps_clock[d]) * self.sc.devices[d].speed / n
            for j in self.remaining[d]:
                self.remaining[d][j] -= share
        self.ps_clock[d] = now

    def ps_next(self, d):
        """The job at PS device `d` with the least remaining work (ties: the oldest id)."""
        rem = self.remaining[d]
        return min(rem, key=lambda j: (rem[j], j))

    def ps_reschedule(self, d, now) -> None:
        """Schedule device `d`'s next PS completion, superseding any pending one."""
        self.ps_version[d] += 1
        if self.remaining[d]:
            j = self.ps_next(d)
            n = len(self.jobs_at[d])
            delay = max(self.remaining[d][j], 0.0) * n / self.sc.devices[d].speed
            self.push(now + delay, _PS_DONE, (d, self.ps_version[d]))

    # ---- events --------------------------------------------------------------------------------
    def on_arrival(self, c, now) -> None:
        """A new job of chain `c` arrives (and the chain's next arrival is scheduled)."""
        self.push(now + next(self.streams.arrivals[c]), _ARRIVAL, c)
        self.run.events += 1
        self.run.arrived[c] += 1
        self.next_id += 1
        self.job_info[self.next_id] = [c, 0, now, 0.0]
        self.enter(self.next_id, now)

    def on_fcfs_done(self, job, now) -> None:
        """`job` ends service at its FCFS device, which starts the next waiting job."""
        self.run.events += 1
        c, k = self.job_info[job][:2]
        d = self.dev_index[self.sc.chains[c].stages[k].device]
        self.jobs_at[d].pop(0)
        if self.jobs_at[d]:
            waiting = self.jobs_at[d][0]
            self.push(
                now + self.job_info[waiting][3] / self.sc.devices[d].speed, _FCFS_DONE, waiting
            )
        self.leave_stage(job, now)

    def on_ps_done(self, d, version, now) -> None:
        """A PS completion at device `d`, unless a later change of population superseded it."""
        if version != self.ps_version[d]:
            return
        self.run.events += 1
        self.ps_advance(d, now)
        job = self.ps_next(d)
        del self.remaining[d][job]
        self.jobs_at[d].remove(job)
        self.ps_reschedule(d, now)
        self.leave_stage(job, now)

    def simulate(self, horizon: float) -> OracleRun:
        """Run every event before `horizon`; count the jobs still in the system."""
        for c in range(len(self.sc.chains)):
            self.push(next(self.streams.arrivals[c]), _ARRIVAL, c)
        while self.queue and self.queue[0][0] < horizon:
            now, _, kind, payload = heapq.heappop(self.queue)
            if kind == _ARRIVAL:
                self.on_arrival(payload, now)
            elif kind == _FCFS_DONE:
                self.on_fcfs_done(payload, now)
            else:
                self.on_ps_done(*payload, now)
        counts = [0] * len(self.sc.chains)
        for c, _, _, _ in self.job_info.values():
            counts[c] += 1
        self.run.in_system = counts
        return self.run


def run_oracle(scenario: Scenario, seed: int | np.random.SeedSequence, horizon: float) -> OracleRun:
    """Simulate `scenario` over [0, horizon) and return every job's outcome."""
    return _Oracle(scenario, seed).simulate(horizon)
