"""QoS models: ChainNet and its graph baselines (`chainnet`), the MLP baseline (`mlp`).

`MODEL_CLASSES` is the only place a checkpoint's model class is looked up: a checkpoint names its
network by `_target_`, and nothing else is ever built from it.
"""

from __future__ import annotations

from typing import Any

from chainnet.learn.models.chainnet import ChainNet
from chainnet.learn.models.mlp import ChainMLP

MODEL_CLASSES: dict[str, type] = {
    "chainnet.learn.models.chainnet.ChainNet": ChainNet,
    "chainnet.learn.models.mlp.ChainMLP": ChainMLP,
}
# Checkpoints written before the package was split into stages (chainnet/models/ at the top).
LEGACY_TARGETS = {
    "chainnet.models.chainnet.ChainNet": "chainnet.learn.models.chainnet.ChainNet",
    "chainnet.models.mlp.ChainMLP": "chainnet.learn.models.mlp.ChainMLP",
}


def resolve_target(cfg: dict[str, Any]) -> dict[str, Any]:
    """The network config with a legacy `_target_` replaced by today's name (a copy)."""
    cfg = dict(cfg)
    target = cfg.get("_target_")
    cfg["_target_"] = LEGACY_TARGETS.get(target, target)
    return cfg
