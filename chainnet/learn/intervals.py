"""Calibrated prediction intervals for the two ratios a model predicts (split conformal, Mondrian
by load band), kept in the checkpoint beside the weights.

Method: split conformal prediction on the validation split. The nonconformity score of a chain is
the absolute residual of its throughput ratio, |pred - true|, and that of the log of its response
ratio, |log pred - log true| (so response-ratio intervals are multiplicative and stay positive).
Scores are grouped by the load band of the scenario's most loaded device (`LOAD_BANDS` of
`chainnet.learn.metrics`: <0.5, 0.5-0.9, 0.9-1.2, >1.2; offered loads with exits, no losses,
`scenario_max_load`): a Mondrian split, because errors differ by two orders of magnitude between
a light and an overloaded system, and one pooled quantile would cover the light bands almost
always and the overloaded one too rarely.

For a band of n scores and a level a, the interval's half-width is the k-th smallest score with
k = ceil((n + 1) a) (the finite-sample correction: coverage >= a for an exchangeable new chain).
When k > n the band has too few chains for that level, and the quantile of all bands' scores
together is used; when even that is too few, the interval is unbounded (throughput ratio [0, 1],
response ratio (0, inf)). Half-widths are computed for a grid of levels (`LEVELS`); a level
between two grid points uses the next higher one, so coverage is never below the level asked for,
and a band's half-width never shrinks as the level rises (the larger of its own and the pooled).

`PredictionIntervals` holds them as buffers of the LightningModule (`fitted` False until fitted),
so every checkpoint carries the intervals calibrated on its own validation predictions and still
loads with `torch.load(weights_only=True)`; a checkpoint made before them loads with `fitted`
False.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch_geometric.utils import scatter

from chainnet.learn.metrics import LOAD_BANDS
from chainnet.learn.prior import nominal_loads
from chainnet.learn.recorded import Recorded

QUANTITIES = ("throughput_ratio", "response_ratio")
LEVELS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)
BANDS = tuple(name for name, _, _ in LOAD_BANDS)
EDGES = tuple(lo for _, lo, _ in LOAD_BANDS[1:])  # lower edges of every band but the first
TINY_RATIO = 1e-30  # response ratios are floored here before their log
# Where a band's half-width comes from (the `source` buffer).
UNBOUNDED, OWN, POOLED = 0, 1, 2


def scenario_max_load(data) -> torch.Tensor:
    """Per chain of a graph (one scenario or a batch): the offered load of its scenario's most
    loaded device (rate x visit probability x mean service time summed per device; exits
    counted, no losses), as the datasets' `max_offered_load`. float64, on the graph's device."""
    n_chain = data["chain"].num_nodes
    _, device_load = nominal_loads(data)
    dev_graph = getattr(data["device"], "batch", None)
    chain_graph = getattr(data["chain"], "batch", None)
    if dev_graph is None or chain_graph is None:  # one scenario
        return device_load.max().expand(n_chain).clone()
    n_graph = int(chain_graph.max()) + 1 if n_chain else 0
    most = scatter(device_load, dev_graph, 0, dim_size=n_graph, reduce="max")
    return most[chain_graph]


def band_index(max_load) -> np.ndarray:
    """The load band (index into `BANDS`) of each offered load (numpy or torch, any shape)."""
    if isinstance(max_load, torch.Tensor):
        max_load = max_load.detach().cpu().numpy()
    return np.searchsorted(np.asarray(EDGES), np.asarray(max_load, dtype=np.float64), "right")


def nonconformity(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """[n, 2] scores: |throughput ratio residual| and |log response ratio residual|; NaN where
    the truth is unknown (a chain that completed nothing has no response ratio)."""
    pred, true = pred.double(), true.double()
    tput = (pred[:, 0] - true[:, 0]).abs()
    log_p = torch.log(pred[:, 1].clamp(min=TINY_RATIO))
    log_t = torch.log(true[:, 1].clamp(min=TINY_RATIO))
    resp = (log_p - log_t).abs()
    scores = torch.stack([tput, resp], dim=1)
    return torch.where(torch.isfinite(true) & torch.isfinite(pred), scores, torch.nan)


def conformal_quantile(scores: torch.Tensor, level: float) -> float | None:
    """The k-th smallest of `scores` with k = ceil((n + 1) level): a half-width covering a new
    exchangeable score with probability >= level. None when k > n (too few scores)."""
    n = len(scores)
    # The tolerance keeps (n + 1) x level from rounding up past an integer ((9 + 1) x 0.9).
    k = math.ceil((n + 1) * level - 1e-9)
    if k > n or k < 1:
        return None
    value = float(torch.kthvalue(scores.double().cpu(), k).values)
    return value if math.isfinite(value) else None


def check_level(level) -> float:
    """`level` as a float in (0, 1), or one ValueError naming it."""
    ok = isinstance(level, numbers.Real) and not isinstance(level, bool)
    if not ok or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level: got {level!r}; must be a number between 0 and 1 (such as 0.9)")
    return float(level)


def grid_level(level) -> int:
    """The index in `LEVELS` of the smallest grid level >= `level` (conservative)."""
    level = check_level(level)
    for i, grid in enumerate(LEVELS):
        if grid >= level - 1e-12:
            return i
    raise ValueError(
        f"level: got {level!r}; intervals are calibrated for levels up to {LEVELS[-1]}"
    )


class PredictionIntervals(Recorded):
    """Conformal half-widths per load band, quantity and level of `LEVELS` (see the module
    docstring), fitted on validation scores."""

    # a checkpoint made before them (or on another grid) loads them unknown
    RECORDED = ("half_width", "source", "count", "fitted")

    def __init__(self):
        super().__init__()
        shape = (len(BANDS), len(QUANTITIES), len(LEVELS))
        self.register_buffer("half_width", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("source", torch.zeros(shape, dtype=torch.int8))
        self.register_buffer("count", torch.zeros(shape[:2], dtype=torch.long))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, scores: torch.Tensor, max_load) -> PredictionIntervals:
        """Calibrate on `scores` [n, 2] (`nonconformity`) of chains whose scenarios' most loaded
        device has offered load `max_load` [n] (`scenario_max_load`). No scores: left as it was."""
        scores = scores.detach().double().cpu().reshape(-1, len(QUANTITIES))
        if len(scores) == 0:
            return self
        bands = torch.from_numpy(band_index(max_load)).long()
        half = torch.zeros_like(self.half_width, device="cpu")
        source = torch.zeros_like(self.source, device="cpu")
        count = torch.zeros_like(self.count, device="cpu")
        for j in range(len(QUANTITIES)):
            known = ~torch.isnan(scores[:, j])
            pooled = scores[known, j]
            for b in range(len(BANDS)):
                own = scores[known & (bands == b), j]
                count[b, j] = len(own)
                for i, level in enumerate(LEVELS):
                    for kind, values in ((OWN, own), (POOLED, pooled)):
                        value = conformal_quantile(values, level)
                        if value is not None:
                            half[b, j, i], source[b, j, i] = value, kind
                            break
        # A higher level never gets a narrower interval: where a band has enough chains for a
        # low level but falls back to the pooled scores at a higher one, those may be smaller.
        half = torch.cummax(half, dim=2).values
        self.half_width.copy_(half)
        self.source.copy_(source)
        self.count.copy_(count)
        self.fitted.fill_(True)
        return self

    def half_widths(self, bands: np.ndarray, level) -> np.ndarray:
        """[n, 2] half-widths at `level` for chains in load bands `bands`; inf where unbounded."""
        i = grid_level(level)
        if not bool(self.fitted):
            raise ValueError("no calibrated intervals: fit them on validation scores first")
        half = self.half_width[:, :, i].cpu().numpy().copy()
        half[self.source[:, :, i].cpu().numpy() == UNBOUNDED] = np.inf
        return half[np.asarray(bands, dtype=np.int64)]

    def bounds(self, pred: np.ndarray, max_load: np.ndarray, level) -> dict[str, np.ndarray]:
        """Lower and upper bounds of both ratios (`<quantity>_lower`, `<quantity>_upper`) for
        predictions `pred` [n, 2] of chains whose scenarios' most loaded device has `max_load`:
        throughput ratio clipped to [0, 1]; response ratio pred x exp(-+ half-width)."""
        pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
        half = self.half_widths(band_index(max_load), level)
        tput, resp = pred[:, 0], pred[:, 1]
        with np.errstate(over="ignore", invalid="ignore"):
            return {
                "throughput_ratio_lower": np.clip(tput - half[:, 0], 0.0, 1.0),
                "throughput_ratio_upper": np.clip(tput + half[:, 0], 0.0, 1.0),
                "response_ratio_lower": resp * np.exp(-half[:, 1]),
                "response_ratio_upper": np.where(
                    np.isinf(half[:, 1]) & (resp > 0), np.inf, resp * np.exp(half[:, 1])
                ),
            }


def qos_bounds(
    ratios: dict[str, np.ndarray], rate: np.ndarray, service: np.ndarray, tput_max: np.ndarray
) -> dict[str, np.ndarray]:
    """Bounds of every interval quantity from those of the two ratios (`PredictionIntervals.
    bounds`), per chain: the throughput ratio's upper bound is kept under `tput_max` (the most
    the chain can complete / its arrival rate); throughput = ratio x `rate`; loss ratio = 1 -
    throughput ratio (bounds swapped); response time = `service` (the sum of the chain's mean
    service times) / response ratio (bounds swapped; an unbounded ratio gives 0 and inf)."""
    t_lo = np.minimum(ratios["throughput_ratio_lower"], tput_max)
    t_hi = np.minimum(ratios["throughput_ratio_upper"], tput_max)
    r_lo, r_hi = ratios["response_ratio_lower"], ratios["response_ratio_upper"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "throughput_lower": t_lo * rate,
            "throughput_upper": t_hi * rate,
            "loss_ratio_lower": 1.0 - t_hi,
            "loss_ratio_upper": 1.0 - t_lo,
            "response_time_lower": np.where(np.isinf(r_hi), 0.0, service / r_hi),
            "response_time_upper": np.where(
                r_lo > 0, service / r_lo, np.where(r_lo == 0, np.inf, np.nan)
            ),
            "throughput_ratio_lower": t_lo,
            "throughput_ratio_upper": t_hi,
            "response_ratio_lower": r_lo,
            "response_ratio_upper": r_hi,
        }
