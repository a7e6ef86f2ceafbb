"""Accuracy metrics of QoS predictions (SPEC section 5), overall and per load band.

A load band is set by the most loaded device's offered load in the sample: below 0.5, 0.5-0.9,
0.9-1.2, above 1.2. MAPE skips rows whose true value is 0 (undefined there) and says how many rows
it used; MAE uses every row.

Where the predictions carry interval bounds (`<quantity>_lower`, `<quantity>_upper`), the table
also gives their coverage (the share of chains whose true value lies within them, bounds
included) and their mean width, for the throughput ratio and the response ratio.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LOAD_BANDS = (
    ("<0.5", 0.0, 0.5),
    ("0.5-0.9", 0.5, 0.9),
    ("0.9-1.2", 0.9, 1.2),
    (">1.2", 1.2, np.inf),
)

# metric name -> (kind, column)
METRICS = {
    "mape_throughput_ratio": ("mape", "throughput_ratio"),
    "mape_response_ratio": ("mape", "response_ratio"),
    "mae_loss_ratio": ("mae", "loss_ratio"),
    "mape_throughput": ("mape", "throughput"),
    "mape_response_time": ("mape", "response_time"),
}
INTERVAL_METRICS = ("throughput_ratio", "response_ratio")


def mape(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    ok = np.isfinite(true) & np.isfinite(pred) & (true != 0)
    return float(np.mean(np.abs(pred[ok] - true[ok]) / np.abs(true[ok]))) if ok.any() else np.nan


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    ok = np.isfinite(true) & np.isfinite(pred)
    return float(np.mean(np.abs(pred[ok] - true[ok]))) if ok.any() else np.nan


def coverage(lower: np.ndarray, upper: np.ndarray, true: np.ndarray) -> float:
    """The share of rows (with a known true value and bounds) where lower <= true <= upper."""
    lower, upper, true = (np.asarray(a, float) for a in (lower, upper, true))
    ok = np.isfinite(true) & ~np.isnan(lower) & ~np.isnan(upper)
    inside = (lower[ok] <= true[ok]) & (true[ok] <= upper[ok])
    return float(np.mean(inside)) if ok.any() else np.nan


def mean_width(lower: np.ndarray, upper: np.ndarray, true: np.ndarray) -> float:
    """The mean of upper - lower over the rows `coverage` counts (inf if one is unbounded)."""
    lower, upper, true = (np.asarray(a, float) for a in (lower, upper, true))
    ok = np.isfinite(true) & ~np.isnan(lower) & ~np.isnan(upper)
    return float(np.mean(upper[ok] - lower[ok])) if ok.any() else np.nan


def load_band(max_offered_load: np.ndarray) -> np.ndarray:
    x = np.asarray(max_offered_load, float)
    out = np.empty(len(x), dtype=object)
    for name, lo, hi in LOAD_BANDS:
        out[(x >= lo) & (x < hi)] = name
    return out


def qos_metrics(pred: pd.DataFrame, true: pd.DataFrame, max_load: np.ndarray) -> pd.DataFrame:
    """Rows: 'all' and each load band; columns: every metric whose column both frames have,
    and the coverage and mean width of the intervals `pred` has bounds for.

    `pred` and `true` hold one row per chain, aligned; `max_load` is each row's sample's most
    loaded device's offered load.
    """
    bands = load_band(max_load)
    groups = [("all", np.ones(len(true), bool))] + [
        (name, bands == name) for name, _, _ in LOAD_BANDS
    ]
    rows = []
    for name, mask in groups:
        row = {"band": name, "chains": int(mask.sum())}
        for metric, (kind, col) in METRICS.items():
            if col in pred and col in true:
                fn = mape if kind == "mape" else mae
                row[metric] = fn(pred[col].to_numpy()[mask], true[col].to_numpy()[mask])
        for col in INTERVAL_METRICS:
            if f"{col}_lower" in pred and f"{col}_upper" in pred and col in true:
                args = (pred[f"{col}_lower"], pred[f"{col}_upper"], true[col])
                args = tuple(a.to_numpy()[mask] for a in args)
                row[f"coverage_{col}"] = coverage(*args)
                row[f"width_{col}"] = mean_width(*args)
        rows.append(row)
    return pd.DataFrame(rows).set_index("band")
