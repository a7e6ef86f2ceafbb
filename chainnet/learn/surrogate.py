"""Score deployments with a trained model: one row of predicted QoS per chain, in milliseconds.

    from chainnet import Surrogate
    s = Surrogate.load("model.ckpt")
    df = s.predict(scenarios)   # one row per chain

Loading is safe: the file is read with `torch.load(weights_only=True)`, which unpickles tensors and
plain containers only, and the network is built only from the model classes of this package. A
file that is not a checkpoint, or one whose features differ from this version's, gives a
`CheckpointError` that says so.

Predictions are in the time units of the input: throughput = throughput ratio x arrival rate;
response time = sum of the chain's mean service times / response ratio; accuracy (where the chain's
exits and last stage have accuracies) = the accuracies of the ways out, weighted by the predicted
probability that a job leaves that way (reaching, passing, exiting).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_geometric.utils import scatter

from chainnet.learn.features import FEATURE_VERSION, graph_batch
from chainnet.learn.models import MODEL_CLASSES, resolve_target
from chainnet.learn.prior import (
    chain_of_fragments,
    is_last_stage,
    load_features,
    reach_probabilities,
)
from chainnet.scenario import Scenario

PREDICTED = (
    "throughput",
    "loss_ratio",
    "response_time",
    "accuracy",
    "throughput_ratio",
    "response_ratio",
)


class CheckpointError(ValueError):
    """The file is not a checkpoint this version of chainnet can use."""


def _read_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path: {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a zip, truncated, or holds objects beyond tensors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a chainnet checkpoint, or not one safe to load ({first[:200]})"
        ) from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("hyper_parameters"), dict):
        raise CheckpointError(f"{path}: not a checkpoint of train.py (no hyper_parameters)")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a checkpoint of train.py (no state_dict)")
    return ckpt


def build_net(ckpt: dict, path: Path) -> torch.nn.Module:
    """The checkpoint's network, built from its config and weights, in eval mode."""
    hp = ckpt["hyper_parameters"]
    version = hp.get("feature_version", 1)
    if version != FEATURE_VERSION:
        raise CheckpointError(
            f"{path}: made with feature version {version}, and this chainnet computes version "
            f"{FEATURE_VERSION}; retrain it with this version (python train.py ...)"
        )
    cfg = resolve_target(hp.get("net") or {})
    target = cfg.pop("_target_", None)
    if target not in MODEL_CLASSES:
        raise CheckpointError(
            f"{path}: model class {target!r} is not one of chainnet's {sorted(MODEL_CLASSES)}"
        )
    try:
        net = MODEL_CLASSES[target](**cfg)
        prefix = "net."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        net.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: its weights do not fit its model config ({first[:200]})"
        ) from exc
    if not bool(net.normalizer.fitted):
        raise CheckpointError(f"{path}: holds no normalisation statistics (never trained?)")
    return net.eval()


class Surrogate:
    """A trained QoS model that scores scenarios in batches."""

    def __init__(self, net: torch.nn.Module, source: str = ""):
        self.net = net.eval()
        self.source = source

    @classmethod
    def load(cls, path: str | Path) -> Surrogate:
        path = Path(path)
        return cls(build_net(_read_checkpoint(path), path), str(path))

    @torch.no_grad()
    def predict_arrays(self, scenarios: Sequence[Scenario]) -> dict[str, np.ndarray]:
        """Per chain of all `scenarios` (in order): the predicted QoS as arrays, plus `scenario`."""
        g = graph_batch(scenarios)
        out, pass_prob, _ = self.net(g)
        if pass_prob is None:  # a model without stage outputs: the queueing prior's
            pass_prob = load_features(g)["prior_pass"]
        frag = g["fragment"]
        chain, hop = chain_of_fragments(g)
        n_chain = g["chain"].num_nodes
        service = (frag.base_load / frag.rate).double()
        total = scatter(service, chain, 0, dim_size=n_chain, reduce="sum")
        rate = scatter(frag.rate.double(), chain, 0, dim_size=n_chain, reduce="max")
        # Where jobs leave: reach x pass x (exit probability, or 1 at the last stage).
        reach = reach_probabilities(pass_prob, frag.exit_prob, chain, hop, n_chain).double()
        last = is_last_stage(chain, hop, n_chain)
        leave = reach * pass_prob.double() * torch.where(last, 1.0, frag.exit_prob.double())
        acc = frag.accuracy.double()
        weighted = scatter(leave * torch.nan_to_num(acc), chain, 0, dim_size=n_chain)
        # A chain's accuracy is defined when its last stage and every exit have one.
        needed = last | (frag.exit_prob > 0)
        undefined = scatter((needed & torch.isnan(acc)).double(), chain, 0, dim_size=n_chain)
        left = scatter(leave, chain, 0, dim_size=n_chain)
        accuracy = torch.where(undefined > 0, torch.nan, weighted / left.clamp(min=1e-300)).numpy()
        tput_ratio = out[:, 0].double()
        resp_ratio = out[:, 1].double()
        return {
            "scenario": g["chain"].batch.numpy(),
            "throughput": (tput_ratio * rate).numpy(),
            "loss_ratio": (1.0 - tput_ratio).numpy(),
            "response_time": (total / resp_ratio).numpy(),
            "accuracy": accuracy,
            "throughput_ratio": tput_ratio.numpy(),
            "response_ratio": resp_ratio.numpy(),
        }

    def predict(
        self, scenarios: Scenario | Iterable[Scenario], batch_size: int = 1024
    ) -> pd.DataFrame:
        """One row per chain: scenario index and name, chain, service, arrival rate, and the
        predicted throughput, loss ratio, response time, accuracy and the two ratios."""
        if isinstance(scenarios, Scenario):
            scenarios = [scenarios]
        scenarios = list(scenarios)
        for i, sc in enumerate(scenarios):
            if not isinstance(sc, Scenario):
                raise TypeError(f"scenarios[{i}]: a Scenario, got {type(sc).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size: got {batch_size}; must be >= 1")
        parts = []
        for start in range(0, len(scenarios), batch_size):
            chunk = scenarios[start : start + batch_size]
            arrays = self.predict_arrays(chunk)
            meta = [
                (start + i, sc.name, c, ch.name, ch.service, ch.arrival_rate)
                for i, sc in enumerate(chunk)
                for c, ch in enumerate(sc.chains)
            ]
            part = pd.DataFrame(
                meta,
                columns=["scenario", "name", "chain", "chain_name", "service", "arrival_rate"],
            )
            for col in PREDICTED:
                part[col] = arrays[col]
            parts.append(part)
        if not parts:
            return pd.DataFrame(
                columns=["scenario", "name", "chain", "chain_name", "service", "arrival_rate"]
                + list(PREDICTED)
            )
        return pd.concat(parts, ignore_index=True)
