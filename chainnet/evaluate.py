"""Evaluation shared by train.py and eval.py: predictions per chain, metrics per load band, plots.

Throughput and response time are derived from the predicted ratios and the chain's inputs:
throughput = throughput_ratio x arrival rate; response time = sum of mean service times /
response_ratio; loss ratio = 1 - throughput_ratio.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch_geometric.loader import DataLoader

from chainnet import analytic
from chainnet.data import SPLITS, QoSDataset, split_of
from chainnet.metrics import qos_metrics
from chainnet.scenario import Scenario

RATIOS = ("throughput_ratio", "response_ratio")


@torch.no_grad()
def predict_graphs(
    net: torch.nn.Module, dataset: QoSDataset, batch_size: int = 256
) -> pd.DataFrame:
    """One row per chain: sample, chain, predicted ratios, fixed-point iterations used."""
    net.eval()
    rows = []
    for batch in DataLoader(dataset, batch_size=batch_size):
        out, _, iterations = net(batch)
        graph = batch["chain"].batch
        sample = batch.sample[graph]
        first = torch.cat([torch.tensor([0]), torch.cumsum(torch.bincount(graph), 0)[:-1]])
        chain = torch.arange(len(graph)) - first[graph]
        rows.append(
            pd.DataFrame(
                {
                    "sample": sample.numpy(),
                    "chain": chain.numpy(),
                    "pred_throughput_ratio": out[:, 0].numpy(),
                    "pred_response_ratio": out[:, 1].numpy(),
                    "iterations": iterations,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def predict_analytic(root: str | Path, split: str, fractions=(0.8, 0.1, 0.1)) -> pd.DataFrame:
    """The analytic baseline's predictions for the chains of one split of a dataset."""
    from datagen.store import read_table

    samples = read_table(root, "samples")
    part = split_of(samples["sample"].to_numpy(), fractions)
    samples = samples[part == SPLITS.index(split)]
    rows = []
    for sid, text in samples[["sample", "scenario"]].itertuples(index=False):
        res = analytic.solve(Scenario.from_json(text))
        for c in range(len(res.throughput_ratio)):
            rows.append(
                {
                    "sample": sid,
                    "chain": c,
                    "pred_throughput_ratio": res.throughput_ratio[c],
                    "pred_response_ratio": res.response_ratio[c],
                    "iterations": res.iterations,
                }
            )
    return pd.DataFrame(rows)


def evaluate(root: str | Path, pred: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics: 'all' and each load band; per-chain table of predictions beside the truth)."""
    from datagen.store import read_table

    chains = read_table(root, "chains")
    samples = read_table(root, "samples")[["sample", "max_offered_load"]]
    df = pred.merge(chains, on=["sample", "chain"], how="left").merge(samples, on="sample")
    if df["throughput_ratio"].isna().any():
        raise ValueError(f"predictions for chains that {root} does not hold")
    p = pd.DataFrame(
        {
            "throughput_ratio": df["pred_throughput_ratio"],
            "response_ratio": df["pred_response_ratio"],
            "loss_ratio": 1.0 - df["pred_throughput_ratio"],
            "throughput": df["pred_throughput_ratio"] * df["arrival_rate"],
            "response_time": df["service_time_sum"] / df["pred_response_ratio"],
        }
    )
    t = df[["throughput_ratio", "response_ratio", "loss_ratio", "throughput", "response_time"]]
    return qos_metrics(p, t, df["max_offered_load"].to_numpy()), df


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_predictions(df: pd.DataFrame, path: str | Path, title: str = "") -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
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
    plt.close(fig)


def plot_learning_curves(metrics_csv: str | Path, path: str | Path) -> None:
    """Train and validation loss per epoch from a CSVLogger's metrics.csv."""
    plt = _pyplot()
    log = pd.read_csv(metrics_csv)
    fig, ax = plt.subplots(figsize=(6, 4))
    for col, label in (("train/loss", "train"), ("val/loss", "validation")):
        if col in log:
            curve = log.dropna(subset=[col]).groupby("epoch")[col].mean()
            ax.plot(curve.index, curve.to_numpy(), marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("L1 loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def metrics_text(table: pd.DataFrame) -> str:
    return table.to_string(float_format=lambda x: f"{x:.4f}")
