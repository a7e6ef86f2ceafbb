"""The fast engine's compiled event loop and the named arrays it works on.

`advance` is the SimPy engine's event logic (`chainnet.sim.engine`) compiled with numba: the same
random values consumed in the same order and the same floating-point expressions evaluated in the
same order. It reads the scenario from a `Layout` (`chainnet.sim.layout`), applies the run-time
rules of `chainnet.sim.rules` (compiled here from the very functions the SimPy engine calls), and
keeps its state in the NamedTuples below, which `chainnet.sim.fast` allocates.

The next event is the earliest of one pending time per chain (its next arrival) and one per device
(its next service completion), found by a linear scan; a PS device overwrites its pending time when
its population changes, so there are no stale events. The kernel cannot refill a random buffer:
when an event would need a value from an empty one, it returns before touching any state, with the
status saying which buffer (and the index which stream), and resumes once Python has refilled it.

Numba's cache does not notice edits to `chainnet.sim.rules`: after changing a rule, touch this file
(or clear its `__pycache__`) so that the kernel is compiled again.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from chainnet.sim import rules
from chainnet.sim.layout import Layout
from chainnet.sim.result import OUTCOME_COMPLETE, OUTCOME_DROP, OUTCOME_EXIT
from chainnet.sim.rules import EXIT_DRAW
from chainnet.sim.stats import ACCURACY_SUM, ARRIVED, COMPLETED, DROPPED, FIXED, RESPONSE_SUM

# What `advance` returns: finished, a buffer to refill (with the stream's index), trace full.
DONE, REFILL_ARRIVAL, REFILL_REQUIREMENT, REFILL_EXIT, TRACE_FULL = range(5)
# Trace rows are (chain, arrival time, outcome code, stage, time of leaving); codes index this.
TRACE_OUTCOMES = (OUTCOME_COMPLETE, OUTCOME_EXIT, OUTCOME_DROP)
_COMPLETE_CODE, _EXIT_CODE, _DROP_CODE = 0.0, 1.0, 2.0

_moves_on = njit(rules.moves_on)
_memory_fits = njit(rules.memory_fits)


class Draws(NamedTuple):
    """A block of random values per stream, (streams, BLOCK), and the next position in each.

    A position at BLOCK means the block is used up.
    """

    arrival: np.ndarray  # float64, a stream per chain: interarrival times
    arrival_pos: np.ndarray  # int64
    requirement: np.ndarray  # float64, a stream per stage: requirements (random stages only)
    requirement_pos: np.ndarray  # int64
    exit: np.ndarray  # float64, a stream per stage: exit uniforms (EXIT_DRAW stages only)
    exit_pos: np.ndarray  # int64


class State(NamedTuple):
    clock: np.ndarray  # float64, (1,): the time of the last event (or `until`)
    ch_next: np.ndarray  # float64, per chain: time of its next arrival
    dev_next: np.ndarray  # float64, per device: time of its next completion (inf: none)
    counts: np.ndarray  # float64, (chains, widest chain): counters in the batch-means layout
    st_arrived: np.ndarray  # int64, per stage: jobs that tried to enter
    st_dropped: np.ndarray  # int64, per stage: jobs dropped on entry
    dev_n: np.ndarray  # int64, per device: resident jobs
    dev_mem: np.ndarray  # float64, per device: memory held by limited stages' jobs
    dev_t: np.ndarray  # float64, per device: time of its last change of population
    dev_area: np.ndarray  # float64, per device: integral of resident jobs over time
    dev_busy: np.ndarray  # float64, per device: time with at least one resident job
    dev_vtime: np.ndarray  # float64, per device: PS virtual time (work received per job)
    dev_vt: np.ndarray  # float64, per device: when the PS virtual time was last updated
    reg_n: np.ndarray  # int64, per region: resident jobs
    reg_mem: np.ndarray  # float64, per region: memory held
    ch_n: np.ndarray  # int64, per chain: jobs in the system
    ch_lost: np.ndarray  # int64, per chain: jobs dropped after their first stage
    ch_lost_soj: np.ndarray  # float64, per chain: their summed time in the system
    ps_seq: np.ndarray  # int64, (1,): PS arrival sequence number (heap tie-break)


class Queues(NamedTuple):
    """FCFS: a ring buffer of waiting jobs per device. PS: a heap of (finish tag, seq, job)."""

    fifo_off: np.ndarray  # int64, per device: start of its ring in `fifo_job`
    fifo_head: np.ndarray  # int64, per device
    fifo_len: np.ndarray  # int64, per device
    fifo_job: np.ndarray  # int64, sum of capacities
    in_service: np.ndarray  # int64, per FCFS device: the job in service, -1 when idle
    heap_len: np.ndarray  # int64, per device
    heap_tag: np.ndarray  # float64, (devices, largest capacity)
    heap_seq: np.ndarray  # int64, (devices, largest capacity)
    heap_job: np.ndarray  # int64, (devices, largest capacity)


class Jobs(NamedTuple):
    """A slot per job the devices can hold (plus one), and a stack of the free slots."""

    chain: np.ndarray  # int64
    t0: np.ndarray  # float64: arrival time
    stage: np.ndarray  # int64: the stage it is at
    req: np.ndarray  # float64: its requirement there
    free: np.ndarray  # int64: free slots, a stack
    free_top: np.ndarray  # int64, (1,): index of the top of `free`


class TraceBuffer(NamedTuple):
    rows: np.ndarray  # float64, (capacity, 5): chain, arrival, outcome code, stage, leaving time
    length: np.ndarray  # int64, (1,)
    on: bool


@njit(cache=True)
def _record(rows, length, c, t0, code, k, now):
    """Append a trace row (see TRACE_OUTCOMES)."""
    i = length[0]
    rows[i, 0], rows[i, 1], rows[i, 2], rows[i, 3], rows[i, 4] = c, t0, code, k, now
    length[0] = i + 1


@njit(cache=True)
def advance(until, layout, draws, state, queues, jobs, trace):  # noqa: C901 (one event loop)
    """Process every event strictly before `until`; returns (status, stream index).

    The arguments after `until` are a Layout, Draws, State, Queues, Jobs and TraceBuffer, each
    passed as the plain tuple of its fields (`tuple(x)`): numba's dispatcher types plain tuples
    faster than NamedTuples, and this is called for every batch and every refill. They get their
    names back here.
    """
    sc, rnd, st = Layout(*layout), Draws(*draws), State(*state)
    q, jb, tb = Queues(*queues), Jobs(*jobs), TraceBuffer(*trace)
    # Every array under a local name, read once here: reading them through the NamedTuples inside
    # the loop made the kernel about a quarter slower.
    dev_speed, dev_cap, dev_memlim, dev_ps = sc.dev_speed, sc.dev_cap, sc.dev_memlim, sc.dev_ps
    reg_ptr, reg_idx, reg_cap, reg_memlim = sc.reg_ptr, sc.reg_idx, sc.reg_cap, sc.reg_memlim
    st_chain, st_k, st_dev, st_work, st_mem = sc.st_chain, sc.st_k, sc.st_dev, sc.st_work, sc.st_mem
    st_exit_kind, st_exit_p, st_acc = sc.st_exit_kind, sc.st_exit_p, sc.st_acc
    st_next, st_limited, st_random, ch_first = sc.st_next, sc.st_limited, sc.st_random, sc.ch_first
    arr_buf, arr_pos = rnd.arrival, rnd.arrival_pos
    req_buf, req_pos = rnd.requirement, rnd.requirement_pos
    ex_buf, ex_pos = rnd.exit, rnd.exit_pos
    clock, ch_next, dev_next, counts = st.clock, st.ch_next, st.dev_next, st.counts
    st_arrived, st_dropped, dev_n, dev_mem = st.st_arrived, st.st_dropped, st.dev_n, st.dev_mem
    dev_t, dev_area, dev_busy = st.dev_t, st.dev_area, st.dev_busy
    dev_vtime, dev_vt, reg_n, reg_mem = st.dev_vtime, st.dev_vt, st.reg_n, st.reg_mem
    ch_n, ch_lost, ch_lost_soj, seq = st.ch_n, st.ch_lost, st.ch_lost_soj, st.ps_seq
    q_off, q_head, q_len, q_job = q.fifo_off, q.fifo_head, q.fifo_len, q.fifo_job
    in_service, h_len, h_tag, h_seq, h_job = (
        q.in_service, q.heap_len, q.heap_tag, q.heap_seq, q.heap_job
    )  # fmt: skip
    job_chain, job_t0, job_stage, job_req = jb.chain, jb.t0, jb.stage, jb.req
    free, free_top = jb.free, jb.free_top
    tr, tr_len, tr_on = tb.rows, tb.length, tb.on
    m = ch_next.shape[0]
    n = dev_next.shape[0]
    block = arr_buf.shape[1]
    while True:
        t = math.inf
        src = -1
        for c in range(m):
            if ch_next[c] < t:
                t = ch_next[c]
                src = c
        for d in range(n):
            if dev_next[d] < t:
                t = dev_next[d]
                src = m + d
        if not t < until:
            clock[0] = until
            return DONE, 0
        if tr_on and tr_len[0] >= tr.shape[0]:
            return TRACE_FULL, 0
        job = -1
        enter = -1
        ps_pending = -1
        if src < m:
            # ---- a chain arrival
            c = src
            s0 = ch_first[c]
            if arr_pos[c] == block:
                return REFILL_ARRIVAL, c
            if st_random[s0] and req_pos[s0] == block:
                return REFILL_REQUIREMENT, s0
            now = t
            clock[0] = now
            ch_next[c] = now + arr_buf[c, arr_pos[c]]
            arr_pos[c] += 1
            counts[c, ARRIVED] += 1
            enter = s0
        else:
            # ---- a service completion at device d
            d = src - m
            job = h_job[d, 0] if dev_ps[d] else in_service[d]
            s = job_stage[job]
            nxt = st_next[s]
            if nxt >= 0:
                if st_exit_kind[s] == EXIT_DRAW and ex_pos[s] == block:
                    return REFILL_EXIT, s
                if st_random[nxt] and req_pos[nxt] == block:
                    return REFILL_REQUIREMENT, nxt
            now = t
            clock[0] = now
            if dev_ps[d]:
                # pop the heap top: the job with the smallest (finish tag, seq)
                tag = h_tag[d, 0]
                size = h_len[d] - 1
                h_len[d] = size
                lt, ls, lj = h_tag[d, size], h_seq[d, size], h_job[d, size]
                i = 0
                while True:
                    child = 2 * i + 1
                    if child >= size:
                        break
                    if child + 1 < size and (
                        h_tag[d, child + 1] < h_tag[d, child]
                        or (h_tag[d, child + 1] == h_tag[d, child]
                            and h_seq[d, child + 1] < h_seq[d, child])
                    ):  # fmt: skip
                        child += 1
                    if h_tag[d, child] < lt or (h_tag[d, child] == lt and h_seq[d, child] < ls):
                        h_tag[d, i], h_seq[d, i], h_job[d, i] = (
                            h_tag[d, child], h_seq[d, child], h_job[d, child]
                        )  # fmt: skip
                        i = child
                    else:
                        break
                if size > 0:
                    h_tag[d, i], h_seq[d, i], h_job[d, i] = lt, ls, lj
                dev_vtime[d] = tag  # the finishing job has received exactly its requirement
                dev_vt[d] = now
                dev_next[d] = math.inf
                ps_pending = d
            else:
                if q_len[d] > 0:
                    j2 = q_job[q_off[d] + q_head[d]]
                    q_head[d] = (q_head[d] + 1) % dev_cap[d]
                    q_len[d] -= 1
                    in_service[d] = j2
                    dev_next[d] = now + job_req[j2] / dev_speed[d]
                else:
                    in_service[d] = -1
                    dev_next[d] = math.inf
            # release the job from its device and regions
            dt = now - dev_t[d]
            dev_t[d] = now
            dev_area[d] += dev_n[d] * dt
            dev_busy[d] += dt
            dev_n[d] -= 1
            if st_limited[s]:
                dev_mem[d] += -st_mem[s]
                for r in reg_idx[reg_ptr[d] : reg_ptr[d + 1]]:
                    reg_n[r] += -1
                    reg_mem[r] += -st_mem[s]
            # route: next stage, or complete (early exit or last stage)
            go_on = False
            if nxt >= 0:
                kind = st_exit_kind[s]
                u = 0.0
                if kind == EXIT_DRAW:
                    u = ex_buf[s, ex_pos[s]]
                    ex_pos[s] += 1
                go_on = _moves_on(kind, u, st_exit_p[s])
            if go_on:
                enter = nxt
            else:
                c = job_chain[job]
                counts[c, COMPLETED] += 1
                counts[c, RESPONSE_SUM] += now - job_t0[job]
                counts[c, ACCURACY_SUM] += st_acc[s]
                counts[c, FIXED + st_k[s]] += 1
                ch_n[c] -= 1
                if tr_on:
                    code = _COMPLETE_CODE if nxt < 0 else _EXIT_CODE
                    _record(tr, tr_len, c, job_t0[job], code, st_k[s], now)
                free_top[0] += 1
                free[free_top[0]] = job
                job = -1
        if enter >= 0:
            # ---- admit at stage `enter` or drop (job == -1: a new arrival)
            s = enter
            d = st_dev[s]
            c = st_chain[s]
            st_arrived[s] += 1
            ok = dev_n[d] < dev_cap[d]
            if ok and st_limited[s]:
                mm = st_mem[s]
                if not _memory_fits(dev_mem[d], mm, dev_memlim[d]):
                    ok = False
                else:
                    for r in reg_idx[reg_ptr[d] : reg_ptr[d + 1]]:
                        if not (
                            reg_n[r] < reg_cap[r] and _memory_fits(reg_mem[r], mm, reg_memlim[r])
                        ):
                            ok = False
                            break
            if not ok:
                st_dropped[s] += 1
                counts[c, DROPPED] += 1
                t0 = now
                if job >= 0:
                    t0 = job_t0[job]
                    ch_n[c] -= 1
                    ch_lost[c] += 1
                    ch_lost_soj[c] += now - t0
                    free_top[0] += 1
                    free[free_top[0]] = job
                if tr_on:
                    _record(tr, tr_len, c, t0, _DROP_CODE, st_k[s], now)
            else:
                if job < 0:
                    job = free[free_top[0]]
                    free_top[0] -= 1
                    job_chain[job] = c
                    job_t0[job] = now
                    ch_n[c] += 1
                nd = dev_n[d]
                if nd:
                    dt = now - dev_t[d]
                    dev_area[d] += nd * dt
                    dev_busy[d] += dt
                dev_t[d] = now
                dev_n[d] = nd + 1
                if st_limited[s]:
                    dev_mem[d] += st_mem[s]
                    for r in reg_idx[reg_ptr[d] : reg_ptr[d + 1]]:
                        reg_n[r] += 1
                        reg_mem[r] += st_mem[s]
                job_stage[job] = s
                if st_random[s]:
                    req = req_buf[s, req_pos[s]]
                    req_pos[s] += 1
                else:
                    req = st_work[s]
                job_req[job] = req
                if dev_ps[d]:
                    n_before = dev_n[d] - 1
                    if n_before:
                        dev_vtime[d] += (now - dev_vt[d]) * dev_speed[d] / n_before
                    dev_vt[d] = now
                    seq[0] += 1
                    # push (vtime + req, seq, job) on the device's heap
                    tag = dev_vtime[d] + req
                    i = h_len[d]
                    h_len[d] = i + 1
                    while i > 0:
                        parent = (i - 1) // 2
                        if h_tag[d, parent] < tag or (
                            h_tag[d, parent] == tag and h_seq[d, parent] < seq[0]
                        ):
                            break
                        h_tag[d, i], h_seq[d, i], h_job[d, i] = (
                            h_tag[d, parent], h_seq[d, parent], h_job[d, parent]
                        )  # fmt: skip
                        i = parent
                    h_tag[d, i], h_seq[d, i], h_job[d, i] = tag, seq[0], job
                    delay = (h_tag[d, 0] - dev_vtime[d]) * dev_n[d] / dev_speed[d]
                    dev_next[d] = now + (delay if delay > 0.0 else 0.0)
                    if d == ps_pending:
                        ps_pending = -1
                elif nd == 0:
                    in_service[d] = job
                    dev_next[d] = now + req / dev_speed[d]
                else:
                    q_job[q_off[d] + (q_head[d] + q_len[d]) % dev_cap[d]] = job
                    q_len[d] += 1
        if ps_pending >= 0:
            d = ps_pending
            if h_len[d] > 0:
                delay = (h_tag[d, 0] - dev_vtime[d]) * dev_n[d] / dev_speed[d]
                dev_next[d] = now + (delay if delay > 0.0 else 0.0)
