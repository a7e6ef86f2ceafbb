"""Batch means: confidence half-widths and the stopping rule of a steady-state run.

The engine snapshots cumulative per-chain counters at equally spaced times after the warm-up; a
batch is the difference of two consecutive snapshots. When there are `2 * min_batches` batches,
adjacent ones are merged (every other snapshot is dropped and the batch length doubles), so a run
always has between `min_batches` and `2 * min_batches` batches, and batches grow with the run until
they are long enough to be nearly independent.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import stdtrit  # the t quantile (what scipy.stats.t.ppf computes), light to load

# Per-chain counter layout in a snapshot row (exits per stage follow, see `chain_width`).
ARRIVED, COMPLETED, DROPPED, RESPONSE_SUM, ACCURACY_SUM = range(5)
FIXED = 5


# A chain that completes nothing while this share of its arrivals is dropped has lost everything.
LOST_CHAIN_SHARE = 0.9


def chain_lost(arrived, completed, dropped):
    """True where a chain completed nothing over a window and dropped (nearly) all its arrivals."""
    arrived, completed, dropped = (
        np.asarray(x, dtype=float) for x in (arrived, completed, dropped)
    )
    return (completed == 0) & (arrived > 0) & (dropped >= LOST_CHAIN_SHARE * arrived)


def chain_width(n_stages: int) -> int:
    return FIXED + n_stages


@dataclass(frozen=True)
class Estimate:
    mean: float
    half_width: float


@lru_cache(maxsize=256)
def t_quantile(n_batches: int, level: float = 0.95) -> float:
    return float(stdtrit(n_batches - 1, 0.5 + level / 2.0))


def batch_estimate(values: np.ndarray, point: float, level: float = 0.95) -> Estimate:
    """Half-width of `point` from per-batch values (NaN batches make the half-width infinite)."""
    k = len(values)
    if k < 2 or not np.all(np.isfinite(values)):
        return Estimate(point, float("inf"))
    hw = t_quantile(k, level) * float(np.std(values, ddof=1)) / np.sqrt(k)
    return Estimate(point, hw)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


class BatchMeans:
    """Snapshots of cumulative counters and the estimates drawn from them."""

    def __init__(
        self,
        stage_counts: list[int],
        arrival_rates: list[float],
        min_batches: int = 32,
        level: float = 0.95,
    ):
        if min_batches < 2:
            raise ValueError(f"min_batches: got {min_batches}; must be >= 2")
        self.stage_counts = stage_counts
        self.arrival_rates = arrival_rates
        self.offsets = np.cumsum([0] + [chain_width(s) for s in stage_counts])
        self.min_batches = min_batches
        self.level = level
        self.times: list[float] = []
        self.rows: list[np.ndarray] = []

    @property
    def n_batches(self) -> int:
        return max(len(self.rows) - 1, 0)

    def add(self, time: float, row: np.ndarray) -> bool:
        """Record a snapshot; returns True when batches were merged (batch length doubled)."""
        self.times.append(time)
        self.rows.append(row)
        if self.n_batches >= 2 * self.min_batches:
            self.times = self.times[::2]
            self.rows = self.rows[::2]
            return True
        return False

    def _batches(self) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(self.rows)
        return np.diff(rows, axis=0), np.diff(np.asarray(self.times))

    def chain_estimates(self, c: int) -> dict[str, Estimate]:
        """Throughput, loss ratio, response time, accuracy and exit fractions of chain `c`."""
        batches, _ = self._batches()
        total = self.rows[-1] - self.rows[0]
        o = self.offsets[c]
        b = batches[:, o : self.offsets[c + 1]]
        t = total[o : self.offsets[c + 1]]
        arrived, completed = t[ARRIVED], t[COMPLETED]
        # Throughput by the indirect estimator: the arrival rate is known exactly, so
        # rate * completed / arrived removes the Poisson noise of the arrival count from
        # completed / time (same limit, far smaller variance at low loss).
        rate = self.arrival_rates[c]
        out = {
            "throughput": batch_estimate(
                rate * _ratio(b[:, COMPLETED], b[:, ARRIVED]),
                rate * completed / arrived if arrived else float("nan"),
                self.level,
            ),
            "loss_ratio": batch_estimate(
                _ratio(b[:, DROPPED], b[:, ARRIVED]),
                t[DROPPED] / arrived if arrived else float("nan"),
                self.level,
            ),
        }
        point = (lambda x: x / completed) if completed else (lambda x: float("nan"))
        per_batch = lambda col: _ratio(b[:, col], b[:, COMPLETED])  # noqa: E731
        out["response_time"] = batch_estimate(
            per_batch(RESPONSE_SUM), point(t[RESPONSE_SUM]), self.level
        )
        out["accuracy"] = batch_estimate(
            per_batch(ACCURACY_SUM), point(t[ACCURACY_SUM]), self.level
        )
        for k in range(self.stage_counts[c]):
            out[f"exit_fraction_{k}"] = batch_estimate(
                per_batch(FIXED + k), point(t[FIXED + k]), self.level
            )
        return out

    def converged(self, target: float) -> bool:
        """True when every chain's throughput and response time are within `target` (relative).

        The same estimates as `chain_estimates`, computed for all chains at once (it runs after
        every batch). A chain that loses everything cannot have a response time: it counts as
        converged when it completed nothing over the whole window while at least
        `LOST_CHAIN_SHARE` of its arrivals were dropped (`chain_lost`). A chain that merely has
        not completed anything yet (slow service) is not converged.
        """
        k = self.n_batches
        if k < self.min_batches:
            return False
        rows = np.asarray(self.rows)
        starts = self.offsets[:-1]
        cols = np.concatenate([starts + ARRIVED, starts + COMPLETED, starts + RESPONSE_SUM])
        b = np.diff(rows[:, cols], axis=0)
        total = rows[-1] - rows[0]
        m = len(starts)
        arrived, completed, response = b[:, :m], b[:, m : 2 * m], b[:, 2 * m :]
        rates = np.asarray(self.arrival_rates)
        tput = rates * _ratio(completed, arrived)
        resp = _ratio(response, completed)
        with np.errstate(divide="ignore", invalid="ignore"):
            tput_point = rates * total[starts + COMPLETED] / total[starts + ARRIVED]
            resp_point = total[starts + RESPONSE_SUM] / total[starts + COMPLETED]
        q = t_quantile(k, self.level) / np.sqrt(k)
        for values, point in ((tput, tput_point), (resp, resp_point)):
            finite = np.all(np.isfinite(values), axis=0)
            hw = np.where(finite, q * np.std(np.where(finite, values, 0.0), axis=0, ddof=1), np.inf)
            ok = hw <= target * np.abs(point)
            if values is resp:
                ok |= chain_lost(total[starts + ARRIVED], total[starts + COMPLETED],
                                 total[starts + DROPPED])  # fmt: skip
            if not np.all(ok):
                return False
        return True
