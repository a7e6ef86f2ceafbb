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


def run_oracle(scenario: Scenario, seed: int | np.random.SeedSequence, horizon: float) -> OracleRun:
    """Simulate `scenario` over [0, horizon) and return every job's outcome."""
    streams = Streams(scenario, seed)
    n_dev = len(scenario.devices)
    dev_index = {d.name: i for i, d in enumerate(scenario.devices)}

    def limit(x):
        return math.inf if x is None else x

    # A limit set = (member devices, job capacity, memory); devices first, then explicit regions.
    limits = [({i}, limit(d.capacity), limit(d.memory)) for i, d in enumerate(scenario.devices)] + [
        ({dev_index[n] for n in r.devices}, limit(r.capacity), limit(r.memory))
        for r in scenario.regions
    ]
    jobs_at = [[] for _ in range(n_dev)]  # resident jobs per device, FCFS order
    remaining = [{} for _ in range(n_dev)]  # PS: job id -> remaining work
    ps_version = [0] * n_dev
    ps_clock = [0.0] * n_dev
    job_info: dict[int, list] = {}  # id -> [chain, stage, arrival time, requirement]
    run = OracleRun(
        arrived=[0] * len(scenario.chains),
        completed=[0] * len(scenario.chains),
        dropped=[0] * len(scenario.chains),
    )
    queue: list[tuple] = []
    seq = 0
    next_id = 0

    def push(t, kind, payload):
        nonlocal seq
        seq += 1
        heapq.heappush(queue, (t, seq, kind, payload))

    def occupancy(members):
        n = sum(len(jobs_at[d]) for d in members)
        mem = sum(
            scenario.chains[job_info[j][0]].stages[job_info[j][1]].job_memory
            for d in members
            for j in jobs_at[d]
        )
        return n, mem

    def fits(d, need_mem):
        for members, cap, memlim in limits:
            if d not in members:
                continue
            n, mem = occupancy(members)
            if n + 1 > cap or mem + need_mem > memlim * (1 + MEMORY_SLACK):
                return False
        return True

    def ps_advance(d, now):
        n = len(jobs_at[d])
        if n:
            share = (now - ps_clock[d]) * scenario.devices[d].speed / n
            for j in remaining[d]:
                remaining[d][j] -= share
        ps_clock[d] = now

    def ps_reschedule(d, now):
        ps_version[d] += 1
        if remaining[d]:
            j = min(remaining[d], key=lambda j: (remaining[d][j], j))
            n = len(jobs_at[d])
            delay = max(remaining[d][j], 0.0) * n / scenario.devices[d].speed
            push(now + delay, _PS_DONE, (d, ps_version[d]))

    def enter(job, now):
        c, k, t0, _ = job_info[job]
        stage = scenario.chains[c].stages[k]
        d = dev_index[stage.device]
        if not fits(d, stage.job_memory):
            run.dropped[c] += 1
            run.trace.append((c, t0, OUTCOME_DROP, k, now))
            del job_info[job]
            return
        draw = streams.requirements[c][k]
        req = stage.work if draw is None else next(draw)
        job_info[job][3] = req
        if scenario.devices[d].discipline == "ps":
            ps_advance(d, now)
            jobs_at[d].append(job)
            remaining[d][job] = req
            ps_reschedule(d, now)
        else:
            jobs_at[d].append(job)
            if len(jobs_at[d]) == 1:
                push(now + req / scenario.devices[d].speed, _FCFS_DONE, job)

    def leave_stage(job, d, now):
        c, k, t0, _ = job_info[job]
        chain = scenario.chains[c]
        stage = chain.stages[k]
        last = k == len(chain.stages) - 1
        if not last and 0.0 < stage.exit_prob < 1.0:
            exits = next(streams.exits[c][k]) < stage.exit_prob
        else:
            exits = stage.exit_prob >= 1.0
        if last or exits:
            run.completed[c] += 1
            run.trace.append((c, t0, OUTCOME_COMPLETE if last else OUTCOME_EXIT, k, now))
            del job_info[job]
        else:
            job_info[job][1] = k + 1
            enter(job, now)

    for c in range(len(scenario.chains)):
        push(next(streams.arrivals[c]), _ARRIVAL, c)
    while queue and queue[0][0] < horizon:
        now, _, kind, payload = heapq.heappop(queue)
        if kind == _ARRIVAL:
            c = payload
            push(now + next(streams.arrivals[c]), _ARRIVAL, c)
            run.events += 1
            run.arrived[c] += 1
            next_id += 1
            job_info[next_id] = [c, 0, now, 0.0]
            enter(next_id, now)
        elif kind == _FCFS_DONE:
            run.events += 1
            job = payload
            d = dev_index[scenario.chains[job_info[job][0]].stages[job_info[job][1]].device]
            jobs_at[d].pop(0)
            if jobs_at[d]:
                waiting = jobs_at[d][0]
                push(now + job_info[waiting][3] / scenario.devices[d].speed, _FCFS_DONE, waiting)
            leave_stage(job, d, now)
        else:
            d, version = payload
            if version != ps_version[d]:
                continue
            run.events += 1
            ps_advance(d, now)
            job = min(remaining[d], key=lambda j: (remaining[d][j], j))
            del remaining[d][job]
            jobs_at[d].remove(job)
            ps_reschedule(d, now)
            leave_stage(job, d, now)
    counts = [0] * len(scenario.chains)
    for c, _, _, _ in job_info.values():
        counts[c] += 1
    run.in_system = counts
    return run
