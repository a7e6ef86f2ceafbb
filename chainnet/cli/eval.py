"""`python eval.py ckpt_path=model.ckpt data.root=data/chainnet_val split=test`: evaluate a model.

Any checkpoint of train.py, or `analytic=true` for the analytic baseline (no checkpoint), on any
dataset: ours or the imported ChainNet set. Writes metrics.csv (overall and per load band),
predictions.csv and pred_vs_sim.png to the run's output folder, and prints the metrics. For a
checkpoint with calibrated prediction intervals, `level` (0.9 by default; null: none) adds their
coverage and mean width per load band, and their bounds to predictions.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from chainnet.cli.common import command
from chainnet.learn.data import QoSDataset
from chainnet.learn.evaluation import (
    evaluate,
    metrics_text,
    predict_analytic,
    predict_graphs,
)
from chainnet.learn.intervals import grid_level
from chainnet.learn.plots import plot_predictions
from chainnet.learn.surrogate import Surrogate


def run_eval(cfg: DictConfig):
    root, split = cfg.data.root, cfg.split
    fractions = tuple(cfg.data.fractions)
    level = cfg.get("level")
    if level is not None:
        grid_level(level)  # one line for a level out of (0, 1), before any work
    intervals = None
    if cfg.analytic:
        name = "analytic"
        pred = predict_analytic(root, split, fractions)
    else:
        if not cfg.ckpt_path:
            raise ValueError("ckpt_path: give a checkpoint of train.py, or analytic=true")
        name = Path(cfg.ckpt_path).name
        # refuses a damaged checkpoint, in one line; eval does not use the training ranges
        surrogate = Surrogate.load(cfg.ckpt_path, warn_ranges=False)
        if level is not None and surrogate.intervals_known:
            intervals = surrogate.intervals
        elif level is not None:
            note = "holds no calibrated intervals (made before chainnet calibrated them)"
            print(f"note: {name} {note}; no coverage is reported", file=sys.stderr)
        pred = predict_graphs(
            surrogate.net, QoSDataset(root, split, fractions), cfg.data.batch_size
        )
    table, df = evaluate(root, pred, intervals, level)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "metrics.csv")
    df.to_csv(out / "predictions.csv", index=False)
    plot_predictions(df, out / "pred_vs_sim.png", f"{name} on {Path(root).name} ({split})")
    print(f"{name} on {root} ({split}, {len(df)} chains)")
    print(metrics_text(table))
    print(f"outputs in {out}")
    return table


@command("eval")
def main(cfg: DictConfig) -> None:
    run_eval(cfg)


if __name__ == "__main__":
    main()
