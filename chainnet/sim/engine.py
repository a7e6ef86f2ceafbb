"""The SimPy engine: event callbacks on SimPy's scheduler, no process per job.

A job is a small record moved between callbacks: a chain arrival admits a new job at the first
stage; a service completion releases the job from its device (and regions), starts the next waiting
job, then lets the job exit or enter its next stage, where it is admitted or dropped. FCFS devices
keep a FIFO queue; PS devices keep a heap of finish tags in virtual time (the work each resident job
has received), so a completion is one scheduled event and a change of population reschedules it.

Speed: SimPy's `Environment.step` needs only `callbacks` and `_ok` of an event, so a job is itself
the event of its service completion and a chain the event of its next arrival: they are pushed on
SimPy's event queue directly (the same tuple `Environment.schedule` pushes) and no object is
allocated per event. Only a PS device, whose pending completion may be superseded, gets a fresh
small event each time.

The objects are built from the scenario's `Layout` (`chainnet.sim.layout`), and the run-time rules
(memory fit, exit decision) are the functions of `chainnet.sim.rules` that the fast kernel compiles.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush

import numpy as np
import simpy
from simpy.events import NORMAL

from chainnet.scenario import Scenario
from chainnet.sim.base import Engine
from chainnet.sim.layout import build_layout
from chainnet.sim.result import OUTCOME_COMPLETE, OUTCOME_DROP, OUTCOME_EXIT, SimulatorSettings
from chainnet.sim.rules import memory_fits, moves_on
from chainnet.sim.stats import (
    ACCURACY_SUM,
    ARRIVED,
    COMPLETED,
    DROPPED,
    FIXED,
    RESPONSE_SUM,
    chain_width,
)
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


class _Tick:
    """A pending PS completion (a SimPy event that may be superseded)."""

    __slots__ = ("callbacks", "_value")
    _ok = True

    def __init__(self, callbacks, value):
        self.callbacks, self._value = callbacks, value


class _Chain:
    """A chain; also the SimPy event of its next arrival."""

    __slots__ = ("callbacks", "index", "iat", "first", "counts", "n", "lost_sojourn", "lost_inside")
    _ok = True

    def __init__(self, index, iat, n_stages):
        self.index, self.iat = index, iat
        self.first = None
        self.counts = [0.0] * chain_width(n_stages)
        self.n = 0  # jobs in the system (admitted, not yet departed)
        # Jobs dropped after the first stage: how many, and the time they spent in the system.
        self.lost_inside = 0
        self.lost_sojourn = 0.0


class _Stage:
    __slots__ = (
        "chain",
        "k",
        "dev",
        "work",
        "req",
        "mem",
        "exit_kind",
        "exit_p",
        "exit_u",
        "acc",
        "limited",
        "next",
        "arrived",
        "dropped",
    )


class _Job:
    """A job; also the SimPy event of its service completion at an FCFS device.

    No __init__: its fields are set where it is created, which is measurably cheaper per arrival.
    """

    __slots__ = ("callbacks", "chain", "t0", "st", "req")
    _ok = True


class SimPyEngine(Engine):
    """One run of a scenario. Use `run()` for the steady-state labels, `run_until()` for a trace."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int | np.random.SeedSequence = 0,
        settings: SimulatorSettings | None = None,
        trace: bool = False,
        debug: bool = False,
    ):
        super().__init__(scenario, settings, trace)
        self.env = simpy.Environment()
        self._queue = self.env._queue
        self._eid = self.env._eid
        self._arrival_cb = (self._on_arrival,)
        self._fcfs_cb = (self._finish,)
        self._ps_cb = (self._ps_done,)
        if debug:
            self._enter = self._enter_checked
        self._seq = 0
        streams = Streams(scenario, seed)
        self._build(scenario, streams)

    def _build(self, scenario: Scenario, streams: Streams) -> None:
        """Devices, regions, chains and stages as linked objects, from the scenario's layout."""
        lay = build_layout(scenario)
        cap, memlim = lay.dev_cap.tolist(), lay.dev_memlim.tolist()
        speed, ps = lay.dev_speed.tolist(), lay.dev_ps.tolist()
        self.devices = [
            _Device(d.name, cap[i], memlim[i], speed[i], ps[i])
            for i, d in enumerate(scenario.devices)
        ]
        self.regions = [
            _Region(r.name, c, m)
            for r, c, m in zip(scenario.regions, lay.reg_cap.tolist(), lay.reg_memlim.tolist())
        ]
        ptr, idx = lay.reg_ptr.tolist(), lay.reg_idx.tolist()
        for i, dev in enumerate(self.devices):
            dev.regions = tuple(self.regions[r] for r in idx[ptr[i] : ptr[i + 1]])
        self.chains = [
            _Chain(c, streams.arrivals[c], k) for c, k in enumerate(lay.ch_stages.tolist())
        ]
        self.stages: list[_Stage] = [_Stage() for _ in lay.st_chain]
        f = {name: a.tolist() for name, a in lay._asdict().items() if name.startswith("st_")}
        for i, s in enumerate(self.stages):
            c, k, nxt = f["st_chain"][i], f["st_k"][i], f["st_next"][i]
            s.chain, s.k, s.dev = self.chains[c], k, self.devices[f["st_dev"][i]]
            s.work, s.req, s.mem = f["st_work"][i], streams.requirements[c][k], f["st_mem"][i]
            s.exit_kind, s.exit_p = f["st_exit_kind"][i], f["st_exit_p"][i]
            s.exit_u = streams.exits[c][k]
            s.acc, s.limited = f["st_acc"][i], f["st_limited"][i]
            s.next = self.stages[nxt] if nxt >= 0 else None
            s.arrived = s.dropped = 0
        for ch, first in zip(self.chains, lay.ch_first.tolist()):
            ch.first = self.stages[first]

    # ---- job life cycle ------------------------------------------------------------------------
    def _on_arrival(self, ch) -> None:
        now = self.env._now
        ch.callbacks = self._arrival_cb
        heappush(self._queue, (now + next(ch.iat), NORMAL, next(self._eid), ch))
        ch.counts[ARRIVED] += 1
        self._enter(None, ch.first, now)

    def _enter(self, job, st, now) -> None:
        """Admit a job at stage `st` or drop it; `job` is None for a new arrival at stage 0."""
        dev = st.dev
        st.arrived += 1
        if dev.n >= dev.cap:
            return self._drop(job, st, now)
        if st.limited and not self._fits(dev, st.mem):
            return self._drop(job, st, now)
        if job is None:
            job = _Job()
            job.chain = st.chain
            job.t0 = now
            st.chain.n += 1
        n = dev.n
        if n:
            dt = now - dev.t
            dev.area += n * dt
            dev.busy += dt
        dev.t = now
        dev.n = n + 1
        if st.limited:
            self._hold(dev, st.mem, 1)
        job.st = st
        job.req = st.work if st.req is None else next(st.req)
        if dev.ps:
            self._ps_arrive(dev, job, now)
        elif n == 0:
            job.callbacks = self._fcfs_cb
            heappush(self._queue, (now + job.req / dev.speed, NORMAL, next(self._eid), job))
        else:
            dev.queue.append(job)

    @staticmethod
    def _fits(dev, m) -> bool:
        if not memory_fits(dev.mem, m, dev.memlim):
            return False
        return all(r.n < r.cap and memory_fits(r.mem, m, r.memlim) for r in dev.regions)

    @staticmethod
    def _hold(dev, m, n) -> None:
        """Add (or, negative, remove) `m` memory and `n` jobs to the device's regions."""
        dev.mem += m
        for r in dev.regions:
            r.n += n
            r.mem += m

    def _enter_checked(self, job, st, now) -> None:
        """`_enter`, then assert that no region is over its limits (debug mode)."""
        SimPyEngine._enter(self, job, st, now)
        self._check_limits(st.dev)

    def _drop(self, job, st, now) -> None:
        st.dropped += 1
        if job is None:
            ch = st.chain
            ch.counts[DROPPED] += 1
            if self.trace is not None:
                self.trace.append((ch.index, now, OUTCOME_DROP, 0, now))
            return
        ch = job.chain
        ch.counts[DROPPED] += 1
        ch.n -= 1
        ch.lost_inside += 1
        ch.lost_sojourn += now - job.t0
        if self.trace is not None:
            self.trace.append((ch.index, job.t0, OUTCOME_DROP, st.k, now))

    def _finish(self, job) -> None:
        """A service ends: start the next waiting job, release this one, then route it on.

        This is the callback of an FCFS completion (the job is the event) and is called by a PS
        completion; a PS device never uses the FIFO queue. The job exits (early exit or last stage:
        it completes) or enters its next stage, where it is admitted or dropped. A job always
        leaves its stage before it tries the next one.
        """
        st = job.st
        dev = st.dev
        now = self.env._now
        if dev.queue:
            nxt = dev.queue.popleft()
            nxt.callbacks = self._fcfs_cb
            heappush(self._queue, (now + nxt.req / dev.speed, NORMAL, next(self._eid), nxt))
        dt = now - dev.t
        dev.t = now
        dev.area += dev.n * dt
        dev.busy += dt
        dev.n -= 1
        if st.limited:
            self._hold(dev, -st.mem, -1)
        nxt = st.next
        if nxt is not None:
            u = 0.0 if st.exit_u is None else next(st.exit_u)
            if moves_on(st.exit_kind, u, st.exit_p):
                return self._enter(job, nxt, now)
        ch = job.chain
        c = ch.counts
        c[COMPLETED] += 1
        c[RESPONSE_SUM] += now - job.t0
        c[ACCURACY_SUM] += st.acc
        c[FIXED + st.k] += 1
        ch.n -= 1
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
        ev = _Tick(self._ps_cb, dev)
        heappush(self._queue, (now + (delay if delay > 0.0 else 0.0), NORMAL, next(self._eid), ev))
        dev.pending = ev

    def _ps_done(self, ev) -> None:
        dev = ev._value
        if ev is not dev.pending:  # superseded by a later change of population
            return
        tag, _, job = heappop(dev.heap)
        dev.vtime = tag  # by definition the finishing job has received exactly its requirement
        dev.vt = self.env._now
        self._finish(job)
        if dev.pending is ev:  # the job did not come straight back to this device
            self._ps_schedule(dev, dev.vt)

    @property
    def events(self) -> int:
        """Chain arrivals plus service completions so far (the unit of the benchmarks)."""
        arrivals = sum(ch.counts[ARRIVED] for ch in self.chains)
        admitted = sum(s.arrived - s.dropped for s in self.stages)
        return int(arrivals + admitted - sum(d.n for d in self.devices))

    # ---- checks ----------------------------------------------------------------------------------
    def _check_limits(self, dev) -> None:
        for r in (dev, *dev.regions):
            if r.n > r.cap or r.mem > r.memlim:
                raise LimitViolation(
                    f"region {r.name!r} holds {r.n} jobs and {r.mem} memory at t={self.env.now}, "
                    f"over its limits {r.cap:g} jobs / {r.memlim} memory"
                )

    # ---- running ---------------------------------------------------------------------------------
    def start(self) -> None:
        for ch in self.chains:
            ch.callbacks = self._arrival_cb
            heappush(self._queue, (next(ch.iat), NORMAL, next(self._eid), ch))

    def advance(self, until: float) -> None:
        self.env.run(until=until)

    @property
    def now(self) -> float:
        return self.env.now

    def in_system(self) -> list[int]:
        return [ch.n for ch in self.chains]

    def counts_row(self) -> np.ndarray:
        return np.fromiter((v for ch in self.chains for v in ch.counts), dtype=float)

    def _flush(self, now: float) -> None:
        """Bring every time integral up to `now` (before a snapshot)."""
        for dev in self.devices:
            dt = now - dev.t
            dev.t = now
            dev.area += dev.n * dt
            if dev.n:
                dev.busy += dt

    def snapshot_state(self) -> dict:
        now = self.env.now
        self._flush(now)
        return {
            "time": now,
            "chains": [(list(ch.counts), ch.lost_inside, ch.lost_sojourn) for ch in self.chains],
            "stages": [(s.arrived, s.dropped) for s in self.stages],
            "devices": [(d.area, d.busy) for d in self.devices],
        }
