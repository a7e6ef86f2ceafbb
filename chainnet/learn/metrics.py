"""Accuracy metrics of QoS predictions (SPEC section 5), overall and per load band.

A load band is set by the most loaded device's offered load in the sample: below 0.5, 0.5-0.9,
0.9-1.2, above 1.2. MAPE skips rows whose true value is 0 (undefined there) and says how many rows
it used; MAE uses every row.
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


def mape(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    ok = np.isfinite(true) & np.isfinite(pred) & (true != 0)
    return float(np.mean(np.abs(pred[ok] - true[ok]) / np.abs(true[ok]))) if ok.any() else np.nan


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    ok = np.isfinite(true) & np.isfinite(pred)
    return float(np.mean(np.abs(pred[ok] - true[ok]))) if ok.any() else np.nan


def load_band(max_offered_load: np.ndarray) -> np.ndarray:
    x = np.asarray(max_offered_load, float)
    out = np.empty(len(x), dtype=object)
    for name, lo, hi in LOAD_BANDS:
        out[(x >= lo) & (x < hi)] = name
    return out


def qos_metrics(pred: pd.DataFrame, true: pd.DataFrame, max_load: np.ndarray) -> pd.DataFrame:
    """Rows: 'all' and each load band; columns: every metric whose column both frames have.

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
        rows.append(row)
    return pd.DataFrame(rows).set_index("band")
