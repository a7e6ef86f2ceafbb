"""Training: `python train.py model=chainnet_gin data.root=data/dsn24` (Hydra + Lightning).

Everything is built from config (conf/train.yaml and its groups). Returns the metric named by
`optimized_metric`, so Optuna sweeps work; a wandb run, when used, is always finished. A setting
a class refuses (`model.net.hidden=0`) ends in one line naming it, and a checkpoint to resume from
(`ckpt_path=`) is checked before Lightning reads it (`chainnet.learn.checkpoint.check_resume`).

Devices: `trainer.accelerator=auto` (the default) is a CUDA GPU where there is one and the CPU
otherwise (`accelerator_for`). Several processes (`trainer=ddp`) train one model together: every
process fits and tests (on its own share of the graphs), and the first writes the checkpoints
(Lightning), the logs and the report files; such a run cannot be a job of a Hydra multirun
(`check_launch`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.accelerators import MPSAccelerator
from omegaconf import DictConfig

from chainnet.cli.common import command
from chainnet.learn.checkpoint import check_resume
from chainnet.learn.evaluation import report


class Trained(NamedTuple):
    metrics: dict[str, float]  # the last logged value of every metric
    best: str | None  # the best checkpoint (by the checkpoint callback's monitor)
    # the model as training left it (last.ckpt's weights) or, once tested, the best checkpoint's
    module: L.LightningModule


# What a class raises for a setting it refuses (Hydra's own: a target it cannot find).
REFUSED = (ValueError, TypeError, ImportError, MisconfigurationException, InstantiationException)
# Values of ckpt_path that Lightning resolves itself (to a file of this run's checkpoint folder).
LIGHTNING_CKPT = ("last", "best", "hpc", "registry")


def build(node: Any, key: str, **kwargs: Any) -> Any:
    """`instantiate(node)`, with a refused setting as one ValueError naming `key` (Hydra wraps the
    class's own error in one or more InstantiationExceptions)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause: BaseException = exc
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if not isinstance(cause, REFUSED):
            raise  # not a setting's fault: the traceback is worth having
        text = str(cause).strip()
        line = text.splitlines()[0] if text else type(cause).__name__
        raise ValueError(line if line.startswith(key) else f"{key}: {line}") from exc


def train(cfg: DictConfig) -> Trained:
    """Fit (and test) as configured: the logged metrics, the best checkpoint and the model."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    datamodule = build(cfg.data, "data")
    model = build(cfg.model, "model", _recursive_=False)
    callbacks = [  # a callback set to null (`callbacks.weight_averaging=null`) is left out
        build(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items() if c is not None
    ]
    loggers = [build(c, f"logger.{k}") for k, c in (cfg.get("logger") or {}).items()]
    device = {"accelerator": accelerator_for(cfg.trainer.get("accelerator", "auto"))}
    trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, **device)
    check_launch(trainer, HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN)
    resume = cfg.get("ckpt_path")
    if resume and cfg.get("train", True) and str(resume) not in LIGHTNING_CKPT:
        check_resume(resume, model)  # one line, before Lightning reads it
    try:
        if cfg.get("train", True):
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
        if cfg.get("test", False):
            trainer.test(
                model=model, datamodule=datamodule, ckpt_path=best or None, weights_only=True
            )
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if cfg.get("test", False) and trainer.is_global_zero:  # on the whole test split, once
            report(
                model.net,
                datamodule.hparams.root,
                datamodule.sets["test"],
                Path(cfg.paths.output_dir),
                intervals=model.intervals,  # the tested checkpoint's, loaded by trainer.test
            )
    finally:
        for lg in loggers:  # one failed job must not leave a wandb run open in a multirun
            if type(lg).__name__ == "WandbLogger":
                import wandb

                wandb.finish()
    return Trained(metrics, best or None, model)


def accelerator_for(requested: Any) -> Any:
    """The accelerator the Trainer is built with. `auto` is Lightning's choice (a CUDA GPU where
    there is one, else the CPU) except Apple's MPS, which Lightning's auto would take: MPS has no
    float64, which the model's training ranges are kept in, so `auto` is the CPU there and `mps`
    is refused in one line, as is a GPU (`gpu`, `cuda`: trainer=gpu) where there is none."""
    name = str(requested).lower()
    if name == "mps":
        raise ValueError(
            "trainer.accelerator: got 'mps'; Apple's MPS has no float64, which the model's "
            "training ranges are kept in: use cpu (or gpu, for CUDA)"
        )
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator: got {name!r}, but torch sees no CUDA GPU here; use "
            "trainer.accelerator=cpu, or auto (a GPU where there is one)"
        )
    if name == "auto" and MPSAccelerator.is_available():
        return "cpu"
    return requested


def check_launch(trainer: L.Trainer, multirun: bool) -> None:
    """Refuse a run of several processes as a job of a Hydra multirun (`-m`): Lightning starts the
    other processes by running the command line again, so each would run the whole sweep."""
    if multirun and trainer.world_size > 1:
        raise ValueError(
            f"trainer: a run of {trainer.world_size} processes (trainer=ddp) cannot be a job of a "
            "multirun (-m); run each configuration as a run of its own"
        )


@command("train", open_groups=("model", "trainer", "callbacks", "logger"))
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg).metrics
    return optimized(metrics, cfg.get("optimized_metric"))


def optimized(metrics: dict[str, float], name: str | None) -> float | None:
    """The value a sweep optimizes; one line naming the metrics logged if `name` is not one (a
    misspelt name would otherwise hand the sweeper None)."""
    if not name:
        return None
    if name not in metrics:
        raise ValueError(f"optimized_metric: got {name!r}; the run logged {sorted(metrics)}")
    return metrics[name]


if __name__ == "__main__":
    main()
