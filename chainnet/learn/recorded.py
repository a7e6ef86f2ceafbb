"""Buffers a model records during training rather than learns (the training ranges, the prediction
intervals), which a checkpoint made before they existed lacks.

A `Recorded` module loads such a checkpoint with its buffers left unknown (`fitted` False) instead
of failing on missing keys, and likewise one whose buffers have other shapes (another list of
inputs, another grid of levels).
"""

from __future__ import annotations

import torch


class Recorded(torch.nn.Module):
    """A module whose buffers `RECORDED` (with a boolean `fitted` among them) may be absent from
    a checkpoint."""

    RECORDED: tuple[str, ...] = ("fitted",)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        keys = {name: prefix + name for name in self.RECORDED}
        shapes_fit = all(
            key in state_dict and state_dict[key].shape == getattr(self, name).shape
            for name, key in keys.items()
        )
        if not shapes_fit:
            for name, key in keys.items():
                state_dict[key] = getattr(self, name).detach().clone()
            state_dict[keys["fitted"]] = torch.tensor(False)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
