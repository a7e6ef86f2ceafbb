"""Training: `python train.py model=chainnet_gin data.root=data/dsn24` (Hydra + Lightning).

Everything is built from config (conf/train.yaml and its groups). Returns the metric named by
`optimized_metric`, so Optuna sweeps work; a wandb run, when used, is always finished.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from chainnet.cli import CONF, user_errors


def train(cfg: DictConfig) -> tuple[dict, str | None]:
    """Fit (and test) as configured; returns the logged metrics and the best checkpoint path."""
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
            report(model, datamodule, Path(cfg.paths.output_dir))
    finally:
        for lg in loggers:  # one failed job must not leave a wandb run open in a multirun
            if type(lg).__name__ == "WandbLogger":
                import wandb

                wandb.finish()
    return metrics, best or None


def report(model, datamodule, out: Path) -> None:
    """Saved with every run: metrics per load band, predicted against simulated, learning curves."""
    from chainnet.evaluate import evaluate, plot_learning_curves, plot_predictions, predict_graphs

    test = datamodule.sets["test"]
    table, df = evaluate(datamodule.hparams.root, predict_graphs(model.net, test))
    table.to_csv(out / "test_metrics_by_load.csv")
    plot_predictions(df, out / "pred_vs_sim.png", f"{type(model.net).__name__}, test split")
    for csv in out.glob("csv/version_*/metrics.csv"):
        plot_learning_curves(csv, out / "learning_curves.png")


@hydra.main(version_base="1.3", config_path=CONF, config_name="train")
def main(cfg: DictConfig) -> float | None:
    with user_errors():
        metrics, _ = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
