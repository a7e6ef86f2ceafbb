"""Training on several processes (trainer=ddp): the data split across them, exact synced metrics,
one report, a checkpoint that scores; and the settings that pick devices and launch processes.

The slow test runs the DDP path as a user would, with two CPU processes over gloo.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.accelerators import MPSAccelerator
from tests_helpers import ROOT
from torch.utils.data import SequentialSampler

from chainnet.cli.train import accelerator_for, check_launch
from chainnet.learn.data import QoSDataset
from chainnet.learn.datamodule import QoSDataModule
from chainnet.learn.surrogate import Surrogate
from chainnet.scenario import Scenario


class SeenSamples(L.Callback):
    """Writes, for its process, the sample ids of every batch it trained, validated and tested on
    (`<out>/seen_<rank>.json`); train.py builds it from `+callbacks.seen._target_=...`."""

    def __init__(self, out: str):
        self.out = Path(out)
        self.seen: dict[str, list] = {"train": [], "val": [], "test": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen["train"].append(batch.sample.tolist())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.seen["val"].extend(batch.sample.tolist())

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.seen["test"].extend(batch.sample.tolist())

    def teardown(self, trainer, pl_module, stage):
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, **self.seen}
        (self.out / f"seen_{trainer.global_rank}.json").write_text(json.dumps(record))


class RecordProcess(L.Callback):
    """Writes `<out>/<pid>.txt` when a fit starts: which processes ran the jobs of a sweep."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_fit_start(self, trainer, pl_module):
        (self.out / f"{os.getpid()}.txt").write_text(str(trainer.max_epochs))


def sample_ids(root, split: str) -> list[int]:
    return [int(g.sample) for g in QoSDataset(root, split)]


def train_cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}  # for SeenSamples
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, "trainer.enable_progress_bar=false"],
        cwd=cwd, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_two_cpu_processes_split_the_data_and_write_one_exact_report(tiny, tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    proc = train_cli(
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"data.root={tiny}",
        "data.batch_size=4", "model.net.hidden=8", "model.net.rounds=1", "trainer.max_epochs=1",
        f"paths.log_dir={tmp_path}", "+callbacks.seen._target_=test_ddp.SeenSamples",
        f"+callbacks.seen.out={seen}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    ranks = [json.loads((seen / f"seen_{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # Training: each process ran half the batches one process would, on its own half of the
    # graphs (the DistributedSampler repeats one graph to even out an odd count).
    train_ids = sample_ids(tiny, "train")
    per_rank = math.ceil(len(train_ids) / 2)
    assert len(train_ids) % 2 == 1  # so the repeat shows
    for r in ranks:
        assert len(r["train"]) == math.ceil(per_rank / 4) < math.ceil(len(train_ids) / 4)
        assert sum(map(len, r["train"])) == per_rank
    trained = [set(sum(r["train"], [])) for r in ranks]
    assert trained[0] | trained[1] == set(train_ids) and len(trained[0] & trained[1]) <= 1
    # Validation and test: every graph on one process, once.
    for split in ("val", "test"):
        ids = sorted(ranks[0][split] + ranks[1][split])
        assert ids == sorted(sample_ids(tiny, split)), split
    # The synced test metrics are the exact per-chain means the report (one process, the whole
    # test split: 5 graphs, so a repeated graph would show) computes.
    run = next(tmp_path.glob("train/runs/*"))
    report = pd.read_csv(run / "test_metrics_by_load.csv", index_col="band").loc["all"]
    logged = pd.read_csv(next(run.glob("csv/version_*/metrics.csv")))
    for name in ("mape_throughput_ratio", "mape_response_ratio", "mae_loss_ratio"):
        value = logged[f"test/{name}"].dropna().iloc[-1]
        assert value == pytest.approx(report[name], rel=1e-5), name
    assert len(list(tmp_path.glob("train/runs/*"))) == 1  # both processes wrote to one folder
    ckpt = run / "checkpoints/last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == len(
        ranks[0]["train"]
    )
    scenario = Scenario.load(ROOT / "examples/edge_small.yaml")
    df = Surrogate.load(ckpt).predict([scenario])
    values = df[["throughput", "response_time", "throughput_ratio", "response_ratio"]]
    assert len(df) == len(scenario.chains) and np.isfinite(values.to_numpy(float)).all()


@pytest.mark.slow
def test_a_parallel_sweep_runs_its_jobs_in_two_processes(tiny, tmp_path):
    """The README's `-m hydra/launcher=joblib hydra.launcher.n_jobs=2` (the `sweep` extra)."""
    pids = tmp_path / "pids"
    pids.mkdir()
    QoSDataset(tiny, "train")  # the cache, made here: two jobs would both make it, at once
    proc = train_cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=chainnet_gin,gin",
        f"data.root={tiny}", "model.net.hidden=8", "model.net.rounds=1", "trainer.max_epochs=1",
        "test=false", f"paths.log_dir={tmp_path}", "+callbacks.pid._target_=test_ddp.RecordProcess",
        f"+callbacks.pid.out={pids}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    assert len(list(tmp_path.glob("train/multiruns/*/*/checkpoints/last.ckpt"))) == 2
    assert len(list(pids.glob("*.txt"))) == 2  # two jobs, two processes


@pytest.mark.slow
def test_a_multirun_of_several_processes_is_refused_in_one_line(tmp_path):
    proc = train_cli(
        "-m", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        f"data.root={tmp_path}/none", f"paths.log_dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: trainer: a run of 2 processes (trainer=ddp) cannot be a job")
    assert "Traceback" not in proc.stderr


def test_several_processes_are_refused_only_in_a_multirun():
    ddp = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, logger=False)
    with pytest.raises(ValueError, match=r"^trainer: a run of 2 processes .* multirun \(-m\)"):
        check_launch(ddp, multirun=True)
    check_launch(ddp, multirun=False)
    check_launch(L.Trainer(accelerator="cpu", devices=1, logger=False), multirun=True)


def test_auto_is_a_cuda_gpu_or_the_cpu_never_mps(monkeypatch):
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: True))
    assert accelerator_for("auto") == "cpu"
    with pytest.raises(ValueError, match=r"^trainer.accelerator: got 'mps'; .* no float64"):
        accelerator_for("mps")
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))
    assert accelerator_for("auto") == "auto"  # Lightning's: CUDA when there is one, else CPU
    assert accelerator_for("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^trainer.accelerator: got 'gpu', but torch sees"):
        accelerator_for("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert accelerator_for("gpu") == "gpu"


def test_the_cache_is_made_once_before_any_process_reads_it(tiny, tmp_path, monkeypatch):
    """prepare_data (one process per node) processes the splits; setup on every other process
    only loads them: were it to process, processes would write the same files at once."""
    root = tmp_path / "data"
    shutil.copytree(tiny, root, ignore=shutil.ignore_patterns("processed"))
    first = QoSDataModule(str(root))
    first.prepare_data()
    assert list((root / "processed").glob("*/sizes.json"))
    assert set(first.sets) == {"train", "val", "test"}

    def no_processing(self):
        raise AssertionError("processed again")

    monkeypatch.setattr(QoSDataset, "process", no_processing)
    other = QoSDataModule(str(root))
    other.setup("fit")
    assert [len(other.sets[s]) for s in other.sets] == [len(first.sets[s]) for s in first.sets]


def test_each_process_validates_its_own_graphs_once(tiny):
    dm = QoSDataModule(str(tiny), batch_size=2)
    dm.setup()
    order = [[int(s) for b in dm.val_dataloader() for s in b.sample]]
    assert sorted(order[0]) == sorted(sample_ids(tiny, "val"))  # one process: all, in order
    shares = []
    for rank in (0, 1, 2):
        dm.trainer = SimpleNamespace(world_size=3, global_rank=rank)
        shares.append([int(s) for b in dm.test_dataloader() for s in b.sample])
    assert sorted(sum(shares, [])) == sorted(sample_ids(tiny, "test"))  # each graph once
    assert max(map(len, shares)) - min(map(len, shares)) <= 1 and min(map(len, shares)) >= 1
    dm.trainer = SimpleNamespace(world_size=len(dm.sets["test"]) + 1, global_rank=0)
    assert isinstance(dm.test_dataloader().sampler, SequentialSampler)  # Lightning's to replace
