"""Accuracy of every model (SPEC section 5, issue: ChainNet and its baselines), in one table.

Trains each model on a dsn24 dataset made by datagen and evaluates it, with the analytic baseline,
on (a) the held-out test split of that dataset, (b) the published ChainNet validation set imported
from ../shared (never trained on), (c) a dsn24_large dataset (larger systems). Also measures
training throughput (graphs per second) and projects the time of one epoch on 40,000 graphs.
Missing datasets are made first (datagen / the importer; both resume if interrupted).

    python experiments/accuracy.py [--n 20000] [--epochs 20] [--models chainnet_gin gin mlp]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from chainnet.cli.common import CONF
from chainnet.cli.train import train
from chainnet.learn.data import QoSDataset
from chainnet.learn.evaluation import evaluate, predict_analytic, predict_graphs
from chainnet.learn.module import QoSModule
from datagen.defaults import cli_defaults, preset
from datagen.generate import generate
from datagen.import_chainnet import import_split

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT.parent / "shared/data/chainnet_dsn24/val"
ALL = (0.0, 0.0, 1.0)  # every sample in the "test" split: evaluate a whole dataset
REFERENCE = {"mape_throughput_ratio": 0.025, "mape_response_ratio": 0.032, "mae_loss_ratio": 0.009}


def ensure_datasets(args) -> dict[str, Path]:
    data = ROOT / "data"
    paths = {
        "dsn24": data / f"dsn24_n{args.n}_seed0",
        "published": data / "chainnet_val",
        "dsn24_large": data / f"dsn24_large_n{args.n_large}_seed1",
    }
    # The same data as `python -m datagen n=... scenario=... seed=...` would make.
    settings, engine, shard_size = cli_defaults()
    for name, seed, n in (("dsn24", 0, args.n), ("dsn24_large", 1, args.n_large)):
        generate(
            n=n, seed=seed, out=paths[name], preset=preset(name), settings=settings,
            engine=engine, shard_size=shard_size,
        )  # fmt: skip
    if not (paths["published"] / "manifest.json").is_file() or not json.loads(
        (paths["published"] / "manifest.json").read_text()
    ).get("complete"):
        import_split(PUBLISHED, paths["published"])
    return paths


def train_model(model: str, paths: dict, args, out: Path) -> tuple[Path, dict]:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                f"model={model}",
                f"data.root={paths['dsn24']}",
                f"trainer.max_epochs={args.epochs}",
                "trainer.enable_progress_bar=false",
                "test=false",
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / model)
    t0 = time.perf_counter()
    metrics, best, _ = train(cfg)
    fit_s = time.perf_counter() - t0
    log = pd.read_csv(next((out / model / "csv").glob("version_*/metrics.csv")))
    epochs = int(log["epoch"].max()) + 1
    n_train = len(QoSDataset(paths["dsn24"], "train"))
    speed = {
        "epochs": epochs,
        "fit_seconds": fit_s,
        "graphs_per_second": n_train * epochs / fit_s,
        "epoch_seconds_40k_graphs": 40_000 / (n_train * epochs / fit_s),
    }
    return Path(best), speed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="dsn24 samples to train on")
    ap.add_argument("--n-large", type=int, default=1_000, help="dsn24_large samples to test on")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument(
        "--models", nargs="+", default=["chainnet_gin", "chainnet_gat", "gin", "gat", "mlp"]
    )
    ap.add_argument("--out", default="experiments/results/accuracy")
    ap.add_argument(
        "--no-analytic", action="store_true",
        help="skip the analytic baseline (deterministic; about 15 minutes on the three sets)",
    )  # fmt: skip
    args = ap.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    paths = ensure_datasets(args)
    sets = {
        "dsn24 held-out": (paths["dsn24"], "test", (0.8, 0.1, 0.1)),
        "ChainNet published val": (paths["published"], "test", ALL),
        "dsn24_large": (paths["dsn24_large"], "test", ALL),
    }
    rows, speeds = [], {}
    for model in ([] if args.no_analytic else ["analytic"]) + list(args.models):
        net = None
        if model != "analytic":
            best, speeds[model] = train_model(model, paths, args, out)
            net = QoSModule.load_from_checkpoint(best, weights_only=True).net
        for label, (root, split, fractions) in sets.items():
            if net is None:
                pred = predict_analytic(root, split, fractions)
            else:
                pred = predict_graphs(net, QoSDataset(root, split, fractions))
            table, _ = evaluate(root, pred)
            rows.append({"model": model, "dataset": label, **table.loc["all"].to_dict()})
            print(f"{model:13s} {label:24s} " + "  ".join(
                f"{k}={table.loc['all', k]:.4f}" for k in REFERENCE
            ), flush=True)  # fmt: skip
        # saved after every model, so an interrupted study keeps what it measured
        pd.DataFrame(rows).to_csv(out / "accuracy.csv", index=False)
        (out / "training_speed.json").write_text(json.dumps(speeds, indent=2))
    result = pd.DataFrame(rows)
    cols = ["model", "dataset", *REFERENCE]
    print("\n" + result[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"\nreference (published ChainNet checkpoint on the published val set): {REFERENCE}")
    print(json.dumps(speeds, indent=2))
    print(f"saved {out}/accuracy.csv and training_speed.json")


if __name__ == "__main__":
    main()
