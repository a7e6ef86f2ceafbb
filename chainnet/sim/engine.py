"""The SimPy engine: event callbacks on SimPy's scheduler, no process per job.

A job is a small record moved between callbacks: a chain arrival admits a new job at the first
stage; a service completion releases the job from its device (and regions), starts the next waiting
job, then lets the job exit or enter its next stage, where it is admitted or dropped. FCFS devices
keep a FIFO queue; PS devices keep a heap of finish tags in virtual time (the work each resident job
has received), so a completion is one scheduled event and a change of population reschedules it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from heapq import heappop, heappush

import numpy as np
import simpy
from simpy.events import Timeout

from chainnet.scenario import MEMORY_SLACK, Scenario
from chainnet.sim.result import (
    OUTCOME_COMPLETE,
    OUTCOME_DROP,
    OUTCOME_EXIT,
    SimulationResult,
    SimulatorSettings,
    build_result,
)
from chainnet.sim.stats import BatchMeans, chain_width
from chainnet.sim.streams import Streams


class LimitViolation(AssertionError):
    """Raised in debug mode when a region holds more jobs or memory than its limit."""


class _Region:
    __slots__ = ("name", "cap", "memlim", "n", "mem")

    def __init__(self, name: str, cap: float, memlim: float):
        self.name, self.cap, self.memlim = name, cap, memlim
        self.n, self.mem = 0, 0.0


class _Device(_Region):
    __slots__ = (
        "speed",
        "ps",
        "regions",
        "queue",
        "heap",
        "vtime",
        "vt",
        "pending",
        "t",
        "area",
        "busy",
        "arrived",
        "dropped",
    )

    def __init__(self, name, cap, memlim, speed, ps):
        super().__init__(name, cap, memlim)
        self.speed, self.ps = speed, ps
        self.regions: tuple[_Region, ...] = ()
        self.queue: deque = deque()
        self.heap: list = []
        self.vtime = 0.0
        self.vt = 0.0  # time at which vtime was last brought up to date
        self.pending = None
        self.t = 0.0
        self.area = 0.0  # integral of resident jobs over time
        self.busy = 0.0  # time with at least one resident job
        self.arrived = 0
        self.dropped = 0


class _Chain:
    __slots__ = ("index", "iat", "first", "counts", "n", "t", "area", "sojourn", "departed")

    def __init__(self, index, iat, n_stages):
        self.index, self.iat = index, iat
        self.first = None
        self.counts = [0.0] * chain_width(n_stages)
        self.n = 0  # jobs in the system (admitted, not yet departed)
        self.t = 0.0
        self.area = 0.0
        self.sojourn = 0.0  # summed time in system of departed jobs, dropped ones included
        self.departed = 0


class _Stage:
    __slots__ = (
        "chain",
        "k",
        "dev",
        "work",
        "req",
        "mem",
        "exit_p",
        "exit_u",
        "acc",
        "next",
        "arrived",
        "dropped",
    )


class _Job:
    __slots__ = ("chain", "t0", "st", "req", "seq")

    def __init__(self, chain, t0):
        self.chain, self.t0 = chain, t0


class SimPyEngine:
    """One run of a scenario. Use `run()` for the steady-state labels, `run_until()` for a trace."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int | np.random.SeedSequence = 0,
        settings: SimulatorSettings | None = None,
        trace: bool = False,
        debug: bool = False,
    ):
        self.scenario = scenario
        self.settings = settings or SimulatorSettings()
        self.env = simpy.Environment()
        self.trace: list[tuple] | None = [] if trace else None
        self.debug = debug
        self.events = 0
        self._seq = 0
        streams = Streams(scenario, seed)
        inf = math.inf
        self.devices = [
            _Device(
                d.name,
                d.capacity,
                inf if d.memory is None else d.memory * (1 + MEMORY_SLACK),
                d.speed,
                d.discipline == "ps",
            )
            for d in scenario.devices
        ]
        self.regions = [
            _Region(
                r.name,
                inf if r.capacity is None else r.capacity,
                inf if r.memory is None else r.memory * (1 + MEMORY_SLACK),
            )
            for r in scenario.regions
        ]
        for reg, spec in zip(self.regions, scenario.regions):
            for name in spec.devices:
                dev = self.devices[scenario.device_id(name)]
                dev.regions = dev.regions + (reg,)
        self.chains = []
        self.stages: list[_Stage] = []
        for c, spec in enumerate(scenario.chains):
            ch = _Chain(c, streams.arrivals[c], len(spec.stages))
            prev = None
            for k, st in enumerate(spec.stages):
                s = _Stage()
                s.chain, s.k = ch, k
                s.dev = self.devices[scenario.device_id(st.device)]
                s.work, s.req = st.work, streams.requirements[c][k]
                s.mem = st.job_memory
                s.exit_p, s.exit_u = st.exit_prob, streams.exits[c][k]
                s.acc = 0.0 if st.exit_accuracy is None else st.exit_accuracy
                s.next = None
                s.arrived = s.dropped = 0
                if prev is None:
                    ch.first = s
                else:
                    prev.next = s
                prev = s
                self.stages.append(s)
            self.chains.append(ch)
        self._stop = self.env.event()

    # ---- job life cycle ------------------------------------------------------------------------
    def _on_arrival(self, ev) -> None:
        ch = ev._value
        now = self.env._now
        Timeout(self.env, next(ch.iat), ch).callbacks.append(self._on_arrival)
        self.events += 1
        ch.counts[0] += 1
        job = _Job(ch, now)
        self._enter(job, ch.first, now)

    def _enter(self, job, st, now) -> None:
        """Admit `job` at stage `st` or drop it (a job arriving from outside or from upstream)."""
        dev = st.dev
        st.arrived += 1
        dev.arrived += 1
        m = st.mem
        if dev.n >= dev.cap or dev.mem + m > dev.memlim:
            return self._drop(job, st, now)
        for r in dev.regions:
            if r.n >= r.cap or r.mem + m > r.memlim:
                return self._drop(job, st, now)
        if st.k == 0:
            ch = job.chain
            ch.area += ch.n * (now - ch.t)
            ch.t = now
            ch.n += 1
        dt = now - dev.t
        dev.t = now
        if dev.n:
            dev.area += dev.n * dt
            dev.busy += dt
        dev.n += 1
        dev.mem += m
        for r in dev.regions:
            r.n += 1
            r.mem += m
        if self.debug:
            self._check_limits(dev)
        job.st = st
        job.req = st.work if st.req is None else next(st.req)
        if dev.ps:
            self._ps_arrive(dev, job, now)
        elif dev.n == 1:
            Timeout(self.env, job.req / dev.speed, job).callbacks.append(self._fcfs_done)
        else:
            dev.queue.append(job)

    def _drop(self, job, st, now) -> None:
        ch = job.chain
        st.dropped += 1
        st.dev.dropped += 1
        ch.counts[2] += 1
        if st.k:
            self._depart(job, ch, now)
        if self.trace is not None:
            self.trace.append((ch.index, job.t0, OUTCOME_DROP, st.k, now))

    def _depart(self, job, ch, now) -> None:
        ch.area += ch.n * (now - ch.t)
        ch.t = now
        ch.n -= 1
        ch.sojourn += now - job.t0
        ch.departed += 1

    def _release(self, dev, st, now) -> None:
        dt = now - dev.t
        dev.t = now
        dev.area += dev.n * dt
        dev.busy += dt
        dev.n -= 1
        dev.mem -= st.mem
        for r in dev.regions:
            r.n -= 1
            r.mem -= st.mem

    def _fcfs_done(self, ev) -> None:
        job = ev._value
        st = job.st
        dev = st.dev
        now = self.env._now
        self.events += 1
        self._release(dev, st, now)
        if dev.queue:
            nxt = dev.queue.popleft()
            Timeout(self.env, nxt.req / dev.speed, nxt).callbacks.append(self._fcfs_done)
        self._route(job, st, now)

    def _route(self, job, st, now) -> None:
        """After service at `st`: complete (last stage or early exit) or enter the next stage."""
        nxt = st.next
        if nxt is not None:
            p = st.exit_p
            if p == 0.0 or (p < 1.0 and next(st.exit_u) >= p):
                return self._enter(job, nxt, now)
        ch = job.chain
        c = ch.counts
        c[1] += 1
        c[3] += now - job.t0
        c[4] += st.acc
        c[5 + st.k] += 1
        self._depart(job, ch, now)
        if self.trace is not None:
            outcome = OUTCOME_COMPLETE if nxt is None else OUTCOME_EXIT
            self.trace.append((ch.index, job.t0, outcome, st.k, now))

    # ---- processor sharing ---------------------------------------------------------------------
    def _ps_arrive(self, dev, job, now) -> None:
        n_before = dev.n - 1
        if n_before:
            dev.vtime += (now - dev.vt) * dev.speed / n_before
        dev.vt = now
        self._seq += 1
        heappush(dev.heap, (dev.vtime + job.req, self._seq, job))
        self._ps_schedule(dev, now)

    def _ps_schedule(self, dev, now) -> None:
        if not dev.heap:
            dev.pending = None
            return
        delay = (dev.heap[0][0] - dev.vtime) * dev.n / dev.speed
        ev = Timeout(self.env, delay if delay > 0.0 else 0.0, dev)
        ev.callbacks.append(self._ps_done)
        dev.pending = ev

    def _ps_done(self, ev) -> None:
        dev = ev._value
        if ev is not dev.pending:  # superseded by a later change of population
            return
        now = self.env._now
        self.events += 1
        tag, _, job = heappop(dev.heap)
        dev.vtime = tag  # by definition the finishing job has received exactly its requirement
        dev.vt = now
        st = job.st
        self._release(dev, st, now)
        self._ps_schedule(dev, now)
        self._route(job, st, now)

    # ---- checks ----------------------------------------------------------------------------------
    def _check_limits(self, dev) -> None:
        for r in (dev, *dev.regions):
            if r.n > r.cap or r.mem > r.memlim:
                raise LimitViolation(
                    f"region {r.name!r} holds {r.n} jobs and {r.mem} memory at t={self.env.now}, "
                    f"over its limits {r.cap} jobs / {r.memlim} memory"
                )

    # ---- running ---------------------------------------------------------------------------------
    def _start_arrivals(self) -> None:
        for ch in self.chains:
            Timeout(self.env, next(ch.iat), ch).callbacks.append(self._on_arrival)

    def _row(self) -> np.ndarray:
        return np.fromiter((v for ch in self.chains for v in ch.counts), dtype=float)

    def _flush(self, now: float) -> None:
        """Bring every time integral up to `now` (before a snapshot)."""
        for dev in self.devices:
            dt = now - dev.t
            dev.t = now
            dev.area += dev.n * dt
            if dev.n:
                dev.busy += dt
        for ch in self.chains:
            ch.area += ch.n * (now - ch.t)
            ch.t = now

    def _snapshot_state(self) -> dict:
        now = self.env.now
        self._flush(now)
        return {
            "time": now,
            "chains": [(list(ch.counts), ch.area, ch.sojourn, ch.departed) for ch in self.chains],
            "stages": [(s.arrived, s.dropped) for s in self.stages],
            "devices": [(d.arrived, d.dropped, d.area, d.busy) for d in self.devices],
        }

    def run_until(self, horizon: float) -> list[tuple]:
        """Simulate exactly up to `horizon` (no warm-up, no stopping rule); return the trace."""
        self._start_arrivals()
        self.env.run(until=horizon)
        return self.trace if self.trace is not None else []

    def run(self, progress=None) -> SimulationResult:
        """Warm up, then run batches until the precision target or the arrival cap is reached."""
        s = self.settings
        wall0 = time.perf_counter()
        total_rate = sum(c.arrival_rate for c in self.scenario.chains)
        self._start_arrivals()
        self.env.run(until=s.warmup_arrivals / total_rate)
        warm = self._snapshot_state()
        batches = BatchMeans([len(c.stages) for c in self.scenario.chains], s.min_batches)
        batches.add(warm["time"], self._row())
        length = s.batch_arrivals / total_rate
        reason = None
        arrivals_cap = s.max_arrivals
        while reason is None:
            self.env.run(until=self.env.now + length)
            if batches.add(self.env.now, self._row()):
                length *= 2.0
            arrived = sum(ch.counts[0] for ch in self.chains)
            if progress is not None:
                progress(arrived)
            if batches.converged(s.precision):
                reason = "precision"
            elif arrived >= arrivals_cap:
                reason = "arrival_cap"
        end = self._snapshot_state()
        in_system = [ch.n for ch in self.chains]
        return build_result(
            self.scenario,
            warm,
            end,
            batches,
            in_system=in_system,
            stop_reason=reason,
            events=self.events,
            wall_time=time.perf_counter() - wall0,
            settings=s,
        )
