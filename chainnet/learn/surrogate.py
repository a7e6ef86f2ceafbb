"""Score deployments with a trained model: one row of predicted QoS per chain, in the input's units.

    from chainnet import Surrogate
    s = Surrogate.load("model.ckpt")
    df = s.predict(scenarios)   # one row per chain

Loading is safe (`chainnet.learn.checkpoint`): the file's CRCs are checked, it is read with
`torch.load(weights_only=True)`, which unpickles tensors and plain containers only, non-finite
weights are refused, and the network is built only from the model classes of this package. A
file that is not a checkpoint, a damaged one, or one whose features differ from this version's,
gives a `CheckpointError` that says so.

Predictions are in the time units of the input: throughput = throughput ratio x arrival rate;
response time = sum of the chain's mean service times / response ratio; accuracy (where the chain's
exits and last stage have accuracies) = the accuracies of the ways out, weighted by the predicted
probability that a job leaves that way (reaching, passing, exiting).

They are kept physically possible (`physical_limits`): a chain's throughput never exceeds its
arrival rate nor what the devices on its path can serve, and a chain none of whose jobs can be
admitted somewhere (a job needs more memory than its device or region holds) completes nothing.
Each row says whether its inputs lie outside the ranges the model was trained on
(`out_of_range`, `out_of_range_why`; `chainnet.learn.ranges`), and with `level=0.9` the bounds
of calibrated 90 % prediction intervals (`chainnet.learn.intervals`). `Surrogate.load(path,
device="cuda")` runs the network there; graphs go there and outputs come back to the CPU.
`Surrogate.preset` is the scenario preset of its training data where known (`training_preset`),
and `Surrogate.ranges_scope` what its training ranges say of those scenarios otherwise.
"""

from __future__ import annotations

import copy
import numbers
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_geometric.utils import scatter

from chainnet.learn.checkpoint import (
    CheckpointError,
    check_feature_version,
    read_checkpoint,
    training_preset,
)
from chainnet.learn.features import graph_batch
from chainnet.learn.intervals import PredictionIntervals, grid_level, qos_bounds, scenario_max_load
from chainnet.learn.limits import Limits, physical_limits
from chainnet.learn.models import MODEL_CLASSES, resolve_target
from chainnet.learn.prior import (
    chain_of_fragments,
    is_last_stage,
    load_features,
    reach_probabilities,
)
from chainnet.learn.ranges import RANGE_INPUTS, TrainingRanges
from chainnet.learn.tally import RangeTally, out_of_range_warning
from chainnet.scenario import Scenario

__all__ = [
    "CheckpointError",
    "RangeTally",
    "RangesUnknownWarning",
    "Surrogate",
    "build_net",
    "out_of_range_warning",
    "physical_limits",
]

PREDICTED = (
    "throughput",
    "loss_ratio",
    "response_time",
    "accuracy",
    "throughput_ratio",
    "response_ratio",
)
BOUNDED = ("throughput", "loss_ratio", "response_time", "throughput_ratio", "response_ratio")
BOUNDS = tuple(f"{q}_{side}" for q in BOUNDED for side in ("lower", "upper"))
FLAGS = ("out_of_range", "out_of_range_why")
META = ("scenario", "name", "chain", "chain_name", "service", "arrival_rate")


class RangesUnknownWarning(UserWarning):
    """The checkpoint holds no training ranges: `out_of_range` stays unknown."""


def build_net(ckpt: dict, path: Path) -> torch.nn.Module:
    """The checkpoint's network, built from its config and weights, in eval mode."""
    hp = ckpt["hyper_parameters"]
    check_feature_version(ckpt, path, "retrain it with this version (python train.py ...)")
    if not isinstance(hp.get("net"), dict):
        raise CheckpointError(f"{path}: holds no network config (hyper_parameters.net)")
    cfg = resolve_target(hp["net"])
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
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()] or ["?"]
        first = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]  # torch's list
        raise CheckpointError(
            f"{path}: its weights do not fit its model config ({first[:200]})"
        ) from exc
    if not bool(net.normalizer.fitted):
        raise CheckpointError(f"{path}: holds no normalisation statistics (never trained?)")
    for name, value in net.normalizer.named_buffers():
        if name.endswith("_std") and not bool((value > 0).all()):
            raise CheckpointError(
                f"{path}: normalizer.{name} holds a scale <= 0, which training never writes "
                "(altered bytes?); not used"
            )
    return net.eval()


def build_part(ckpt: dict, prefix: str, part: torch.nn.Module) -> torch.nn.Module:
    """`part` (the training ranges, "ranges.", or the prediction intervals, "intervals.") loaded
    from what the checkpoint holds under `prefix` (`fitted` False when it holds none)."""
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    part.load_state_dict(state)
    return part


def resolve_device(device) -> torch.device:
    """`device` as a torch.device this machine can use, or one ValueError naming it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"device: got {device!r}; a torch device such as 'cpu' or 'cuda'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: got {device!r}; CUDA is not available on this machine")
    try:
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError) as exc:
        first = str(exc).strip().split("\n")[0][:200]
        raise ValueError(f"device: got {device!r}; not usable on this machine ({first})") from exc
    return dev


def _scenario_list(scenarios, name: str = "scenarios") -> list[Scenario]:
    """`scenarios` as a list of Scenario objects, or a TypeError naming what is wrong."""
    if isinstance(scenarios, Scenario):
        return [scenarios]
    if isinstance(scenarios, (str, bytes, Path, dict)) or not isinstance(scenarios, Iterable):
        path_like = isinstance(scenarios, (str, Path))
        hint = "; read a file with Scenario.load(path)" if path_like else ""
        raise TypeError(
            f"{name}: a Scenario or a list of Scenario objects, got {type(scenarios).__name__}"
            + hint
        )
    out = list(scenarios)
    for i, sc in enumerate(out):
        if not isinstance(sc, Scenario):
            raise TypeError(f"{name}[{i}]: a Scenario, got {type(sc).__name__}")
    return out


# Inputs that are zero on every scenario of a `pool` preset (dsn24) and not on `edge` ones.
EDGE_INPUTS = (
    "device.ps",
    "device.memory_limited",
    "fragment.memory_share",
    "fragment.scv",
    "fragment.exit_prob",
)


class Surrogate:
    """A trained QoS model that scores scenarios in batches; `preset`: the scenario preset of
    its training data (`training_preset`), None where unknown."""

    def __init__(
        self,
        net: torch.nn.Module,
        source: str = "",
        ranges: TrainingRanges | None = None,
        intervals: PredictionIntervals | None = None,
        preset: dict | None = None,
    ):
        self.net = net.eval()
        self.preset = preset
        self.source = source
        self.ranges = ranges
        self.intervals = intervals

    @classmethod
    def load(cls, path: str | Path, warn_ranges: bool = True, device="cpu") -> Surrogate:
        """The checkpoint at `path`, checked, its network on `device` (a torch device); a
        `RangesUnknownWarning` if it holds no training ranges, unless `warn_ranges` is False (a
        command that prints `ranges_note` itself)."""
        target = resolve_device(device)
        path = Path(path)
        ckpt = read_checkpoint(path)
        net = build_net(ckpt, path).to(target)
        ranges = build_part(ckpt, "ranges.", TrainingRanges())
        intervals = build_part(ckpt, "intervals.", PredictionIntervals())
        out = cls(net, str(path), ranges, intervals, training_preset(ckpt))
        if warn_ranges and not out.ranges_known:
            warnings.warn(out.ranges_note, RangesUnknownWarning, stacklevel=2)
        return out

    @property
    def ranges_known(self) -> bool:
        """Whether the checkpoint holds the ranges of its training inputs."""
        return self.ranges is not None and bool(self.ranges.fitted)

    def ranges_scope(self) -> dict | None:
        """What the training ranges say of the training scenarios: `name` None, `kind` (edge if
        any of `EDGE_INPUTS` was ever above zero, else pool: dsn24's homogeneous, deterministic,
        memoryless devices) and the (min, max) of `devices`, `chains` and `chain_length`; None
        without ranges."""
        if not self.ranges_known:
            return None
        at = {name: i for i, name in enumerate(RANGE_INPUTS)}
        low, high = self.ranges.low.cpu().numpy(), self.ranges.high.cpu().numpy()

        def span(name: str) -> tuple[int, int]:
            return int(round(low[at[name]])), int(round(high[at[name]]))

        edge = any(high[at[name]] > 0 for name in EDGE_INPUTS)
        return {
            "name": None,
            "kind": "edge" if edge else "pool",
            "devices": span("n_devices"),
            "chains": span("n_chains"),
            "chain_length": span("n_stages"),
        }

    @property
    def device(self) -> torch.device:
        """Where the network runs."""
        return next(self.net.parameters()).device

    @property
    def intervals_known(self) -> bool:
        """Whether the checkpoint holds calibrated prediction intervals."""
        return self.intervals is not None and bool(self.intervals.fitted)

    def check_level(self, level) -> None:
        """One ValueError unless `level` is None or a level this checkpoint has intervals for."""
        if level is None:
            return
        grid_level(level)
        if not self.intervals_known:
            raise ValueError(
                f"level: {self.source or 'this model'} holds no calibrated intervals (made "
                "before chainnet calibrated them); retrain it (python train.py ...) to get them"
            )

    @property
    def ranges_note(self) -> str:
        return (
            f"note: {self.source or 'this model'} holds no training ranges (made before chainnet "
            "recorded them); out_of_range is left empty"
        )

    @torch.inference_mode()
    def predict_arrays(
        self, scenarios: Sequence[Scenario], level: float | None = None
    ) -> dict[str, np.ndarray]:
        """Per chain of all `scenarios` (in order): the predicted QoS as arrays, plus `scenario`,
        `out_of_range` (1.0 or 0.0; NaN when the ranges are unknown) and `out_of_range_why`; with
        a `level`, the bounds of its prediction intervals too (`BOUNDS`)."""
        scenarios = _scenario_list(scenarios)
        self.check_level(level)
        bounds = BOUNDS if level is not None else ()
        if not scenarios:
            empty = {k: np.zeros(0) for k in ("scenario", *PREDICTED, *bounds, "out_of_range")}
            return {
                **empty,
                "scenario": np.zeros(0, dtype=np.int64),
                "out_of_range_why": np.empty(0, dtype=object),
            }
        return self.predict_graph(graph_batch(scenarios), physical_limits(scenarios), level)

    @torch.inference_mode()
    def predict_graph(self, g, limits: Limits, level: float | None = None) -> dict:
        """`predict_arrays` from the scenarios' batched graph (`graph_batch`, or an equal one
        built another way: the optimizer's `CandidateGraphs`) and their `physical_limits`."""
        self.check_level(level)
        out, pass_prob, _ = self.net(copy.copy(g).to(self.device))  # g itself stays on the CPU
        out = out.cpu()
        if pass_prob is None:  # a model without stage outputs: the queueing prior's
            pass_prob = load_features(g)["prior_pass"]
        # A stage that cannot hold one of its jobs passes none.
        pass_prob = torch.where(torch.from_numpy(limits.admits), pass_prob.cpu(), 0.0)
        # Never above the arrival rate (the ratio is < 1) nor what the path can serve.
        tput_ratio = np.minimum(out[:, 0].double().numpy(), limits.throughput / limits.rate)
        resp_ratio = np.where(limits.never, np.nan, out[:, 1].double().numpy())
        n_chain = g["chain"].num_nodes
        flags = np.full(n_chain, np.nan)
        why = np.full(n_chain, None, dtype=object)
        checked = self.ranges.check(g) if self.ranges is not None else None
        if checked is not None:
            flags = checked[0].astype(np.float64)
            why[:] = checked[1]
        arrays = {
            "scenario": g["chain"].batch.numpy(),
            "throughput": tput_ratio * limits.rate,
            "loss_ratio": 1.0 - tput_ratio,
            "response_time": limits.service / resp_ratio,
            "accuracy": chain_accuracy(g, pass_prob),
            "throughput_ratio": tput_ratio,
            "response_ratio": resp_ratio,
            "out_of_range": flags,
            "out_of_range_why": why,
        }
        if level is not None:
            pred = np.stack([tput_ratio, resp_ratio], axis=1)
            ratios = self.intervals.bounds(pred, scenario_max_load(g).numpy(), level)
            tput_max = limits.throughput / limits.rate
            arrays.update(qos_bounds(ratios, limits.rate, limits.service, tput_max))
        return arrays

    def predict(
        self,
        scenarios: Scenario | Iterable[Scenario],
        batch_size: int = 1024,
        level: float | None = None,
    ) -> pd.DataFrame:
        """One row per chain: scenario index and name, chain, service, arrival rate, the
        predicted throughput, loss ratio, response time, accuracy and the two ratios, with a
        `level` (0.9: 90 % intervals) the lower and upper bounds of all but the accuracy
        (`<quantity>_lower`, `<quantity>_upper`), and whether the chain's inputs lie outside the
        training ranges (`out_of_range`: True, False, or <NA> when the checkpoint holds no
        ranges) and which (`out_of_range_why`)."""
        scenarios = _scenario_list(scenarios)
        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool):
            raise TypeError(f"batch_size: an integer >= 1, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size: got {batch_size}; must be >= 1")
        self.check_level(level)
        columns = list(PREDICTED) + (list(BOUNDS) if level is not None else [])
        parts = []
        for start in range(0, len(scenarios), batch_size):
            chunk = scenarios[start : start + batch_size]
            arrays = self.predict_arrays(chunk, level)
            meta = [
                (start + i, sc.name, c, ch.name, ch.service, ch.arrival_rate)
                for i, sc in enumerate(chunk)
                for c, ch in enumerate(sc.chains)
            ]
            part = pd.DataFrame(meta, columns=list(META))
            for col in columns:
                part[col] = arrays[col]
            flags = arrays["out_of_range"]
            part["out_of_range"] = pd.array(
                [None if np.isnan(f) else bool(f) for f in flags], dtype="boolean"
            )
            part["out_of_range_why"] = arrays["out_of_range_why"]
            parts.append(part)
        if not parts:
            return pd.DataFrame(columns=list(META) + columns + list(FLAGS))
        return pd.concat(parts, ignore_index=True)


def chain_accuracy(g, pass_prob: torch.Tensor) -> np.ndarray:
    """Per chain of graph `g`: the accuracies of its ways out (each exit, and the last stage)
    weighted by the probability that a job leaves that way (reaching, passing with `pass_prob`,
    exiting); NaN where an exit or the last stage has no accuracy, or no job completes."""
    frag = g["fragment"]
    chain, hop = chain_of_fragments(g)
    n_chain = g["chain"].num_nodes
    # Where jobs leave: reach x pass x (exit probability, or 1 at the last stage).
    reach = reach_probabilities(pass_prob, frag.exit_prob, chain, hop, n_chain).double()
    last = is_last_stage(chain, hop, n_chain)
    leave = reach * pass_prob.double() * torch.where(last, 1.0, frag.exit_prob.double())
    acc = frag.accuracy.double()
    weighted = scatter(leave * torch.nan_to_num(acc), chain, 0, dim_size=n_chain)
    # A chain's accuracy is defined when its last stage and every exit have one, and some
    # job completes.
    needed = last | (frag.exit_prob > 0)
    undefined = scatter((needed & torch.isnan(acc)).double(), chain, 0, dim_size=n_chain)
    left = scatter(leave, chain, 0, dim_size=n_chain)
    return torch.where(
        (undefined > 0) | (left <= 0), torch.nan, weighted / left.clamp(min=1e-300)
    ).numpy()
