"""An exponential moving average of the weights, for validation and every checkpoint.

Lightning's `WeightAveraging` keeps the average (torch's `AveragedModel`), swaps it in for
validation and writes it to each checkpoint's `state_dict` (the weights being trained go to
`current_model_state`, so a run resumes exactly). Three things are chosen here:
- The decay warms up, as TensorFlow's `ExponentialMovingAverage` does: after n updates it is
  min(`decay`, (1 + n) / (10 + n)), so a short run (the demo's 150 steps) averages its last steps
  rather than staying near its first weights, and a long one averages over about 1 / (1 - `decay`)
  steps. Lightning's `EMAWeightAveraging` has a fixed decay, hence our own `avg_fn`.
- Only the parameters are averaged. The module's buffers are records, not weights: the
  normaliser's and the training ranges' statistics, and the prediction intervals, calibrated at
  the end of each validation epoch on that epoch's residuals (which are the average's, since the
  average is what is validated). Averaged, the intervals would drift from the weights they were
  calibrated for, and their integer counts would be truncated. `AveragedModel` copies the
  module's buffers at every update; the intervals are fitted after the epoch's last update, so
  the average takes the buffers again where it is saved (a checkpoint) and where it ends training.
- A checkpoint read to test or predict (train.py tests its best one after fitting) is its
  average, the `state_dict`: Lightning's callback would load the weights being trained instead,
  whenever it was built for a fit before, and so test other weights than those scored and saved.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


def warmed_ema(decay: float):
    """`AveragedModel`'s `avg_fn`: the average after `n` updates moves to the weights by
    1 - min(`decay`, (1 + n) / (10 + n)), computed in float64 (in bfloat16 0.999 would round to
    1, and in float16 n would overflow) and applied in the weights' dtype."""

    def average(mean: torch.Tensor, value: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        n = n.to(torch.float64)
        step = 1 - torch.clamp((1 + n) / (10 + n), max=decay)
        return mean + (value - mean) * step.to(mean.dtype)

    return average


class WeightEMA(WeightAveraging):
    """EMA of the parameters, updated after every optimizer step, with a warm-up (`warmed_ema`).
    The buffers are the module's own, never averaged."""

    def __init__(self, decay: float = 0.999):
        if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0 < decay < 1:
            raise ValueError(f"callbacks.weight_averaging.decay: got {decay!r}; must be in (0, 1)")
        super().__init__(use_buffers=False, avg_fn=warmed_ema(float(decay)))

    @torch.no_grad()
    def _take_buffers(self, pl_module: L.LightningModule) -> None:
        if self._average_model is None:
            return
        for mine, current in zip(self._average_model.module.buffers(), pl_module.buffers()):
            mine.copy_(current)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The average is built at setup, before the strategy moves the module to its device (a
        # GPU): it follows the module there, so that updates and swaps stay on that device.
        if self._average_model is not None:
            self._average_model.to(pl_module.device)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._take_buffers(pl_module)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # resuming: the average and the weights
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_buffers(pl_module)
        super().on_train_end(trainer, pl_module)
