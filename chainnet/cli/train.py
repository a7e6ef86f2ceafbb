"""Training: `python train.py model=chainnet_gin data.root=data/dsn24` (Hydra + Lightning).

Everything is built from config (conf/train.yaml and its groups). Returns the metric named by
`optimized_metric`, so Optuna sweeps work; a wandb run, when used, is always finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from chainnet.cli.common import CONF, user_errors
from chainnet.learn.evaluation import report


class Trained(NamedTuple):
    metrics: dict[str, float]  # the last logged value of every metric
    best: str | None  # the best checkpoint (by the checkpoint callback's monitor)
    module: L.LightningModule  # the model as training left it (the weights of last.ckpt)


def train(cfg: DictConfig) -> Trained:
    """Fit (and test) as configured: the logged metrics, the best checkpoint and the model."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _recursive_=False)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        if cfg.get("train", True):
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
        if cfg.get("test", False):
            trainer.test(model=model, datamodule=datamodule, ckpt_path=best or None)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
            report(
                model.net,
                datamodule.hparams.root,
                datamodule.sets["test"],
                Path(cfg.paths.output_dir),
            )
    finally:
        for lg in loggers:  # one failed job must not leave a wandb run open in a multirun
            if type(lg).__name__ == "WandbLogger":
                import wandb

                wandb.finish()
    return Trained(metrics, best or None, model)


@hydra.main(version_base="1.3", config_path=CONF, config_name="train")
def main(cfg: DictConfig) -> float | None:
    with user_errors():
        metrics = train(cfg).metrics
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
