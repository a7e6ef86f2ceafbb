"""The fast engine: the SimPy engine's event logic compiled with numba, behind the Engine protocol.

Same semantics, same random streams consumed in the same order, and the same floating-point
expressions in the same order as `SimPyEngine`, so on the same seed it gives the same per-job
outcomes and, through the shared run loop (`chainnet.sim.base`), the same labels. Tests hold it
to that.

This module allocates the kernel's named arrays (`chainnet.sim.kernel`) from the scenario's
`Layout`, runs the kernel, refills the random buffers it asks for (exactly the blocks the SimPy
engine would draw), and reads the counters back for the run loop.
"""

from __future__ import annotations

import numpy as np

from chainnet.scenario import Scenario
from chainnet.sim.base import Engine
from chainnet.sim.kernel import (
    DONE,
    REFILL_ARRIVAL,
    REFILL_EXIT,
    REFILL_REQUIREMENT,
    TRACE_OUTCOMES,
    Draws,
    Jobs,
    Queues,
    State,
    TraceBuffer,
)
from chainnet.sim.kernel import advance as _advance
from chainnet.sim.layout import Layout, build_layout
from chainnet.sim.result import SimulatorSettings
from chainnet.sim.stats import ARRIVED, chain_width
from chainnet.sim.streams import BLOCK, Streams

_TRACE_ROWS = 4096  # trace rows the kernel fills before Python drains them


def _new_draws(chains: int, stages: int) -> Draws:
    """Empty buffers: every position at BLOCK, so that the first use asks for a refill."""
    return Draws(
        arrival=np.zeros((chains, BLOCK)),
        arrival_pos=np.full(chains, BLOCK, dtype=np.int64),
        requirement=np.zeros((stages, BLOCK)),
        requirement_pos=np.full(stages, BLOCK, dtype=np.int64),
        exit=np.zeros((stages, BLOCK)),
        exit_pos=np.full(stages, BLOCK, dtype=np.int64),
    )


def _new_state(lay: Layout, width: int) -> State:
    m, n, n_st, n_reg = len(lay.ch_first), len(lay.dev_cap), len(lay.st_chain), len(lay.reg_cap)

    def ints(size: int) -> np.ndarray:
        return np.zeros(size, dtype=np.int64)

    return State(
        clock=np.zeros(1),
        ch_next=np.full(m, np.inf),
        dev_next=np.full(n, np.inf),
        counts=np.zeros((m, width)),
        st_arrived=ints(n_st),
        st_dropped=ints(n_st),
        dev_n=ints(n),
        dev_mem=np.zeros(n),
        dev_t=np.zeros(n),
        dev_area=np.zeros(n),
        dev_busy=np.zeros(n),
        dev_vtime=np.zeros(n),
        dev_vt=np.zeros(n),
        reg_n=ints(n_reg),
        reg_mem=np.zeros(n_reg),
        ch_n=ints(m),
        ch_lost=ints(m),
        ch_lost_soj=np.zeros(m),
        ps_seq=ints(1),
    )


def _new_queues(lay: Layout) -> Queues:
    caps = lay.dev_cap
    n, widest = len(caps), int(caps.max())
    return Queues(
        fifo_off=np.cumsum(np.concatenate([[0], caps[:-1]])).astype(np.int64),
        fifo_head=np.zeros(n, dtype=np.int64),
        fifo_len=np.zeros(n, dtype=np.int64),
        fifo_job=np.zeros(int(caps.sum()), dtype=np.int64),
        in_service=np.full(n, -1, dtype=np.int64),
        heap_len=np.zeros(n, dtype=np.int64),
        heap_tag=np.zeros((n, widest)),
        heap_seq=np.zeros((n, widest), dtype=np.int64),
        heap_job=np.zeros((n, widest), dtype=np.int64),
    )


def _new_jobs(lay: Layout) -> Jobs:
    slots = int(lay.dev_cap.sum()) + 1
    return Jobs(
        chain=np.zeros(slots, dtype=np.int64),
        t0=np.zeros(slots),
        stage=np.zeros(slots, dtype=np.int64),
        req=np.zeros(slots),
        free=np.arange(slots, dtype=np.int64),
        free_top=np.array([slots - 1], dtype=np.int64),
    )


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
        self._layout = lay = build_layout(scenario)
        stages = list(zip(lay.st_chain.tolist(), lay.st_k.tolist()))
        rnd = _new_draws(len(lay.ch_first), len(stages))
        # For each refill status: the buffer, its positions and each of its streams' next block.
        self._refills = {
            REFILL_ARRIVAL: (rnd.arrival, rnd.arrival_pos, streams.arrival_draws),
            REFILL_REQUIREMENT: (
                rnd.requirement,
                rnd.requirement_pos,
                [streams.requirement_draws[c][k] for c, k in stages],
            ),
            REFILL_EXIT: (
                rnd.exit,
                rnd.exit_pos,
                [streams.exit_draws[c][k] for c, k in stages],
            ),
        }
        self._widths = [chain_width(k) for k in lay.ch_stages.tolist()]
        self._state = _new_state(lay, max(self._widths))
        self._trace = TraceBuffer(
            np.zeros((_TRACE_ROWS if trace else 1, 5)), np.zeros(1, dtype=np.int64), trace
        )
        groups = (lay, rnd, self._state, _new_queues(lay), _new_jobs(lay), self._trace)
        self._kernel_args = tuple(tuple(g) for g in groups)  # see `kernel.advance`

    # ---- the Engine protocol ------------------------------------------------------------------
    def start(self) -> None:
        buf, pos, draws = self._refills[REFILL_ARRIVAL]
        ch_next = self._state.ch_next
        for c, draw in enumerate(draws):
            buf[c] = draw()
            ch_next[c] = buf[c, 0]
            pos[c] = 1

    def advance(self, until: float) -> None:
        args = self._kernel_args
        while True:
            status, which = _advance(until, *args)
            if status == DONE:
                return
            if status in self._refills:
                buf, pos, draws = self._refills[status]
                buf[which] = draws[which]()
                pos[which] = 0
            else:
                self._drain_trace()

    def _drain_trace(self) -> None:
        rows, length = self._trace.rows, self._trace.length
        k = int(length[0])
        self.trace.extend(
            (int(c), t0, TRACE_OUTCOMES[int(o)], int(s), t1)
            for c, t0, o, s, t1 in rows[:k].tolist()
        )
        length[0] = 0

    def run_until(self, horizon: float) -> list[tuple]:
        out = super().run_until(horizon)
        if self.trace is not None:
            self._drain_trace()
        return out

    @property
    def now(self) -> float:
        return float(self._state.clock[0])

    def counts_row(self) -> np.ndarray:
        counts = self._state.counts
        return np.concatenate([counts[c, :w] for c, w in enumerate(self._widths)])

    def snapshot_state(self) -> dict:
        now = self.now
        st = self._state
        dev_n, dev_t, area, busy = st.dev_n, st.dev_t, st.dev_area, st.dev_busy
        for d in range(len(dev_n)):  # the same float operations as the SimPy engine's flush
            dt = now - dev_t[d]
            dev_t[d] = now
            area[d] += dev_n[d] * dt
            if dev_n[d]:
                busy[d] += dt
        return {
            "time": now,
            "chains": [
                (st.counts[c, :w].tolist(), int(st.ch_lost[c]), float(st.ch_lost_soj[c]))
                for c, w in enumerate(self._widths)
            ],
            "stages": list(zip(st.st_arrived.tolist(), st.st_dropped.tolist())),
            "devices": list(zip(area.tolist(), busy.tolist())),
        }

    def in_system(self) -> list[int]:
        return self._state.ch_n.tolist()

    @property
    def events(self) -> int:
        st = self._state
        arrivals = st.counts[:, ARRIVED].sum()
        admitted = (st.st_arrived - st.st_dropped).sum()
        return int(arrivals + admitted - st.dev_n.sum())
