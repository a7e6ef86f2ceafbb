"""The fast path: the SimPy engine's event logic compiled with numba.

Same semantics, same random streams consumed in the same order, and the same floating-point
expressions in the same order as `SimPyEngine`, so on the same seed it gives the same per-job
outcomes and, through the shared run loop (`chainnet.sim.base`), the same labels. Tests hold it
to that.

The state lives in numpy arrays. The next event is the earliest of one pending time per chain (its
next arrival) and one per device (its next service completion), found by a linear scan; a PS device
overwrites its pending time when its population changes, so there are no stale events. Random values
come from per-stream buffers that the kernel cannot refill itself: when an event would need a value
from an empty buffer, the kernel returns before touching any state, Python draws the stream's next
block (exactly the block the SimPy engine would draw) and the kernel resumes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from chainnet.scenario import MEMORY_SLACK, Scenario
from chainnet.sim.base import Engine
from chainnet.sim.result import OUTCOME_COMPLETE, OUTCOME_DROP, OUTCOME_EXIT, SimulatorSettings
from chainnet.sim.stats import chain_width
from chainnet.sim.streams import BLOCK, Streams

_DONE, _REFILL_ARRIVAL, _REFILL_REQUIREMENT, _REFILL_EXIT, _TRACE_FULL = range(5)
_OUTCOMES = (OUTCOME_COMPLETE, OUTCOME_EXIT, OUTCOME_DROP)
_EXIT_NEVER, _EXIT_ALWAYS, _EXIT_DRAW = 0, 1, 2


@njit(cache=True)
def _advance(until, sc, rnd, st, q, jobs, trace):  # noqa: C901 (one event loop, on purpose)
    """Process every event strictly before `until`; returns (status, stream index)."""
    (dev_speed, dev_cap, dev_memlim, dev_ps, reg_ptr, reg_idx, reg_cap, reg_memlim,
     st_chain, st_k, st_dev, st_work, st_mem, st_exit_kind, st_exit_p, st_acc, st_next,
     st_limited, st_random, ch_first) = sc  # fmt: skip
    arr_buf, arr_pos, req_buf, req_pos, ex_buf, ex_pos = rnd
    (clock, ch_next, dev_next, counts, st_arrived, st_dropped, dev_n, dev_mem, dev_t,
     dev_area, dev_busy, dev_vtime, dev_vt, reg_n, reg_mem, ch_n, ch_lost, ch_lost_soj,
     seq) = st  # fmt: skip
    q_off, q_head, q_len, q_job, in_service, h_len, h_tag, h_seq, h_job = q
    job_chain, job_t0, job_stage, job_req, free, free_top = jobs
    tr, tr_len, tr_on = trace
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
            return _DONE, 0
        if tr_on and tr_len[0] >= tr.shape[0]:
            return _TRACE_FULL, 0
        job = -1
        enter = -1
        ps_pending = -1
        if src < m:
            # ---- a chain arrival
            c = src
            s0 = ch_first[c]
            if arr_pos[c] == block:
                return _REFILL_ARRIVAL, c
            if st_random[s0] and req_pos[s0] == block:
                return _REFILL_REQUIREMENT, s0
            now = t
            clock[0] = now
            ch_next[c] = now + arr_buf[c, arr_pos[c]]
            arr_pos[c] += 1
            counts[c, 0] += 1
            enter = s0
        else:
            # ---- a service completion at device d
            d = src - m
            job = h_job[d, 0] if dev_ps[d] else in_service[d]
            s = job_stage[job]
            nxt = st_next[s]
            if nxt >= 0:
                if st_exit_kind[s] == 2 and ex_pos[s] == block:
                    return _REFILL_EXIT, s
                if st_random[nxt] and req_pos[nxt] == block:
                    return _REFILL_REQUIREMENT, nxt
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
                if kind == 0:
                    go_on = True
                elif kind == 2:
                    u = ex_buf[s, ex_pos[s]]
                    ex_pos[s] += 1
                    go_on = u >= st_exit_p[s]
            if go_on:
                enter = nxt
            else:
                c = job_chain[job]
                counts[c, 1] += 1
                counts[c, 3] += now - job_t0[job]
                counts[c, 4] += st_acc[s]
                counts[c, 5 + st_k[s]] += 1
                ch_n[c] -= 1
                if tr_on:
                    k = tr_len[0]
                    tr[k, 0], tr[k, 1], tr[k, 2], tr[k, 3], tr[k, 4] = (
                        c, job_t0[job], 0.0 if nxt < 0 else 1.0, st_k[s], now
                    )  # fmt: skip
                    tr_len[0] = k + 1
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
                if dev_mem[d] + mm > dev_memlim[d]:
                    ok = False
                else:
                    for r in reg_idx[reg_ptr[d] : reg_ptr[d + 1]]:
                        if not (reg_n[r] < reg_cap[r] and reg_mem[r] + mm <= reg_memlim[r]):
                            ok = False
                            break
            if not ok:
                st_dropped[s] += 1
                counts[c, 2] += 1
                t0 = now
                if job >= 0:
                    t0 = job_t0[job]
                    ch_n[c] -= 1
                    ch_lost[c] += 1
                    ch_lost_soj[c] += now - t0
                    free_top[0] += 1
                    free[free_top[0]] = job
                if tr_on:
                    k = tr_len[0]
                    tr[k, 0], tr[k, 1], tr[k, 2], tr[k, 3], tr[k, 4] = c, t0, 2.0, st_k[s], now
                    tr_len[0] = k + 1
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


class FastEngine(Engine):
    """One run of a scenario on the compiled kernel (see the module docstring)."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int | np.random.SeedSequence = 0,
        settings: SimulatorSettings | None = None,
        trace: bool = False,
    ):
        super().__init__(scenario, settings, trace)
        streams = Streams(scenario, seed)
        devs, chains, regions = scenario.devices, scenario.chains, scenario.regions
        n, m = len(devs), len(chains)
        inf = math.inf
        caps = np.array([d.capacity for d in devs], dtype=np.int64)
        regions_of = [[] for _ in devs]
        for r, reg in enumerate(scenario.regions):
            for name in reg.devices:
                regions_of[scenario.device_id(name)].append(r)
        reg_ptr = np.cumsum([0] + [len(x) for x in regions_of]).astype(np.int64)
        reg_idx = np.array([r for x in regions_of for r in x], dtype=np.int64)
        flat = [(c, k, st) for c, ch in enumerate(chains) for k, st in enumerate(ch.stages)]
        first, index = [], 0
        for ch in chains:
            first.append(index)
            index += len(ch.stages)
        dev_memlim = np.array(
            [inf if d.memory is None else d.memory * (1 + MEMORY_SLACK) for d in devs]
        )
        sc = (
            np.array([d.speed for d in devs], dtype=np.float64),
            caps,
            dev_memlim,
            np.array([d.discipline == "ps" for d in devs]),
            reg_ptr,
            reg_idx,
            np.array([inf if r.capacity is None else r.capacity for r in regions] or [0.0]),
            np.array(
                [inf if r.memory is None else r.memory * (1 + MEMORY_SLACK) for r in regions]
                or [0.0]
            ),
            np.array([c for c, _, _ in flat], dtype=np.int64),
            np.array([k for _, k, _ in flat], dtype=np.int64),
            np.array([scenario.device_id(st.device) for _, _, st in flat], dtype=np.int64),
            np.array([st.work for _, _, st in flat], dtype=np.float64),
            np.array([st.job_memory for _, _, st in flat], dtype=np.float64),
            np.array([_exit_kind(st.exit_prob) for _, _, st in flat], dtype=np.int64),
            np.array([st.exit_prob for _, _, st in flat], dtype=np.float64),
            np.array([st.exit_accuracy or 0.0 for _, _, st in flat], dtype=np.float64),
            np.array(
                [first[c] + k + 1 if k + 1 < len(chains[c].stages) else -1 for c, k, _ in flat],
                dtype=np.int64,
            ),
            np.array(
                [
                    bool(regions_of[scenario.device_id(st.device)])
                    or (st.job_memory > 0 and dev_memlim[scenario.device_id(st.device)] < inf)
                    for _, _, st in flat
                ]
            ),
            np.array([st.distribution != "det" for _, _, st in flat]),
            np.array(first, dtype=np.int64),
        )
        n_st = len(flat)
        self._arrival_draws = streams.arrival_draws
        self._req_draws = [streams.requirement_draws[c][k] for c, k, _ in flat]
        self._exit_draws = [streams.exit_draws[c][k] for c, k, _ in flat]
        self._rnd = (
            np.zeros((m, BLOCK)),
            np.full(m, BLOCK, dtype=np.int64),
            np.zeros((n_st, BLOCK)),
            np.full(n_st, BLOCK, dtype=np.int64),
            np.zeros((n_st, BLOCK)),
            np.full(n_st, BLOCK, dtype=np.int64),
        )
        width = max(chain_width(len(ch.stages)) for ch in chains)
        self._widths = [chain_width(len(ch.stages)) for ch in chains]
        self._st = (
            np.zeros(1),  # clock
            np.full(m, inf),  # next arrival per chain
            np.full(n, inf),  # next completion per device
            np.zeros((m, width)),  # per-chain counters (batch-means layout)
            np.zeros(n_st, dtype=np.int64),  # stage arrivals
            np.zeros(n_st, dtype=np.int64),  # stage drops
            np.zeros(n, dtype=np.int64),  # jobs per device
            np.zeros(n),  # memory held per device
            np.zeros(n),  # time of the device's last change
            np.zeros(n),  # integral of jobs
            np.zeros(n),  # busy time
            np.zeros(n),  # PS virtual time
            np.zeros(n),  # PS time of the last virtual-time update
            np.zeros(max(len(scenario.regions), 1), dtype=np.int64),
            np.zeros(max(len(scenario.regions), 1)),
            np.zeros(m, dtype=np.int64),  # jobs in the system per chain
            np.zeros(m, dtype=np.int64),  # jobs dropped after their first stage
            np.zeros(m),  # their summed time in the system
            np.zeros(1, dtype=np.int64),  # PS arrival sequence number
        )
        cap_max = int(caps.max())
        self._q = (
            np.cumsum(np.concatenate([[0], caps[:-1]])).astype(np.int64),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
            np.zeros(int(caps.sum()), dtype=np.int64),
            np.full(n, -1, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
            np.zeros((n, cap_max)),
            np.zeros((n, cap_max), dtype=np.int64),
            np.zeros((n, cap_max), dtype=np.int64),
        )
        slots = int(caps.sum()) + 1
        self._jobs = (
            np.zeros(slots, dtype=np.int64),
            np.zeros(slots),
            np.zeros(slots, dtype=np.int64),
            np.zeros(slots),
            np.arange(slots, dtype=np.int64),
            np.array([slots - 1], dtype=np.int64),
        )
        self._trace = (np.zeros((4096 if trace else 1, 5)), np.zeros(1, dtype=np.int64), trace)
        self._sc = sc

    # ---- the Engine protocol ------------------------------------------------------------------
    def start(self) -> None:
        buf, pos = self._rnd[0], self._rnd[1]
        ch_next = self._st[1]
        for c, draw in enumerate(self._arrival_draws):
            buf[c] = draw()
            ch_next[c] = buf[c, 0]
            pos[c] = 1

    def advance(self, until: float) -> None:
        while True:
            status, which = _advance(
                until, self._sc, self._rnd, self._st, self._q, self._jobs, self._trace
            )
            if status == _DONE:
                return
            if status == _REFILL_ARRIVAL:
                self._refill(0, which, self._arrival_draws[which])
            elif status == _REFILL_REQUIREMENT:
                self._refill(2, which, self._req_draws[which])
            elif status == _REFILL_EXIT:
                self._refill(4, which, self._exit_draws[which])
            else:
                self._drain_trace()

    def _refill(self, slot: int, i: int, draw) -> None:
        self._rnd[slot][i] = draw()
        self._rnd[slot + 1][i] = 0

    def _drain_trace(self) -> None:
        tr, tr_len, _ = self._trace
        k = int(tr_len[0])
        self.trace.extend(
            (int(c), t0, _OUTCOMES[int(o)], int(s), t1) for c, t0, o, s, t1 in tr[:k].tolist()
        )
        tr_len[0] = 0

    def run_until(self, horizon: float) -> list[tuple]:
        out = super().run_until(horizon)
        if self.trace is not None:
            self._drain_trace()
        return out

    @property
    def now(self) -> float:
        return float(self._st[0][0])

    def counts_row(self) -> np.ndarray:
        counts = self._st[3]
        return np.concatenate([counts[c, :w] for c, w in enumerate(self._widths)])

    def snapshot_state(self) -> dict:
        now = self.now
        (_, _, _, counts, st_arrived, st_dropped, dev_n, _, dev_t, area, busy, *_rest) = self._st
        ch_lost, ch_lost_soj = self._st[16], self._st[17]
        for d in range(len(dev_n)):  # the same float operations as the SimPy engine's flush
            dt = now - dev_t[d]
            dev_t[d] = now
            area[d] += dev_n[d] * dt
            if dev_n[d]:
                busy[d] += dt
        return {
            "time": now,
            "chains": [
                (counts[c, :w].tolist(), int(ch_lost[c]), float(ch_lost_soj[c]))
                for c, w in enumerate(self._widths)
            ],
            "stages": list(zip(st_arrived.tolist(), st_dropped.tolist())),
            "devices": list(zip(area.tolist(), busy.tolist())),
        }

    def in_system(self) -> list[int]:
        return self._st[15].tolist()

    @property
    def events(self) -> int:
        arrivals = self._st[3][:, 0].sum()
        admitted = (self._st[4] - self._st[5]).sum()
        return int(arrivals + admitted - self._st[6].sum())


def _exit_kind(p: float) -> int:
    if p <= 0.0:
        return _EXIT_NEVER
    return _EXIT_ALWAYS if p >= 1.0 else _EXIT_DRAW
