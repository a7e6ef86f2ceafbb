"""Plots of a model's quality: predicted against simulated ratios, and learning curves.

Drawn on `matplotlib.figure.Figure` objects, never pyplot: files only, no window, and a user's
interactive backend is left alone."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

RATIOS = ("throughput_ratio", "response_ratio")


def plot_predictions(df: pd.DataFrame, path: str | Path, title: str = "") -> None:
    fig = Figure(figsize=(9, 4.2))
    axes = fig.subplots(1, 2)
    for ax, name in zip(axes, RATIOS):
        ax.scatter(df[name], df[f"pred_{name}"], s=4, alpha=0.4)
        ax.plot([0, 1], [0, 1], color="black", lw=0.8)
        ax.set_xlabel(f"simulated {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_learning_curves(metrics_csv: str | Path, path: str | Path) -> None:
    """Train and validation loss per epoch from a CSVLogger's metrics.csv."""
    log = pd.read_csv(metrics_csv)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for col, label in (("train/loss", "train"), ("val/loss", "validation")):
        if col in log:
            curve = log.dropna(subset=[col]).groupby("epoch")[col].mean()
            ax.plot(curve.index, curve.to_numpy(), marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("L1 loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
