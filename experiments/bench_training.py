"""Training and scoring speed of the learning engine, against a baseline commit in the same run.

For the code of this checkout and of `--baseline` (a git worktree this script makes, and removes,
in a temporary folder), each in its own process:
- training: graphs per second of every model in `--models` at batch sizes 64 and 128, over
  `--steps` optimizer steps after `--warmup` (Lightning's fit, as `train.py` runs it: data loading,
  forward, backward and step; validation off; fitting the normaliser before the first step, and
  processing the dataset, not counted);
- scoring: scenarios per second of `Surrogate.predict_arrays` at batch sizes 1, 64 and 1024
  (graphs built from the scenario objects included), with a ChainNet-GIN checkpoint of the same
  fit; the milliseconds of one scenario alone;
- processing: seconds to turn `--process-data` into graphs (`QoSDataset`, a fresh copy of the
  dataset's tables, so no cache of yours is touched), if given.
The two codes run alternately, `--repeats` times, and the best of each is kept. Prints a table of
both and their ratios; saves everything as JSON.

    python experiments/bench_training.py [--data data/dsn24] [--baseline 0bd7a93]
        [--process-data data/dsn24_50k] [--models chainnet_gin chainnet_gat gin gat mlp]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

# In the child process these are the code under test's: its folder comes first on PYTHONPATH.
from chainnet.dataset.store import read_table
from chainnet.learn.data import QoSDataset
from chainnet.learn.surrogate import Surrogate
from chainnet.scenario import Scenario

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
TRAIN_BATCHES = (64, 128)
SCORE_BATCHES = (1, 64, 1024)
MODELS = ("chainnet_gin", "chainnet_gat", "gin", "gat", "mlp")
# The commit before the learning-engine work: the code this benchmark measures against.
BASELINE = "0bd7a93"


class StepClock(L.Callback):
    """Wall time from the end of batch `warmup - 1` to the end of the last batch, and the graphs
    trained on in between: data loading, forward, backward and step, nothing else."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.graphs = warmup, None, None, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = time.perf_counter()
        step = trainer.global_step  # optimizer steps done, this one included
        if step == self.warmup:
            self.start = now
        elif step > self.warmup:
            self.end, self.graphs = now, self.graphs + batch.num_graphs


def train_speed(conf: Path, data: str, model: str, batch: int, args, ckpt: Path | None) -> float:
    """Graphs per second of one fit; saves the fitted module at `ckpt` if given."""
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"model={model}", f"data.root={data}", f"data.batch_size={batch}",
                "model.scheduler=null",  # it steps on val/loss: there is no validation here
                *args.overrides,
            ],
        )  # fmt: skip
    L.seed_everything(0, verbose=False)
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model, _recursive_=False)
    clock = StepClock(args.warmup)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=args.warmup + args.steps, max_epochs=-1,
        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    if ckpt is not None:
        trainer.save_checkpoint(ckpt)
    return clock.graphs / (clock.end - clock.start)


def score_speed(ckpt: Path, data: str, n: int) -> dict:
    """Scenarios per second at each batch size of SCORE_BATCHES, and one scenario alone (ms)."""
    texts = read_table(data, "samples")["scenario"].to_numpy()[:n]
    scenarios = [Scenario.from_json(t) for t in texts]
    surrogate = Surrogate.load(ckpt, warn_ranges=False)
    out = {}
    for batch in SCORE_BATCHES:
        total = max(len(scenarios), 2 * batch) if batch > 1 else 200
        pool = (scenarios * (total // len(scenarios) + 1))[:total]
        surrogate.predict_arrays(pool[:batch])  # warm up
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            for start in range(0, total, batch):
                surrogate.predict_arrays(pool[start : start + batch])
            best = min(best, (time.perf_counter() - t0) / total)
        out[str(batch)] = 1.0 / best
    out["one_scenario_ms"] = 1e3 / out["1"]
    return out


def process_seconds(data: str) -> float:
    """Seconds to process a fresh copy of the dataset's tables into graphs (all three splits)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "data"
        shutil.copytree(data, copy, ignore=shutil.ignore_patterns("processed"))
        t0 = time.perf_counter()
        QoSDataset(copy, "train")
        return time.perf_counter() - t0


def child(args) -> None:
    """Measure the code at `args.code` (on sys.path first) and print the figures as JSON."""
    torch.set_num_threads(args.threads)
    conf = Path(args.code) / "conf"
    out: dict = {"train": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "gin.ckpt"
        for model in args.models:
            for batch in TRAIN_BATCHES:
                keep = ckpt if (model, batch) == ("chainnet_gin", 128) else None
                speed = train_speed(conf, args.data, model, batch, args, keep)
                out["train"][f"{model}@{batch}"] = speed
                print(f"  {model} batch {batch}: {speed:.0f} graphs/s", file=sys.stderr)
        if ckpt.exists() and not args.train_only:
            out["score"] = score_speed(ckpt, args.data, args.score_n)
    if args.process_data and not args.train_only:
        out["process_s"] = process_seconds(args.process_data)
    print(json.dumps(out))


def measure(code: Path, args, overrides: Sequence[str] = ()) -> dict:
    """Run `child` on the code at `code` in a fresh process (with the Hydra `overrides` of a
    variant: its training only); its figures."""
    cmd = [sys.executable, str(HERE), "--child", "--code", str(code), "--data", args.data]
    cmd += ["--models", *args.models, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--threads", str(args.threads), "--score-n", str(args.score_n)]
    if args.process_data:
        cmd += ["--process-data", args.process_data]
    if overrides:
        cmd += ["--train-only", "--overrides", *overrides]
    env = {**os.environ, "PYTHONPATH": str(code), "WANDB_MODE": "offline"}
    done = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"error: the benchmark of {code} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_of(runs: list[dict]) -> dict:
    """Per figure, the best of the runs (the most per second, the fewest seconds)."""
    out: dict = {"train": {}, "score": {}}
    for key in runs[0]["train"]:
        out["train"][key] = max(r["train"][key] for r in runs)
    for key in runs[0].get("score", {}):
        pick = min if key.endswith("_ms") else max
        out["score"][key] = pick(r["score"][key] for r in runs)
    if "process_s" in runs[0]:
        out["process_s"] = min(r["process_s"] for r in runs)
    return out


def print_table(base: dict, new: dict, variants: dict[str, dict]) -> dict[str, float]:
    """Print every figure of the baseline and this code, and the training figures of each
    variant, each with its ratio to the baseline; returns the ratios by label."""
    head = f"{'figure':44s} {'baseline':>10s} {'this code':>10s} {'ratio':>7s}"
    print("\n" + head + "".join(f" {name[:16]:>16s} {'ratio':>7s}" for name in variants))
    ratios = {}
    for label, b, n, ratio in table(base, new):
        line = f"{label:44s} {b:10.1f} {n:10.1f} {ratio:6.2f}x"
        ratios[label] = ratio
        for name, figures in variants.items():
            key = label.split(" ")[1] if label.startswith("train ") else None
            if key in figures["train"]:
                v = figures["train"][key]
                line += f" {v:16.1f} {v / b:6.2f}x"
                ratios[f"{label}, {name}"] = v / b
        print(line)
    return ratios


def table(base: dict, new: dict) -> list[tuple[str, float, float, float]]:
    """(figure, baseline, this code, ratio: how many times better) for every figure."""
    rows = []
    for key, b in base["train"].items():
        rows.append((f"train {key} (graphs/s)", b, new["train"][key], new["train"][key] / b))
    for key, b in base["score"].items():
        n = new["score"][key]
        ms = key.endswith("_ms")
        label = "score: one scenario alone (ms)" if ms else f"score batch {key} (scenarios/s)"
        rows.append((label, b, n, b / n if ms else n / b))
    if "process_s" in base:
        b, n = base["process_s"], new["process_s"]
        rows.append(("process the dataset (s)", b, n, b / n))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="data/dsn24", help="a dataset of python -m datagen")
    ap.add_argument("--baseline", default=BASELINE, help="the git revision to compare with")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--steps", type=int, default=40, help="timed optimizer steps per fit")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each code, alternating")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--score-n", type=int, default=1024, help="scenarios of --data to score")
    ap.add_argument("--process-data", default=None, help="a dataset to time the processing of")
    ap.add_argument("--out", default="experiments/results/bench_training.json")
    ap.add_argument(
        "--variant", nargs="+", action="append", default=[], metavar=("NAME", "OVERRIDE"),
        help="also train this code with these Hydra overrides, e.g. --variant simulated_loads "
        "model.simulated_loads=true (repeatable)",
    )  # fmt: skip
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--overrides", nargs="*", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--code", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    args.data = str(Path(args.data).resolve())
    if args.process_data:
        args.process_data = str(Path(args.process_data).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = Path(tmp) / "baseline"
        git = ["git", "-C", str(REPO)]
        subprocess.run([*git, "worktree", "add", "--detach", str(base_dir), args.baseline],
                       check=True, capture_output=True)  # fmt: skip
        try:
            codes = [("baseline", base_dir, []), ("this", REPO, [])]
            codes += [(v[0], REPO, v[1:]) for v in args.variant]
            runs: dict[str, list] = {name: [] for name, _, _ in codes}
            for r in range(args.repeats):
                for name, code, overrides in codes:
                    print(f"run {r + 1}/{args.repeats}: {name} ({code} {overrides})", flush=True)
                    runs[name].append(measure(code, args, overrides))
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(base_dir)], check=False)
    best = {name: best_of(r) for name, r in runs.items()}
    variants = {v[0]: best[v[0]] for v in args.variant}
    ratios = print_table(best["baseline"], best["this"], variants)
    revision = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=False).stdout.strip()  # fmt: skip
    result = {
        "baseline": args.baseline, "this": revision, "data": args.data,
        "threads": args.threads, "machine": platform.processor() or platform.machine(),
        "steps": args.steps, "repeats": args.repeats, "runs": runs,
        "variants": {v[0]: v[1:] for v in args.variant}, "best": best, "ratios": ratios,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
