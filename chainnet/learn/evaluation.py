"""Evaluation shared by train.py and eval.py: predictions per chain and metrics per load band.

Throughput and response time are derived from the predicted ratios and the chain's inputs:
throughput = throughput_ratio x arrival rate; response time = sum of mean service times /
response_ratio; loss ratio = 1 - throughput_ratio. Every prediction, the analytic baseline's
too, is first kept physically possible as the surrogate keeps it (`physical_limits`): a chain's
throughput never above what its path can serve (none, where a stage can never admit a job
reached by all), so the figures are those of what a user is given. With a checkpoint's
calibrated intervals (`chainnet.learn.intervals`) and a level, the predictions get bounds on both
ratios and the metrics their coverage and mean width per load band.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from chainnet.dataset.store import read_table
from chainnet.learn.batching import graph_loader
from chainnet.learn.data import SPLITS, QoSDataset, split_of
from chainnet.learn.intervals import PredictionIntervals
from chainnet.learn.limits import physical_limits
from chainnet.learn.metrics import qos_metrics
from chainnet.learn.plots import plot_learning_curves, plot_predictions
from chainnet.queueing import analytic
from chainnet.scenario import Scenario

RATIOS = ("throughput_ratio", "response_ratio")


@torch.no_grad()
def predict_graphs(
    net: torch.nn.Module, dataset: QoSDataset, batch_size: int = 256
) -> pd.DataFrame:
    """One row per chain: sample, chain, predicted ratios, fixed-point iterations used. Each
    batch runs on the network's device."""
    net.eval()
    device = next(net.parameters()).device
    rows = []
    for batch in graph_loader(dataset, batch_size):
        graph = batch["chain"].batch
        sample = batch.sample[graph]
        chain = torch.arange(len(graph)) - batch["chain"].ptr[graph]  # index within its scenario
        out, _, runs = net(batch.to(device))
        out, iterations = out.cpu(), runs.cpu()[graph]  # runs: per scenario
        rows.append(
            pd.DataFrame(
                {
                    "sample": sample.numpy(),
                    "chain": chain.numpy(),
                    "pred_throughput_ratio": out[:, 0].numpy(),
                    "pred_response_ratio": out[:, 1].numpy(),
                    "iterations": iterations.numpy(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def predict_analytic(root: str | Path, split: str, fractions=(0.8, 0.1, 0.1)) -> pd.DataFrame:
    """The analytic baseline's predictions for the chains of one split of a dataset."""
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


def evaluate(
    root: str | Path,
    pred: pd.DataFrame,
    intervals: PredictionIntervals | None = None,
    level: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics: 'all' and each load band; per-chain table of predictions beside the truth).
    With fitted `intervals` and a `level`, both also hold the intervals (`pred_<ratio>_lower`,
    `pred_<ratio>_upper`; coverage and mean width)."""
    chains = read_table(root, "chains")
    samples = read_table(root, "samples")[["sample", "max_offered_load", "scenario"]]
    pred = within_limits(pred, samples)
    samples = samples.drop(columns="scenario")
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
    if intervals is not None and level is not None:
        ratios = df[["pred_throughput_ratio", "pred_response_ratio"]].to_numpy()
        for col, values in intervals.bounds(ratios, df["max_offered_load"], level).items():
            df[f"pred_{col}"] = values
            p[col] = values
    t = df[["throughput_ratio", "response_ratio", "loss_ratio", "throughput", "response_time"]]
    return qos_metrics(p, t, df["max_offered_load"].to_numpy()), df


def within_limits(pred: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """`pred` with its ratios kept physically possible, as `Surrogate.predict_graph` keeps them:
    the throughput ratio at most the chain's `physical_limits` over its rate; no response ratio
    for a chain that can never complete a job. `samples`: sample and scenario (JSON) columns."""
    texts = samples.set_index("sample")["scenario"]
    ids = pred["sample"].unique()
    scenarios = [Scenario.from_json(texts[i]) for i in ids]
    limits = physical_limits(scenarios)
    keys = pd.DataFrame(
        {
            "sample": np.repeat(ids, [len(sc.chains) for sc in scenarios]),
            "chain": np.concatenate([np.arange(len(sc.chains)) for sc in scenarios]),
            "most": limits.throughput / limits.rate,
            "never": limits.never,
        }
    )
    out = pred.merge(keys, on=["sample", "chain"], how="left", validate="one_to_one")
    out["pred_throughput_ratio"] = np.minimum(out["pred_throughput_ratio"], out["most"])
    out.loc[out["never"].astype(bool), "pred_response_ratio"] = np.nan
    return out.drop(columns=["most", "never"])


def metrics_text(table: pd.DataFrame) -> str:
    return table.to_string(float_format=lambda x: f"{x:.4f}")


def report(
    net: torch.nn.Module,
    root: str | Path,
    test: QoSDataset,
    out: Path,
    intervals: PredictionIntervals | None = None,
    level: float = 0.9,
) -> None:
    """Saved with every training run: metrics per load band (with the coverage of the model's
    `intervals` at `level`, when calibrated), predicted against simulated, and the learning
    curves of its CSV logs."""
    if intervals is not None and not bool(intervals.fitted):
        intervals = None  # a run without validation calibrates none
    table, df = evaluate(root, predict_graphs(net, test), intervals, level)
    table.to_csv(out / "test_metrics_by_load.csv")
    plot_predictions(df, out / "pred_vs_sim.png", f"{type(net).__name__}, test split")
    for csv in out.glob("csv/version_*/metrics.csv"):
        plot_learning_curves(csv, out / "learning_curves.png")
