"""Reader of the ChainNet DSN'24 raw text format into our scenario schema.

The published split (`../shared/data/chainnet_dsn24/`, see its README) stores one sample per line in
the per-sample files (numNodes, numClasses, capacity, capacityRatio) and one chain per line in the
per-chain files (arrival, path, service, the derived features and the labels), samples in order.
Each file is read once and split into lines; samples are cut out of those lines by offset, so the
whole 10,000-sample split reads in about a second.

Mapping (the queueing semantics the README documents): one FCFS server of speed 1 per device with
the published capacity; a chain's rate is 1 / its mean inter-arrival time; each path entry is a
stage with deterministic service equal to the service.txt value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chainnet.scenario import Device, Scenario, ScenarioError, ServiceChain, Stage

REQUIRED_FILES = (
    "numNodes.txt",
    "numClasses.txt",
    "capacity.txt",
    "arrival.txt",
    "path.txt",
    "service.txt",
)
# Label name in `ChainNetSample.labels` -> file holding it (one value per chain).
LABEL_FILES = {
    "throughput": "throughput.txt",
    "response_time": "responseTime.txt",
    "throughput_ratio": "tputRatio.txt",
    "response_ratio": "resptRatio.txt",
}
# Derived input features: ignored by the reader, checked by `check_derived_features`.
PER_CHAIN_DERIVED = ("serRatio.txt", "serStatProp.txt", "classCapacityRatio.txt")
PER_SAMPLE_DERIVED = ("capacityRatio.txt",)
DERIVED_FILES = ("serRatio.txt", "serStatProp.txt", "capacityRatio.txt", "classCapacityRatio.txt")


class ChainNetFormatError(ValueError):
    """The raw folder is incomplete or inconsistent; the message names the file, line and folder."""


@dataclass(frozen=True)
class ChainNetSample:
    """One sample of a split: its scenario and its per-chain labels (empty dict if unlabelled)."""

    index: int
    scenario: Scenario
    # Excluded from ==/hash: numpy arrays have no single truth value, so comparing would raise.
    labels: dict[str, np.ndarray] = field(default_factory=dict, compare=False)


# ---- raw files: read once, rows parsed on demand with precise errors --------------------------


class _RawFolder:
    """Lines of each file of a raw folder, read once, and row parsers naming file and line."""

    def __init__(self, root: str | Path):
        root = Path(root)
        if not root.is_dir():
            raise ChainNetFormatError(f"{root}: no such folder (expected a split folder or raw/)")
        self.folder = root / "raw" if (root / "raw").is_dir() else root
        # The split's name labels scenarios: `<split>/raw` -> split, else the folder's own name.
        self.split = self.folder.parent.name if self.folder.name == "raw" else self.folder.name
        self._lines: dict[str, list[str]] = {}

    def has(self, name: str) -> bool:
        return (self.folder / name).is_file()

    def require(self, names: tuple[str, ...] | list[str], why: str) -> None:
        missing = [n for n in names if not self.has(n)]
        if missing:
            raise ChainNetFormatError(f"{self.folder}: missing {why}: {', '.join(missing)}")

    def lines(self, name: str) -> list[str]:
        if name not in self._lines:
            lines = (self.folder / name).read_text().splitlines()
            # A file may end with blank lines; they are not rows.
            while lines and not lines[-1].strip():
                lines.pop()
            self._lines[name] = lines
        return self._lines[name]

    def fail(self, name: str, line: int, message: str) -> ChainNetFormatError:
        return ChainNetFormatError(f"{name} line {line}: {message} (in {self.folder})")

    def check_count(self, name: str, expected: int, what: str, describe: Callable[[int], str]):
        """Fail unless `name` has exactly `expected` lines; describe(row) names the row at fault."""
        got = len(self.lines(name))
        if got < expected:
            raise self.fail(
                name,
                got + 1,
                f"missing: file has {got} lines, expected {expected} ({what}); "
                f"first missing row is {describe(got)}",
            )
        if got > expected:
            raise self.fail(
                name,
                expected + 1,
                f"unexpected: file has {got} lines, expected {expected} ({what})",
            )

    def row(self, name: str, i: int, conv: type, expected: int | None, why: str) -> list:
        """Values of 0-based row i, converted by conv; expected (if given) is their number."""
        parts = self.lines(name)[i].split()
        if expected is not None and len(parts) != expected:
            raise self.fail(name, i + 1, f"expected {expected} values ({why}), got {len(parts)}")
        if not parts:
            raise self.fail(name, i + 1, f"expected at least one value ({why}), got none")
        try:
            return [conv(p) for p in parts]
        except ValueError:
            kind = "integers" if conv is int else "numbers"
            raise self.fail(name, i + 1, f"expected {kind}, got {' '.join(parts)!r}") from None

    def column(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 of a one-value-per-line file, as floats."""
        lines = self.lines(name)
        out = np.empty(stop - start)
        for k in range(start, stop):
            parts = lines[k].split()
            if len(parts) != 1:
                raise self.fail(name, k + 1, f"expected 1 value (one per chain), got {len(parts)}")
            try:
                out[k - start] = float(parts[0])
            except ValueError:
                raise self.fail(name, k + 1, f"expected a number, got {parts[0]!r}") from None
        return out


@dataclass
class _Layout:
    """Where each sample's rows are: samples counted, chains per sample and first chain row."""

    n_samples: int
    nodes: list[int]
    classes: list[int]
    first_chain: list[int]
    n_chains: int


def _layout(raw: _RawFolder) -> _Layout:
    """Read numNodes/numClasses and check every file's line count against them (whole split)."""
    n_samples = len(raw.lines("numNodes.txt"))
    sample_row = "sample {}".format

    def counts(name: str, minimum: int) -> list[int]:
        out = []
        for i in range(len(raw.lines(name))):
            (v,) = raw.row(name, i, int, 1, "one per sample")
            if v < minimum:
                raise raw.fail(name, i + 1, f"expected an integer >= {minimum}, got {v}")
            out.append(v)
        return out

    nodes = counts("numNodes.txt", 1)
    raw.check_count("numClasses.txt", n_samples, "one per sample, as numNodes.txt", sample_row)
    classes = counts("numClasses.txt", 1)
    raw.check_count("capacity.txt", n_samples, "one per sample, as numNodes.txt", sample_row)
    first_chain = [0] * (n_samples + 1)
    for s, m in enumerate(classes):
        first_chain[s + 1] = first_chain[s] + m
    return _Layout(n_samples, nodes, classes, first_chain, first_chain[-1])


def _check_chain_counts(raw: _RawFolder, lay: _Layout, names: tuple[str, ...] | list[str]) -> None:
    """Every per-chain file has one line per chain: sum of numClasses.txt lines."""

    def describe(row: int) -> str:
        # The sample holding chain row `row`: last sample starting at or before it.
        s = int(np.searchsorted(lay.first_chain, row, side="right")) - 1
        return f"sample {s}, chain {row - lay.first_chain[s]}"

    for name in names:
        raw.check_count(name, lay.n_chains, "one per chain: sum of numClasses.txt", describe)


def _count(limit: int | None, lay: _Layout) -> int:
    if limit is None:
        return lay.n_samples
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return min(limit, lay.n_samples)


# ---- public API -------------------------------------------------------------------------------


def read_chainnet_split(root: str | Path, limit: int | None = None) -> list[ChainNetSample]:
    """Read the first `limit` samples (all if None) of a split folder (or its raw/ folder).

    Line counts are checked over the whole split; row contents only for the samples read.
    """
    return _read(_RawFolder(root), limit)[0]


def _read(raw: _RawFolder, limit: int | None) -> tuple[list[ChainNetSample], _Layout]:
    raw.require(REQUIRED_FILES, "required files")
    present = [n for n in LABEL_FILES.values() if raw.has(n)]
    if present and len(present) < len(LABEL_FILES):
        missing = [n for n in LABEL_FILES.values() if n not in present]
        raise ChainNetFormatError(
            f"{raw.folder}: missing label files: {', '.join(missing)} "
            f"(label files are all present or all absent; found {', '.join(present)})"
        )
    lay = _layout(raw)
    _check_chain_counts(raw, lay, ("arrival.txt", "path.txt", "service.txt", *present))
    count = _count(limit, lay)
    stop = lay.first_chain[count]

    # One array per label over the chains read; samples get slices of it, read-only because the
    # sample is frozen and slices share memory.
    columns = (
        {key: raw.column(name, 0, stop) for key, name in LABEL_FILES.items()} if present else {}
    )
    for col in columns.values():
        col.flags.writeable = False

    # Devices are immutable and few distinct (number x capacity), so samples share them: building
    # ~60,000 frozen dataclasses would be a third of the reading time.
    device_cache: dict[tuple[int, int], Device] = {}

    def device(i: int, capacity: int) -> Device:
        dev = device_cache.get((i, capacity))
        if dev is None:
            dev = device_cache[i, capacity] = Device(name=f"d{i}", capacity=capacity)
        return dev

    samples = []
    for s in range(count):
        n = lay.nodes[s]
        caps = raw.row("capacity.txt", s, int, n, f"numNodes.txt line {s + 1} gives {n} devices")
        devices = tuple(device(i + 1, c) for i, c in enumerate(caps))
        chains = []
        first = lay.first_chain[s]
        for j in range(lay.classes[s]):
            k = first + j
            path = raw.row("path.txt", k, int, None, "the devices of the chain's fragments")
            bad = [p for p in path if not 1 <= p <= n]
            if bad:
                raise raw.fail(
                    "path.txt", k + 1, f"device {bad[0]} out of range: sample {s} has devices 1-{n}"
                )
            work = raw.row(
                "service.txt", k, float, len(path), f"one per fragment: path.txt line {k + 1}"
            )
            (gap,) = raw.row("arrival.txt", k, float, 1, "the mean inter-arrival time")
            if not (gap > 0 and math.isfinite(gap)):
                raise raw.fail("arrival.txt", k + 1, f"inter-arrival time must be > 0, got {gap}")
            stages = tuple(
                Stage(device=f"d{p}", work=w, distribution="det") for p, w in zip(path, work)
            )
            chains.append(ServiceChain(name=f"c{j}", arrival_rate=1.0 / gap, stages=stages))
        try:
            scenario = Scenario(devices, tuple(chains), name=f"chainnet_{raw.split}_{s}")
        except ScenarioError as exc:
            raise ChainNetFormatError(
                f"sample {s} (numNodes.txt line {s + 1}, chain rows {first + 1}-"
                f"{first + lay.classes[s]}) is not a valid scenario: {exc} (in {raw.folder})"
            ) from None
        end = first + lay.classes[s]
        labels = {key: col[first:end] for key, col in columns.items()}
        samples.append(ChainNetSample(index=s, scenario=scenario, labels=labels))
    return samples, lay


def check_derived_features(root: str | Path, limit: int | None = None) -> dict[str, float]:
    """Largest absolute difference, per derived-feature file, between the file and our schema.

    serRatio = service / inter-arrival time; serStatProp = service / total service on the device
    (all chains of the sample); capacityRatio = fragments hosted / capacity; classCapacityRatio =
    1 / capacity of the fragment's device. Small values prove the reader maps the format right.
    """
    raw = _RawFolder(root)
    raw.require(DERIVED_FILES, "derived feature files")
    samples, lay = _read(raw, limit)
    _check_chain_counts(raw, lay, PER_CHAIN_DERIVED)
    for name in PER_SAMPLE_DERIVED:
        raw.check_count(name, lay.n_samples, "one per sample, as numNodes.txt", "sample {}".format)

    worst = dict.fromkeys(DERIVED_FILES, 0.0)

    def compare(name: str, row: int, expected: list[float], why: str) -> None:
        got = raw.row(name, row, float, len(expected), why)
        diff = max(abs(g - e) for g, e in zip(got, expected))
        # NaN in the file must not hide behind max(); report it as an infinite discrepancy.
        worst[name] = max(worst[name], diff if diff == diff else math.inf)

    for sample in samples:
        sc, s = sample.scenario, sample.index
        hosted = [0] * len(sc.devices)
        busy = [0.0] * len(sc.devices)
        for chain in sc.chains:
            for stage in chain.stages:
                d = sc.device_id(stage.device)
                hosted[d] += 1
                busy[d] += sc.mean_service_time(stage)
        compare(
            "capacityRatio.txt",
            s,
            [h / dev.capacity for h, dev in zip(hosted, sc.devices)],
            f"one per device: numNodes.txt line {s + 1}",
        )
        for j, chain in enumerate(sc.chains):
            k = lay.first_chain[s] + j
            why = f"one per fragment: path.txt line {k + 1}"
            times = [sc.mean_service_time(st) for st in chain.stages]
            devs = [sc.device_id(st.device) for st in chain.stages]
            compare("serRatio.txt", k, [t * chain.arrival_rate for t in times], why)
            compare("serStatProp.txt", k, [t / busy[d] for t, d in zip(times, devs)], why)
            compare("classCapacityRatio.txt", k, [1.0 / sc.devices[d].capacity for d in devs], why)
    return worst
