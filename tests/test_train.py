"""train.py: configs compose, every graph model trains, checkpoints load on their own."""

import pandas as pd
import pytest
import torch
from conftest import train_config as config
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from tests_helpers import ROOT

from chainnet.cli import CONF
from chainnet.evaluation import run_eval
from chainnet.lit import QoSModule
from chainnet.training import train


@pytest.mark.parametrize("model", ["chainnet_gin", "chainnet_gat", "gin", "gat", "mlp"])
def test_each_model_trains_on_a_tiny_dataset(tiny, tmp_path, model):
    overrides = [f"model={model}"] + (["model.net.rounds=1"] if model != "mlp" else [])
    cfg = config(tiny, tmp_path, *overrides)
    metrics, best = train(cfg)
    assert "val/mape_throughput_ratio" in metrics and "test/mape_throughput_ratio" in metrics
    assert best and (tmp_path / "csv").is_dir()
    for name in ("pred_vs_sim.png", "learning_curves.png", "test_metrics_by_load.csv"):
        assert (tmp_path / name).is_file(), name
    table = pd.read_csv(tmp_path / "test_metrics_by_load.csv", index_col="band")
    assert list(table.index) == ["all", "<0.5", "0.5-0.9", "0.9-1.2", ">1.2"]
    assert table.loc["all", "chains"] == table["chains"].iloc[1:].sum()
    # every model's checkpoint scores scenarios (the MLP without stage outputs too)
    from tests_helpers import random_scenario

    from chainnet.surrogate import Surrogate

    df = Surrogate.load(best).predict([random_scenario("exits", 0), random_scenario("dsn24", 1)])
    assert df[["throughput", "response_time"]].notna().all().all()
    assert df["accuracy"].notna().any()


def _eval_config(tiny, tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"data.root={tiny}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    return cfg


def test_eval_scores_a_checkpoint_and_the_analytic_baseline(tiny, tmp_path):
    _, best = train(config(tiny, tmp_path / "run", "test=false"))
    ours = run_eval(_eval_config(tiny, tmp_path / "ckpt", f"ckpt_path={best}"))
    analytic = run_eval(_eval_config(tiny, tmp_path / "analytic", "analytic=true"))
    assert ours.loc["all", "chains"] == analytic.loc["all", "chains"] > 0
    assert (tmp_path / "analytic/pred_vs_sim.png").is_file()
    assert 0 <= analytic.loc["all", "mae_loss_ratio"] < 0.2
    with pytest.raises(ValueError, match="ckpt_path"):
        run_eval(_eval_config(tiny, tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_eval(_eval_config(tiny, tmp_path / "none", "ckpt_path=missing.ckpt"))


def test_a_chain_without_a_response_ratio_leaves_the_gradients_finite():
    """A chain that completed nothing has a NaN response ratio: it is out of the loss, and no
    NaN reaches the gradients (masking after the division would still let it through)."""
    from tests_helpers import random_scenario

    from chainnet.features import attach_targets, scenario_graph
    from chainnet.models.chainnet import ChainNet

    g = scenario_graph(random_scenario("dsn24", 1))
    n = g["chain"].num_nodes
    attach_targets(g, {"throughput_ratio": [0.5] * n, "response_ratio": [float("nan")] * n})
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([g])
    net = {"_target_": "chainnet.models.chainnet.ChainNet", "hidden": 8, "rounds": 1}
    module = QoSModule(net, optimizer={"_target_": "torch.optim.Adam", "_partial_": True})
    assert isinstance(module.net, ChainNet)
    module.net.normalizer.fit([g])
    module.log = lambda *a, **k: None
    loss = module._step(batch, "train")
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_checkpoint_loads_alone_and_predicts_the_same(tiny, tmp_path):
    _, best = train(config(tiny, tmp_path, "test=false"))
    model = QoSModule.load_from_checkpoint(best, weights_only=True).eval()
    assert bool(model.net.normalizer.fitted)
    again = QoSModule.load_from_checkpoint(best, weights_only=True).eval()
    from torch_geometric.loader import DataLoader

    from chainnet.data import QoSDataset

    batch = next(iter(DataLoader(QoSDataset(tiny, "val"), batch_size=4)))
    with torch.no_grad():
        assert torch.equal(model(batch)[0], again(batch)[0])


@pytest.mark.parametrize("logger", ["wandb", "tensorboard"])
def test_other_loggers_run_offline_beside_csv(tiny, tmp_path, logger, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(config(tiny, tmp_path, f"logger={logger}", "test=false", "trainer.max_epochs=1"))
    assert (tmp_path / "csv").is_dir()
    if logger == "wandb":
        assert list((tmp_path / "wandb").glob("offline-run-*"))
        import wandb

        assert wandb.run is None  # finished, so the next job of a multirun starts clean
    else:
        assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_training_resumes_from_a_checkpoint(tiny, tmp_path):
    _, _ = train(config(tiny, tmp_path / "a", "test=false", "trainer.max_epochs=1"))
    last = tmp_path / "a/checkpoints/last.ckpt"
    assert last.is_file()
    cfg = config(tiny, tmp_path / "b", "test=false", "trainer.max_epochs=2", f"ckpt_path={last}")
    train(cfg)
    log = pd.read_csv(next((tmp_path / "b/csv").glob("version_*/metrics.csv")))
    assert set(log["epoch"].dropna().astype(int)) == {1}  # only the epoch after the checkpoint


def _train_cli(tiny, tmp_path, *args):
    """train.py as a user runs it, one epoch on the tiny dataset, logs under tmp_path."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "train.py", *args, f"data.root={tiny}", "trainer.max_epochs=1",
         "trainer.enable_progress_bar=false", "test=false", f"paths.log_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_multirun_sweep_as_a_subprocess(tiny, tmp_path):
    proc = _train_cli(tiny, tmp_path, "-m", "model=chainnet_gin,gin", "model.net.hidden=8,16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = list(tmp_path.glob("train/multiruns/*/*/checkpoints/last.ckpt"))
    assert len(jobs) == 4


@pytest.mark.slow
def test_optuna_sweep_runs(tiny, tmp_path):
    proc = _train_cli(
        tiny, tmp_path, "hparams_search=chainnet_optuna", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = list(tmp_path.glob("train/multiruns/*/optimization_results.yaml"))
    assert results and "best_value" in results[0].read_text()


def test_eval_of_the_best_checkpoint_reproduces_the_training_report(tiny, tmp_path):
    _, best = train(config(tiny, tmp_path / "run"))
    reported = pd.read_csv(tmp_path / "run/test_metrics_by_load.csv", index_col="band")
    again = run_eval(_eval_config(tiny, tmp_path / "eval", f"ckpt_path={best}"))
    pd.testing.assert_frame_equal(reported, again, check_dtype=False, atol=1e-6)
