"""The LightningModule: any QoS network, its loss, its logged metrics and its optimizer."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from chainnet.learn.features import FEATURE_VERSION
from chainnet.learn.metrics import mae, mape
from chainnet.learn.models import resolve_target


class QoSModule(L.LightningModule):
    """Trains `net` (built from its config, kept in the checkpoint) on chain and stage targets.

    Loss: the relative error of the chain's throughput ratio and response ratio (|pred - y| /
    max(y, `floor`): the MAPE the model is judged by, which an absolute loss would neglect on small
    ratios; the floor keeps nearly lost chains from dominating), plus `pass_weight` times L1 on the
    fragments' pass probabilities where the data has them.
    """

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: Any,
        scheduler: Any = None,
        pass_weight: float = 0.5,
        floor: float = 0.1,
        feature_version: int = FEATURE_VERSION,
    ):
        super().__init__()
        # Plain containers only: a checkpoint then loads with torch.load(weights_only=True).
        net, optimizer, scheduler = (
            OmegaConf.to_container(c, resolve=True) if isinstance(c, DictConfig) else c
            for c in (net, optimizer, scheduler)
        )
        net = resolve_target(net)  # a checkpoint of an older layout names the old module
        self.save_hyperparameters(logger=False)
        self.net = instantiate(net)

    def forward(self, batch):
        return self.net(batch)

    def on_fit_start(self) -> None:
        if not bool(self.net.normalizer.fitted):
            self.net.normalizer.fit(list(self.trainer.datamodule.sets["train"]))

    def _step(self, batch, split: str):
        out, pass_prob, iterations = self(batch)
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
        n = batch.num_graphs
        self.log(f"{split}/loss", loss, batch_size=n, prog_bar=split != "train")
        self.log(f"{split}/fixed_point_iterations", float(iterations), batch_size=n)
        if split != "train":
            pred, true = out.detach().cpu().numpy(), y.cpu().numpy()
            self.log(f"{split}/mape_throughput_ratio", mape(pred[:, 0], true[:, 0]), batch_size=n)
            self.log(f"{split}/mape_response_ratio", mape(pred[:, 1], true[:, 1]), batch_size=n)
            # loss ratio = 1 - throughput ratio: the same absolute error
            self.log(f"{split}/mae_loss_ratio", mae(pred[:, 0], true[:, 0]), batch_size=n)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test")

    def configure_optimizers(self):
        # Configs stay plain (saved in the checkpoint); the `_partial_` ones are built here.
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"},
        }
