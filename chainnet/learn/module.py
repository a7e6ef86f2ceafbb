"""The LightningModule: any QoS network, its loss, its logged metrics and its optimizer.

It also keeps the ranges of the training inputs (`chainnet.learn.ranges`), recorded where the
normaliser is fitted, so every checkpoint can say when a scenario lies outside them, and the
prediction intervals (`chainnet.learn.intervals`), calibrated at the end of every validation epoch
on that epoch's validation residuals, so every checkpoint carries intervals for its own weights.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, OmegaConf
from torchmetrics import CatMetric, MeanMetric

from chainnet.learn.batching import graph_loader
from chainnet.learn.checkpoint import dataset_preset, read_checkpoint
from chainnet.learn.features import FEATURE_VERSION
from chainnet.learn.intervals import PredictionIntervals, nonconformity, scenario_max_load
from chainnet.learn.models import resolve_target
from chainnet.learn.ranges import TrainingRanges

# Logged for val and test: name -> (kind, column of the chain outputs). The loss ratio is 1 - the
# throughput ratio: the same absolute error.
EPOCH_METRICS = {
    "mape_throughput_ratio": ("mape", 0),
    "mape_response_ratio": ("mape", 1),
    "mae_loss_ratio": ("mae", 0),
}

# Graphs per batch when the normaliser and the training ranges are fitted on the training split.
FIT_BATCH = 4096


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


class QoSModule(L.LightningModule):
    """Trains `net` (built from its config, kept in the checkpoint) on chain and stage targets.

    Loss: the relative error of the chain's throughput ratio and response ratio (|pred - y| /
    max(y, `floor`): the MAPE the model is judged by, which an absolute loss would neglect on small
    ratios; the floor keeps nearly lost chains from dominating), plus `pass_weight` times L1 on the
    fragments' pass probabilities where the data has them. With `simulated_loads`, training runs
    the network at the loads of the simulated pass probabilities instead of its fixed point.
    """

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: Any,
        scheduler: Any = None,
        pass_weight: float = 0.5,
        floor: float = 0.1,
        simulated_loads: bool = False,
        feature_version: int = FEATURE_VERSION,
    ):
        super().__init__()
        # Plain containers only: a checkpoint then loads with torch.load(weights_only=True).
        net, optimizer, scheduler = (
            OmegaConf.to_container(c, resolve=True) if isinstance(c, DictConfig) else c
            for c in (net, optimizer, scheduler)
        )
        net = resolve_target(net)  # a checkpoint of an older layout names the old module
        if not _finite(pass_weight) or pass_weight < 0:
            raise ValueError(f"model.pass_weight: got {pass_weight!r}; must be a number >= 0")
        if not _finite(floor) or floor <= 0:
            raise ValueError(f"model.floor: got {floor!r}; must be a number > 0")
        if not isinstance(simulated_loads, bool):
            raise ValueError(f"model.simulated_loads: got {simulated_loads!r}; true or false")
        self.save_hyperparameters(logger=False)
        self.net = instantiate(net)
        self.ranges = TrainingRanges()
        self.intervals = PredictionIntervals()
        # Per validation chain: its two nonconformity scores and its scenario's largest offered
        # load, over the whole epoch and every process; not saved in checkpoints.
        self.val_scores = CatMetric(nan_strategy="disable")
        # Exact epoch metrics: per-chain means accumulated over the whole epoch (and over every
        # process of a distributed run), the same numbers eval.py reports; not saved in checkpoints.
        self.epoch_metrics = torch.nn.ModuleDict(
            {f"{s}_{name}": MeanMetric() for s in ("val", "test") for name in EPOCH_METRICS}
        )

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's loader, after the file's checks (CRCs, safe types, finite weights): a
        damaged checkpoint is refused with one line (`CheckpointError`)."""
        if isinstance(checkpoint_path, (str, Path)):
            read_checkpoint(checkpoint_path)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def forward(self, batch, pass_prob=None):
        return self.net(batch, pass_prob)

    def on_fit_start(self) -> None:
        if bool(self.net.normalizer.fitted) and bool(self.ranges.fitted):
            return  # resumed
        # the whole training split, in large batches gathered from its stored tensors
        batches = list(graph_loader(self.trainer.datamodule.sets["train"], FIT_BATCH))
        if not bool(self.net.normalizer.fitted):
            self.net.normalizer.fit(batches)
        if not bool(self.ranges.fitted):  # also a resumed run of a checkpoint without them
            self.ranges.fit(batches)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # A checkpoint of a run with weight averaging holds the average as its weights and the
        # weights being trained beside them. Resumed without averaging, training goes on from the
        # latter (with averaging, `chainnet.learn.averaging.WeightEMA` restores both).
        trainer = self._trainer
        if (
            "current_model_state" in checkpoint
            and trainer is not None
            and trainer.state.fn == TrainerFn.FITTING
            and not any(isinstance(c, WeightAveraging) for c in trainer.callbacks)
        ):
            checkpoint["state_dict"] = checkpoint["current_model_state"]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The scenario preset of the training data, so the optimizer can warn when a problem lies
        # elsewhere (`training_preset`); at the top level, since hyper_parameters go to __init__.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        preset = dataset_preset(getattr(datamodule, "hparams", {}).get("root"))
        if preset is not None:
            checkpoint["training_preset"] = preset

    def _step(self, batch, split: str):
        out, pass_prob, runs = self(batch, self._simulated_pass(batch, split))
        y = batch["chain"].y
        # A chain that completed nothing has no response ratio (NaN): it is left out of the loss.
        # (NaN is replaced before any arithmetic, so no NaN reaches the gradients either.)
        known_y = torch.isfinite(y)
        y_safe = torch.where(known_y, y, 1.0)
        rel = (out - y_safe).abs() / y_safe.clamp(min=self.hparams.floor)
        loss = rel[known_y].mean()
        y_pass = batch["fragment"].y_pass
        known = ~torch.isnan(y_pass)
        if pass_prob is not None and known.any() and self.hparams.pass_weight > 0:
            loss = loss + self.hparams.pass_weight * torch.nn.functional.l1_loss(
                pass_prob[known], y_pass[known]
            )
        n, sync = batch.num_graphs, split != "train"  # val/test: means over every process
        self.log(f"{split}/loss", loss, batch_size=n, prog_bar=sync, sync_dist=sync)
        self.log(
            f"{split}/fixed_point_iterations", runs.double().mean(), batch_size=n, sync_dist=sync
        )
        if split != "train":
            self._log_epoch_metrics(split, out.detach(), y)
        if split == "val":
            self._collect_scores(batch, out.detach(), y)
        return loss

    def _collect_scores(self, batch, pred: torch.Tensor, true: torch.Tensor) -> None:
        scores = nonconformity(pred, true)
        load = scenario_max_load(batch).to(scores.dtype)
        self.val_scores.update(torch.cat([scores, load.unsqueeze(1)], dim=1))

    def on_validation_epoch_end(self) -> None:
        """Calibrate the intervals on this epoch's validation scores (not on the sanity check's
        few batches before training)."""
        if self.val_scores.update_called and not self.trainer.sanity_checking:
            rows = self.val_scores.compute()
            self.intervals.fit(rows[:, :2], rows[:, 2].cpu().numpy())
        self.val_scores.reset()

    def _simulated_pass(self, batch, split: str):
        """In training with `simulated_loads`: the fragments' simulated pass probabilities, for
        the network to compute its loads from instead of iterating its fixed point (a stage
        without a label, which no job reached, passes all: its load is 0 either way). None when
        the batch has no stage labels or outside training: validation and test always run the
        fixed point, as scoring does."""
        if split != "train" or not self.hparams.simulated_loads:
            return None
        y_pass = batch["fragment"].y_pass
        known = ~torch.isnan(y_pass)
        if not bool(known.any()):
            return None
        return torch.where(known, y_pass, 1.0)

    def _log_epoch_metrics(self, split: str, pred: torch.Tensor, true: torch.Tensor) -> None:
        """Per-chain errors into the epoch's means: MAPE of both ratios (chains whose true value
        is 0 or unknown left out, as `chainnet.learn.metrics.mape`), MAE of the loss ratio."""
        known = torch.isfinite(true) & torch.isfinite(pred)
        for name, (kind, col) in EPOCH_METRICS.items():
            p, t = pred[:, col], true[:, col]
            ok = known[:, col] & (t != 0) if kind == "mape" else known[:, col]
            err = (p[ok] - t[ok]).abs()
            metric = self.epoch_metrics[f"{split}_{name}"]
            metric.update(err / t[ok].abs() if kind == "mape" else err)
            self.log(f"{split}/{name}", metric, on_step=False, on_epoch=True)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test")

    def _build(self, key: str, **kwargs):
        """The `_partial_` config `key` called with `kwargs`; a value it refuses (a negative
        learning rate) is one ValueError naming `model.<key>`."""
        try:
            return instantiate(self.hparams[key])(**kwargs)
        except InstantiationException as exc:
            cause = exc.__cause__ or exc
            raise ValueError(f"model.{key}: {str(cause).strip().splitlines()[0]}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model.{key}: {str(exc).strip().splitlines()[0]}") from exc

    def configure_optimizers(self):
        # Configs stay plain (saved in the checkpoint); the `_partial_` ones are built here.
        optimizer = self._build("optimizer", params=self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        scheduler = self._build("scheduler", optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"},
        }
