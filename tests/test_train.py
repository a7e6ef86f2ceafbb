"""train.py: configs compose, every graph model trains, checkpoints load on their own."""

import pandas as pd
import pytest
import torch
from conftest import train_config as config
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from tests_helpers import ROOT
from torch_geometric.loader import DataLoader

from chainnet.cli.common import CONF
from chainnet.cli.eval import run_eval
from chainnet.cli.train import train
from chainnet.learn.data import QoSDataset
from chainnet.learn.module import QoSModule
from chainnet.learn.surrogate import Surrogate


@pytest.mark.parametrize("model", ["chainnet_gin", "chainnet_gat", "gin", "gat", "mlp"])
def test_each_model_trains_on_a_tiny_dataset(tiny, tmp_path, model):
    overrides = [f"model={model}"] + (["model.net.rounds=1"] if model != "mlp" else [])
    cfg = config(tiny, tmp_path, *overrides)
    metrics, best, _ = train(cfg)
    assert "val/mape_throughput_ratio" in metrics and "test/mape_throughput_ratio" in metrics
    assert best and (tmp_path / "csv").is_dir()
    for name in ("pred_vs_sim.png", "learning_curves.png", "test_metrics_by_load.csv"):
        assert (tmp_path / name).is_file(), name
    table = pd.read_csv(tmp_path / "test_metrics_by_load.csv", index_col="band")
    assert list(table.index) == ["all", "<0.5", "0.5-0.9", "0.9-1.2", ">1.2"]
    assert table.loc["all", "chains"] == table["chains"].iloc[1:].sum()
    # every model's checkpoint scores scenarios (the MLP without stage outputs too)
    from tests_helpers import random_scenario

    from chainnet.learn.surrogate import Surrogate

    df = Surrogate.load(best).predict([random_scenario("exits", 0), random_scenario("dsn24", 1)])
    assert df[["throughput", "response_time"]].notna().all().all()
    assert df["accuracy"].notna().any()


def _eval_config(tiny, tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"data.root={tiny}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    return cfg


def test_eval_scores_a_checkpoint_and_the_analytic_baseline(tiny, tiny_checkpoint, tmp_path):
    best = tiny_checkpoint
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

    from chainnet.learn.features import attach_targets, scenario_graph
    from chainnet.learn.models.chainnet import ChainNet

    g = scenario_graph(random_scenario("dsn24", 1))
    n = g["chain"].num_nodes
    attach_targets(g, {"throughput_ratio": [0.5] * n, "response_ratio": [float("nan")] * n})
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([g])
    net = {"_target_": "chainnet.learn.models.chainnet.ChainNet", "hidden": 8, "rounds": 1}
    module = QoSModule(net, optimizer={"_target_": "torch.optim.Adam", "_partial_": True})
    assert isinstance(module.net, ChainNet)
    module.net.normalizer.fit([g])
    module.log = lambda *a, **k: None
    loss = module._step(batch, "train")
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_checkpoint_loads_alone_and_predicts_the_same(tiny, tiny_run):
    trained, out = tiny_run
    batch = next(iter(DataLoader(QoSDataset(tiny, "val"), batch_size=4)))
    loaded = QoSModule.load_from_checkpoint(trained.best, weights_only=True).eval()
    assert bool(loaded.net.normalizer.fitted)
    surrogate = Surrogate.load(trained.best)
    with torch.no_grad():
        expected = trained.module.eval()(batch)[0]  # the model tested: the best checkpoint's
        assert torch.equal(loaded(batch)[0], expected)
        assert torch.equal(surrogate.net(batch)[0], expected)


def test_a_checkpoint_of_the_old_layout_loads(tiny, tiny_run, tmp_path):
    """Checkpoints written before the package was split name chainnet.models.chainnet.ChainNet."""
    trained, out = tiny_run
    ckpt = torch.load(trained.best, map_location="cpu", weights_only=True)  # the tested weights
    ckpt["hyper_parameters"]["net"]["_target_"] = "chainnet.models.chainnet.ChainNet"
    torch.save(ckpt, tmp_path / "old.ckpt")
    batch = next(iter(DataLoader(QoSDataset(tiny, "val"), batch_size=4)))
    loaded = QoSModule.load_from_checkpoint(tmp_path / "old.ckpt", weights_only=True).eval()
    with torch.no_grad():
        expected = trained.module.eval()(batch)[0]
        assert torch.equal(loaded(batch)[0], expected)
        assert torch.equal(Surrogate.load(tmp_path / "old.ckpt").net(batch)[0], expected)


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


def test_training_resumes_from_a_checkpoint(tiny, tiny_run, tmp_path):
    last = tiny_run[1] / "checkpoints/last.ckpt"  # after 2 epochs (0 and 1)
    cfg = config(
        tiny, tmp_path, "test=false", "trainer.max_epochs=3", "model.net.rounds=1",
        f"ckpt_path={last}",
    )  # fmt: skip
    train(cfg)
    log = pd.read_csv(next((tmp_path / "csv").glob("version_*/metrics.csv")))
    # only the epoch after the checkpoint, which is the last epoch's whether or not it was the best
    assert set(log["epoch"].dropna().astype(int)) == {2}


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


def test_eval_of_the_best_checkpoint_reproduces_the_training_report(tiny, tiny_run, tmp_path):
    (_, best, _), out = tiny_run
    reported = pd.read_csv(out / "test_metrics_by_load.csv", index_col="band")
    again = run_eval(_eval_config(tiny, tmp_path / "eval", f"ckpt_path={best}"))
    pd.testing.assert_frame_equal(reported, again, check_dtype=False, atol=1e-6)


def test_the_mission_commands_chain_as_a_user_types_them(tmp_path):
    """`python -m datagen n=...` then `python train.py model=chainnet_gin`, in a fresh folder, no
    paths given: the second trains on what the first wrote (data/dsn24). Only sizes are set."""
    import subprocess
    import sys

    quick = ["simulator.precision=0.1", "simulator.max_arrivals=20000", "workers=1"]
    gen = [sys.executable, "-m", "datagen", "n=30", "shard_size=10", "progress=false", *quick]
    proc = subprocess.run(gen, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "data/dsn24/manifest.json").is_file()
    fit = [
        sys.executable, str(ROOT / "train.py"), "model=chainnet_gin", "trainer.max_epochs=1",
        "model.net.hidden=8", "data.batch_size=8", "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    proc = subprocess.run(fit, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(tmp_path.glob("logs/train/runs/*/checkpoints/last.ckpt"))
    report = next(tmp_path.glob("logs/train/runs/*/test_metrics_by_load.csv"))
    tested = pd.read_csv(report, index_col="band").loc["all", "chains"]
    chains = pd.read_parquet(tmp_path / "data/dsn24/chains")
    assert 0 < tested < len(chains)  # the test split of the 30 samples datagen wrote


def test_configs_share_their_blocks_and_every_command_writes_under_the_log_dir(tmp_path):
    commands = {
        "train": [], "eval": [], "simulate": ["scenario_file=x.yaml"], "score": [],
        "optimize": ["problem=x.yaml"], "datagen": [], "datagen_verify": ["out=x"],
        "import_chainnet": ["src=x", "out=y"],
    }  # fmt: skip
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        for name, overrides in commands.items():
            cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
            run_dir = OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
            assert run_dir.startswith("${paths.log_dir}/"), (name, run_dir)
        models = {
            m: OmegaConf.to_container(compose(config_name="train", overrides=[f"model={m}"]).model)
            for m in ("chainnet_gin", "chainnet_gat", "gin", "gat", "mlp")
        }
        exp = compose(config_name="train", overrides=["experiment=chainnet_dsn24"])
        edge = compose(config_name="train", overrides=["experiment=edge"])
        gen = compose(config_name="datagen", overrides=["n=50000"])
        default = compose(config_name="train")
    # one optimizer, scheduler and loss block, shared through the defaults list
    shared = {k: v for k, v in models["chainnet_gin"].items() if k != "net"}
    assert shared["optimizer"]["lr"] == 0.001 and shared["floor"] == 0.1
    for m, cfg in models.items():
        assert {k: v for k, v in cfg.items() if k not in ("net", "pass_weight")} == {
            k: v for k, v in shared.items() if k != "pass_weight"
        }, m
    assert models["mlp"]["pass_weight"] == 0.0
    gin, chainnet_gin = models["gin"]["net"], models["chainnet_gin"]["net"]
    assert {k for k in gin if gin[k] != chainnet_gin[k]} == {"chain_gru"}
    assert models["chainnet_gat"]["net"]["device_agg"] == "gat"
    # an experiment composes over the groups
    assert exp.model.net.device_agg == "gin" and exp.model.net.chain_gru
    assert exp.trainer.max_epochs == 30 and exp.model.optimizer.lr == 0.001
    # the edge surrogate: the default ChainNet-GIN on the 50k edge set (README: The edge surrogate)
    assert chainnet_gin["routing"] and not edge.model.net.routing
    assert OmegaConf.to_container(edge.model.net) == {**chainnet_gin, "routing": False}
    assert edge.data.root.endswith("/edge") and edge.data.batch_size == 128
    assert edge.trainer.max_epochs == 40 and edge.callbacks.early_stopping.patience == 8
    # the weights' average is the default (README: Training), not yet the edge surrogate's
    assert default.callbacks.weight_averaging.decay == 0.999
    assert edge.callbacks.weight_averaging is None
    # datagen writes where train.py reads by default
    assert gen.out == exp.data.root == default.data.root


def test_epoch_metrics_are_the_per_chain_metrics_eval_reports(tiny, tiny_run):
    """The logged validation metrics are exact per-chain means over the epoch, not means of
    per-batch values: eval.py's numbers, whatever the batch size (here 2 graphs a batch)."""
    import lightning as L

    from chainnet.learn.evaluation import evaluate, predict_graphs

    module = tiny_run[0].module.eval()
    ds = QoSDataset(tiny, "val")
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    logged = trainer.validate(module, DataLoader(ds, batch_size=2), verbose=False)[0]
    table, _ = evaluate(tiny, predict_graphs(module.net, ds))
    for name in ("mape_throughput_ratio", "mape_response_ratio", "mae_loss_ratio"):
        assert logged[f"val/{name}"] == pytest.approx(table.loc["all", name], rel=1e-5), name


def test_a_misspelt_optimized_metric_is_named():
    from chainnet.cli.train import optimized

    assert optimized({"val/loss": 0.5}, "val/loss") == 0.5
    assert optimized({"val/loss": 0.5}, None) is None
    with pytest.raises(ValueError, match=r"optimized_metric: got 'val/los'; the run logged"):
        optimized({"val/loss": 0.5}, "val/los")
