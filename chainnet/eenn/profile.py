"""The early-exit profile: what a multi-exit network does at each vector of exit thresholds, and
what each of its blocks costs. The file is read, checked and written here, without torch; it is
measured by `chainnet.eenn.measure`.

The file (YAML or JSON; `python -m chainnet.profile` writes it):

    model: digits_mlp
    dataset: scikit-learn load_digits (1,797 images of 8x8 pixels, 10 classes)
    seed: 0
    jobs: 540                          # held-out images measured: the jobs
    training: {epochs: 40, lr: 0.01}   # optional: how the network was trained
    blocks:                            # in order; per job
      - {name: block1, flops: 4096, weight_bytes: 8320, activation_bytes: 128}
      - ...
    exits:                             # early exits, in block order
      - {name: exit1, after: block1, flops: 640, weight_bytes: 1320, accuracy: 0.93}
    final: {name: classifier, after: block4, flops: 640, weight_bytes: 1320, accuracy: 0.97}
    thresholds: [0.0, 0.5, 0.9, 1.0]   # the grid of confidence thresholds, for every exit
    vectors:                           # one per threshold vector measured
      - thresholds: [0.9, 0.5]         # one per exit
        fractions: [0.6, 0.3, 0.1]     # of all jobs: leaving at each exit, then at `final`
        accuracies: [0.99, 0.95, 0.8]  # of those jobs; null where none leaves
        accuracy: 0.974                # of all jobs
        mean_flops: 5200.0             # per job: the blocks and heads it passes through

A head's `accuracy` is its accuracy on every held-out job, as if all of them left there. A job
leaves at exit k when the top softmax probability of exit k's head exceeds the exit's threshold
(strictly: 1 never exits, 0 always does); only the jobs that no earlier exit took reach exit k.

Checked when a `Profile` is built, from a file or in code: fractions in [0, 1] that sum to 1
(within 1e-6); an accuracy exactly where a fraction is > 0; `accuracy` and `mean_flops` that agree
with the fractions (within 1e-6, relative for the FLOPs). A mistake is one `ScenarioError`
naming the field. `Profile.stage_exits(i)` gives the per-stage `exit_prob` and `exit_accuracy` of
the scenario format (`chainnet.scenario.Stage`) for vector i.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chainnet.documents import load_document
from chainnet.eenn.checks import check_profile, expected_flops
from chainnet.parsing import (
    ScenarioError,
    ScenarioTypeError,
    coerce,
    integer,
    items_of,
    mapping,
    maybe,
    real,
    sequence,
    spec,
    text,
)

WHERE = "profile"  # the prefix of the errors of a profile built in code
HEADER = "# An early-exit profile: format in README.md, 'Early-exit profiles'.\n"


def reals(v: Any, where: str, optional: bool = False) -> tuple:
    """A list of numbers (of numbers or nulls, when `optional`) as a tuple of plain numbers."""
    conv = maybe(real) if optional else real
    return tuple(conv(x, f"{where}[{i}]") for i, x in enumerate(sequence(v, where)))


@dataclass(frozen=True)
class Block:
    """A block of the network, per job: its forward pass, its weights and its output."""

    name: str
    flops: float
    weight_bytes: float
    activation_bytes: float

    def __post_init__(self) -> None:
        coerce(self, spec(name=text, flops=real, weight_bytes=real, activation_bytes=real))


@dataclass(frozen=True)
class Head:
    """An exit classifier after block `after`; `accuracy` on every held-out job."""

    name: str
    after: str
    flops: float
    weight_bytes: float
    accuracy: float

    def __post_init__(self) -> None:
        coerce(self, spec(name=text, after=text, flops=real, weight_bytes=real, accuracy=real))


@dataclass(frozen=True)
class StageCost:
    """A block with the exit head after it (if any): what the fragment that runs it costs."""

    name: str
    flops: float
    weight_bytes: float
    job_bytes: float


@dataclass(frozen=True)
class ThresholdVector:
    """One vector of exit thresholds and what it gives: per exit, then the final classifier, the
    fraction of all jobs leaving there and their accuracy (None where none leaves)."""

    thresholds: tuple[float, ...]
    fractions: tuple[float, ...]
    accuracies: tuple[float | None, ...]
    accuracy: float
    mean_flops: float

    def __post_init__(self) -> None:
        name = type(self).__name__
        object.__setattr__(self, "thresholds", reals(self.thresholds, f"{name}.thresholds"))
        object.__setattr__(self, "fractions", reals(self.fractions, f"{name}.fractions"))
        accuracies = reals(self.accuracies, f"{name}.accuracies", optional=True)
        object.__setattr__(self, "accuracies", accuracies)
        coerce(self, spec(accuracy=real, mean_flops=real))

    def conditional(self) -> tuple[tuple[float, float | None], ...]:
        """Per exit, then the final classifier: (the probability that a job reaching it leaves
        there, the accuracy of those leaving). A stage no job reaches gives (0, None)."""
        out = []
        for k, (share, acc) in enumerate(zip(self.fractions, self.accuracies)):
            reached = math.fsum(self.fractions[k:])
            out.append((share / reached if reached > 0 else 0.0, acc))
        return tuple(out)


@dataclass(frozen=True)
class Profile:
    """A multi-exit network's profile (see the module docstring), checked when built."""

    model: str
    dataset: str
    seed: int
    jobs: int
    blocks: tuple[Block, ...]
    exits: tuple[Head, ...]
    final: Head
    thresholds: tuple[float, ...]
    vectors: tuple[ThresholdVector, ...]
    training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        coerce(self, spec(model=text, dataset=text, seed=integer, jobs=integer))
        object.__setattr__(self, "blocks", items_of(self.blocks, Block, "Profile.blocks"))
        object.__setattr__(self, "exits", items_of(self.exits, Head, "Profile.exits"))
        if not isinstance(self.final, Head):
            raise ScenarioError("Profile.final", self.final, "expected a Head")
        object.__setattr__(self, "thresholds", reals(self.thresholds, "Profile.thresholds"))
        vectors = items_of(self.vectors, ThresholdVector, "Profile.vectors")
        object.__setattr__(self, "vectors", vectors)
        if not isinstance(self.training, Mapping):
            raise ScenarioTypeError("Profile.training", self.training, "expected a mapping")
        object.__setattr__(self, "training", dict(self.training))
        check_profile(self, WHERE)

    # ---- derived ---------------------------------------------------------------------------
    def exit_blocks(self) -> tuple[int, ...]:
        """The index of the block after which each early exit sits."""
        index = {b.name: i for i, b in enumerate(self.blocks)}
        return tuple(index[h.after] for h in self.exits)

    def stage_costs(self) -> tuple[StageCost, ...]:
        """Per block, with the head after it folded in: a fragment's work, memory, job memory."""
        heads = {h.after: h for h in (*self.exits, self.final)}
        out = []
        for b in self.blocks:
            h = heads.get(b.name)
            flops = b.flops + (h.flops if h else 0)
            weights = b.weight_bytes + (h.weight_bytes if h else 0)
            out.append(StageCost(b.name, flops, weights, b.activation_bytes))
        return tuple(out)

    def mean_flops(self, fractions: Sequence[float]) -> float:
        costs = [s.flops for s in self.stage_costs()]
        return expected_flops(costs, self.exit_blocks(), fractions)

    def stage_exits(self, vector: int | ThresholdVector) -> tuple[tuple[float, float | None], ...]:
        """Per block, the scenario's (`exit_prob`, `exit_accuracy`) for a vector (or its index):
        conditional on reaching the block; (0, None) where a block has no exit; the last block
        exits nothing more (all its jobs complete there) with the final classifier's accuracy.
        Chaining them gives back the vector's joint fractions."""
        v = self.vectors[vector] if isinstance(vector, int) else vector
        out: list[tuple[float, float | None]] = [(0.0, None)] * len(self.blocks)
        conditional = v.conditional()
        for b, pair in zip(self.exit_blocks(), conditional):
            out[b] = pair
        out[-1] = (0.0, conditional[-1][1])
        return tuple(out)

    def find(self, thresholds: Sequence[float]) -> int:
        """The index of the vector with these thresholds."""
        wanted = tuple(float(t) for t in thresholds)
        for i, v in enumerate(self.vectors):
            if v.thresholds == wanted:
                return i
        raise ScenarioError("thresholds", list(thresholds), "not a vector of this profile")

    def front(self) -> list[int]:
        """The vectors no other beats on both accuracy and mean FLOPs (the first of equals),
        cheapest first."""
        order = sorted(
            range(len(self.vectors)),
            key=lambda i: (self.vectors[i].mean_flops, -self.vectors[i].accuracy, i),
        )
        out, best = [], -math.inf
        for i in order:
            if self.vectors[i].accuracy > best:
                out.append(i)
                best = self.vectors[i].accuracy
        return out

    # ---- reading and writing ---------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Profile:
        return cls.from_dict(load_document(path), where=f"profile {path}")

    @classmethod
    def from_dict(cls, d: Any, where: str = WHERE) -> Profile:
        return read_profile(d, where)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "dataset": self.dataset, "seed": self.seed}
        out["jobs"] = self.jobs
        if self.training:
            out["training"] = dict(self.training)
        out["blocks"] = [_plain(b) for b in self.blocks]
        out["exits"] = [_plain(h) for h in self.exits]
        out["final"] = _plain(self.final)
        out["thresholds"] = list(self.thresholds)
        out["vectors"] = [_plain(v) for v in self.vectors]
        return out

    def save(self, path: str | Path) -> Path:
        """Write the profile as YAML, atomically (never a half-written file)."""
        path = Path(path)
        if path.is_dir():
            raise ScenarioError("out", str(path), "is a folder; give a file name such as x.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        body = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(HEADER + body)
        tmp.replace(path)
        return path


CACHED = 8  # profiles kept parsed (`load_profile`)
_parsed: OrderedDict[tuple[str, int, int], Profile] = OrderedDict()


def load_profile(path: str | Path) -> Profile:
    """Read and check a profile file (YAML or JSON), parsed once while the file is unchanged.

    Parsing a measured profile takes a noticeable fraction of a second, and a problem naming one
    reads it several times, so the last `CACHED` profiles read are kept, keyed on the file's
    resolved path, modification time and size: a file rewritten is read again. A profile is
    frozen; each call gets its own copy of the one mutable field, `training`."""
    try:
        stat = Path(path).stat()
    except OSError:
        return Profile.load(path)  # no such file: the loader's own one-line error
    key = (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)
    parsed = _parsed.get(key)
    if parsed is None:
        parsed = _parsed[key] = Profile.load(path)
    _parsed.move_to_end(key)
    while len(_parsed) > CACHED:
        _parsed.popitem(last=False)  # the least recently used
    profile = copy.copy(parsed)
    object.__setattr__(profile, "training", copy.deepcopy(dict(profile.training)))
    return profile


def _plain(obj: Any) -> dict[str, Any]:
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k in obj.__dataclass_fields__
        for v in [getattr(obj, k)]
    }


# ---- reading: one function per kind of record ---------------------------------------------------
PROFILE_KEYS = ("model", "dataset", "seed", "jobs", "training", "blocks", "exits", "final")
PROFILE_KEYS += ("thresholds", "vectors")
BLOCK_KEYS = ("name", "flops", "weight_bytes", "activation_bytes")
HEAD_KEYS = ("name", "after", "flops", "weight_bytes", "accuracy")
VECTOR_KEYS = ("thresholds", "fractions", "accuracies", "accuracy", "mean_flops")


def read_profile(d: Any, where: str = WHERE) -> Profile:
    """A profile from plain data (a parsed file), every mistake naming its field under `where`."""
    d = mapping(d, where, PROFILE_KEYS, [k for k in PROFILE_KEYS if k != "training"])
    training = d.get("training") or {}
    if not isinstance(training, Mapping):
        raise ScenarioTypeError(f"{where}.training", training, "expected a mapping")
    fields = {
        "model": text(d["model"], f"{where}.model"),
        "dataset": text(d["dataset"], f"{where}.dataset"),
        "seed": integer(d["seed"], f"{where}.seed"),
        "jobs": integer(d["jobs"], f"{where}.jobs"),
        "blocks": _records(d["blocks"], f"{where}.blocks", Block, BLOCK_KEYS),
        "exits": _records(d["exits"], f"{where}.exits", Head, HEAD_KEYS),
        "final": _record(d["final"], f"{where}.final", Head, HEAD_KEYS),
        "thresholds": reals(d["thresholds"], f"{where}.thresholds"),
        "vectors": tuple(
            _vector(x, f"{where}.vectors[{i}]")
            for i, x in enumerate(sequence(d["vectors"], f"{where}.vectors"))
        ),
        "training": training,
    }
    try:
        return Profile(**fields)
    except ScenarioError as exc:  # the checks name fields under WHERE: name them under `where`
        if not exc.where.startswith(WHERE):
            raise
        raise type(exc)(where + exc.where[len(WHERE) :], exc.value, exc.allowed) from None


def _record(x: Any, w: str, cls: type, keys: tuple[str, ...]) -> Any:
    x = mapping(x, w, keys, keys)
    return cls(**{k: (text if k in ("name", "after") else real)(x[k], f"{w}.{k}") for k in keys})


def _records(data: Any, w: str, cls: type, keys: tuple[str, ...]) -> tuple:
    return tuple(_record(x, f"{w}[{i}]", cls, keys) for i, x in enumerate(sequence(data, w)))


def _vector(x: Any, w: str) -> ThresholdVector:
    x = mapping(x, w, VECTOR_KEYS, VECTOR_KEYS)
    return ThresholdVector(
        thresholds=reals(x["thresholds"], f"{w}.thresholds"),
        fractions=reals(x["fractions"], f"{w}.fractions"),
        accuracies=reals(x["accuracies"], f"{w}.accuracies", optional=True),
        accuracy=real(x["accuracy"], f"{w}.accuracy"),
        mean_flops=real(x["mean_flops"], f"{w}.mean_flops"),
    )
