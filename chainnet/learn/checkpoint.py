"""Reading a checkpoint file safely, for scoring, evaluation and resuming alike.

A checkpoint is refused with one line (`CheckpointError`) before anything uses it when:
- it is not a zip archive as `torch.save` writes it (another kind of file, or a truncated one);
- a member's bytes do not match the CRC-32 the archive stores for it (bytes changed on disk or in
  transit): `zipfile.ZipFile.testzip` reads every member and checks it, because torch's own zip
  reader does not;
- it holds anything beyond tensors and plain containers: it is read with
  `torch.load(weights_only=True)` only, so no pickled code ever runs;
- it is not a checkpoint of train.py (no hyper_parameters or state_dict);
- a weight or a statistic is NaN or infinite (a diverged run, or altered bytes that kept the CRC).

`training_preset` says which scenario preset the checkpoint's training data was made with.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from chainnet.dataset.reader import MANIFEST
from chainnet.learn.features import FEATURE_VERSION


class CheckpointError(ValueError):
    """The file is not a checkpoint this version of chainnet can use."""


# State recorded during training rather than learnt: a checkpoint made before it existed resumes.
RECORDED = ("ranges.", "intervals.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def check_archive(path: Path) -> None:
    """Refuse a file that is not an intact zip archive (every member's CRC is checked)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a chainnet checkpoint, or a damaged one (not a readable torch.save "
            f"archive: {_first_line(exc)}; truncated, or another kind of file?)"
        ) from exc
    if bad is not None:
        raise CheckpointError(
            f"{path}: damaged checkpoint: the bytes of {bad} do not match their stored CRC-32 "
            "(changed on disk or in transit); not used, copy or train it again"
        )


def non_finite(tensors: Any, where: str = "") -> str | None:
    """The name of the first floating-point tensor in `tensors` (nested dicts, lists and tuples)
    that holds a NaN or an infinity, or None."""
    if isinstance(tensors, torch.Tensor):
        if tensors.is_floating_point() and not bool(torch.isfinite(tensors).all()):
            return where or "a tensor"
        return None
    if isinstance(tensors, dict):
        items = tensors.items()
    elif isinstance(tensors, (list, tuple)):
        items = enumerate(tensors)
    else:
        return None
    for key, value in items:
        found = non_finite(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at `path`, read safely and checked (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ckpt_path: {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder; give a checkpoint file (a .ckpt of train.py)")
    check_archive(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # holds objects beyond tensors, or is damaged beyond its CRCs
        raise CheckpointError(
            f"{path}: not a chainnet checkpoint, or not one safe to load ({_first_line(exc)})"
        ) from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("hyper_parameters"), dict):
        raise CheckpointError(f"{path}: not a checkpoint of train.py (no hyper_parameters)")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a checkpoint of train.py (no state_dict)")
    # with weight averaging, the weights being trained are kept beside their average
    bad = non_finite(ckpt["state_dict"]) or non_finite(
        ckpt.get("current_model_state"), "current_model_state"
    )
    if bad:
        raise CheckpointError(
            f"{path}: {bad} holds NaN or infinite values (a diverged training run, or altered "
            "bytes); not used"
        )
    return ckpt


def check_resume(path: str | Path, module: torch.nn.Module) -> dict:
    """The checkpoint at `path` if training `module` can resume from it; else one line saying
    why (`CheckpointError`), before Lightning reads it."""
    ckpt = read_checkpoint(path)
    missing = [k for k in ("optimizer_states", "loops", "epoch") if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path}: holds no training state ({', '.join(missing)}): a checkpoint to score "
            "with, not one to resume training from"
        )
    check_feature_version(ckpt, path, "start a new training run")
    bad = non_finite(ckpt["optimizer_states"], "optimizer_states")
    if bad:
        raise CheckpointError(f"{path}: {bad} holds NaN or infinite values; not used")
    # The weights, and those being trained where weight averaging saved its average as the
    # state_dict: both are loaded to resume, and both must fit.
    for key in ("state_dict", "current_model_state"):
        if key in ckpt:
            check_fits(ckpt[key], module, path, key)
    return ckpt


def check_fits(weights: dict, module: torch.nn.Module, path: Path, key: str) -> None:
    """One line (`CheckpointError`) if `weights` (the checkpoint's `key`; `read_checkpoint`
    has checked they are finite) do not fit `module`'s weights by name and shape."""
    # The training ranges and the prediction intervals are left out: a checkpoint made before
    # they were recorded resumes, and they are recorded then.
    expected = {
        k: tuple(v.shape) for k, v in module.state_dict().items() if not k.startswith(RECORDED)
    }
    got = {
        k: tuple(v.shape)
        for k, v in weights.items()
        if isinstance(v, torch.Tensor) and not k.startswith(RECORDED)
    }
    unknown = sorted(set(got) - set(expected))
    absent = sorted(set(expected) - set(got))
    resized = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    if unknown or absent or resized:
        first = (resized or absent or unknown)[0]
        detail = f"{first}: {got[first]} against {expected[first]}" if resized else first
        kind = "resized" if resized else ("missing" if absent else "unexpected")
        raise CheckpointError(
            f"{path}: its weights do not fit this run's model ({kind}: {detail}); resume with "
            "the model settings it was trained with"
        )


def check_feature_version(ckpt: dict, path: Path, advice: str) -> None:
    """One line (`CheckpointError`) if the checkpoint's features are not this chainnet's."""
    version = ckpt["hyper_parameters"].get("feature_version", 1)
    if version != FEATURE_VERSION:
        raise CheckpointError(
            f"{path}: made with feature version {version}, and this chainnet computes version "
            f"{FEATURE_VERSION}; {advice}"
        )


def training_preset(ckpt: dict) -> dict | None:
    """The scenario preset (name and ranges, as datagen recorded it) of the dataset the checkpoint
    was trained on: its `training_preset` entry (recorded by training), else that of the dataset
    folder the checkpoint names (`datamodule_hyper_parameters.root`), if it is still there."""
    preset = ckpt.get("training_preset")
    if isinstance(preset, dict):
        return preset
    return dataset_preset((ckpt.get("datamodule_hyper_parameters") or {}).get("root"))


def dataset_preset(root: str | Path | None) -> dict | None:
    """The scenario preset in the manifest of the dataset at `root` (through the source of a
    re-simulated one); None when there is none (a dataset imported from elsewhere, or gone)."""
    manifest = Path(str(root)) / MANIFEST if root else None
    if manifest is None or not manifest.is_file():
        return None
    try:
        identity = json.loads(manifest.read_text()).get("identity") or {}
    except (OSError, ValueError, AttributeError):
        return None
    while "scenario" not in identity and isinstance(identity.get("source_identity"), dict):
        identity = identity["source_identity"]  # a dataset re-simulated from another
    preset = identity.get("scenario")
    return preset if isinstance(preset, dict) and preset.get("name") else None
