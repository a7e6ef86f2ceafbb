"""A dataset on disk: sharded Parquet tables and a manifest, written so nothing is ever corrupt.

    out/manifest.json                 config, seed, counts, versions, a sha256 per shard file
    out/samples/part-00000.parquet    one folder per table, one file per shard (shard k holds
    out/chains/part-00000.parquet     samples [k * shard_size, (k + 1) * shard_size))

A shard's files are written under hidden temporary names (`.part-00000.parquet.tmp`, which pandas
ignores) and flushed; the manifest records them under `writing`, they are renamed into place, and
the record moves to `shards`. The manifest (rewritten the same way) is the only record of what is
done, so a run recognises every file it wrote and deletes nothing else. Reading and checking
(`read_table`, `verify`) live in `chainnet.dataset.reader` and are importable from here too.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from chainnet.dataset.reader import (
    FORMAT,
    FORMAT_VERSION,
    INTERRUPTED,
    MANIFEST,
    DatasetError,
    check_dataset,
    file_problems,
    read_manifest,
    read_table,
    sha256,
    unrecorded,
    verify,
)
from chainnet.dataset.tables import TABLES

__all__ = [
    "DatasetError",
    "DatasetStore",
    "atomic_write_bytes",
    "boolean",
    "check_dataset",
    "code_version",
    "positive_int",
    "read_table",
    "verify",
]

LOCK = ".lock"
# Our temporary files, by their exact names (`_temporary`): the only unrecorded files a run deletes.
TEMPORARY_SHARD = re.compile(r"\.part-\d{5,}\.parquet\.tmp")


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def atomic_write_bytes(path: Path, data: bytes, tmp: Path | None = None) -> None:
    """Write `data` at `path` all at once: into `tmp` (by default the hidden temporary name),
    flushed to disk, then renamed over `path`; a reader sees the old file or the new, never half."""
    tmp = tmp or _temporary(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_frame_aside(path: Path, df: pd.DataFrame) -> Path:
    """Write `df` under the temporary name of `path`, flushed to disk; returns that name."""
    tmp = _temporary(path)
    df.to_parquet(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    return tmp


def code_version() -> dict[str, str | None]:
    try:
        version = metadata.version("chainnet")
    except metadata.PackageNotFoundError:
        version = None
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return {"package_version": version, "git_revision": rev or None}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {b!r} in the folder, {a!r} now"]


def positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DatasetError(f"{name}: got {v!r}; expected an integer >= 1")
    return v


def boolean(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise DatasetError(f"{name}: got {v!r}; expected true or false")
    return v


class DatasetStore:
    """Open (create or resume) the dataset at `root` made with `identity`.

    Holds an exclusive lock on the folder until `close()` (or the process ends), so two runs never
    write into one dataset. On opening it refuses a folder holding files it did not write (naming
    one), before changing anything; then it removes its own temporary files, finishes or undoes an
    interrupted shard write, and forgets (and removes) recorded shards whose files are missing or
    fail their checksum, so they are made again.
    """

    def __init__(
        self,
        root: str | Path,
        identity: dict[str, Any],
        shard_size: int,
        code: dict[str, Any] | None = None,
    ):
        self.root = Path(root)
        self.identity = identity
        self.shard_size = positive_int("shard_size", shard_size)
        self.code = code or {}
        self.manifest_path = self.root / MANIFEST
        if self.root.exists() and not self.root.is_dir():
            raise DatasetError(f"out: {self.root} is a file, not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / LOCK, "a+")  # noqa: SIM115 (held for the run)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise DatasetError(
                f"{self.root}: another run is writing this dataset; wait for it to finish"
            ) from None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        if self.manifest_path.exists():
            self.manifest = read_manifest(self.root)
            recorded = dict(self.manifest.get("identity", {}))
            if "n" not in self.identity:  # datasets made before n left the identity
                recorded.pop("n", None)
            diff = _differences(self.identity, recorded)
            if diff:
                raise DatasetError(
                    f"{self.root} holds a dataset made with another config ("
                    + "; ".join(diff[:4])
                    + "). Use another out= folder, or delete this one to start again."
                )
            self.manifest["identity"] = self.identity
            self.manifest.setdefault("writing", {})
            foreign = [
                (r, why) for r, why in unrecorded(self.root, self.manifest) if why != INTERRUPTED
            ]
            if foreign:
                (rel, why), more = foreign[0], len(foreign) - 1
                raise DatasetError(
                    f"{self.root / rel}: {why}, and pandas would read it as data. Move it out of "
                    f"{self.root} and run again"
                    + (f" (and {more} more)" if more else "")
                    + ". Nothing was changed."
                )
        else:
            self._refuse_unless_first_run_leftovers()
            self.manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "identity": self.identity,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "created_with": self.code,
                "shards": {},
                "writing": {},
            }
            self.save()  # the manifest first: from here on the folder is recognisably ours
        for table in TABLES:
            (self.root / table).mkdir(exist_ok=True)
        self._remove_temporary()
        self._finish_interrupted_writes()
        self.repaired = self._forget_damaged()

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def _refuse_unless_first_run_leftovers(self) -> None:
        """A folder without a manifest is used only if it holds nothing but what an interrupted
        first run can leave: the lock, a temporary manifest, table folders of temporary files."""
        for entry in sorted(self.root.iterdir()):
            if entry.name in (LOCK, _temporary(self.manifest_path).name):
                continue
            if entry.is_dir() and entry.name in TABLES:
                found = [
                    f for f in sorted(entry.iterdir()) if not TEMPORARY_SHARD.fullmatch(f.name)
                ]
                if not found:
                    continue
                entry = found[0]
            raise DatasetError(
                f"{self.root} is not empty and holds no {MANIFEST} (found "
                f"{entry.relative_to(self.root)}): refusing to write a dataset into it. If it is a "
                f"dataset whose {MANIFEST} was lost, put it back; otherwise use an empty or new "
                "out= folder."
            )

    def _remove_temporary(self) -> None:
        for table in TABLES:
            for entry in (self.root / table).iterdir():
                if TEMPORARY_SHARD.fullmatch(entry.name) and entry.is_file():
                    entry.unlink()

    def _finish_interrupted_writes(self) -> None:
        """A shard write the manifest records as under way: if every file was renamed into place
        (and matches), record it; otherwise remove the files it had renamed, and it is made again.
        A file of an older recorded version of the shard that is still intact stays."""
        writing = self.manifest["writing"]
        if not writing:
            return
        for k, record in list(writing.items()):
            if not file_problems(self.root, record):
                self.manifest["shards"][k] = record
            else:
                old = self.manifest["shards"].get(k, {}).get("sha256", {})
                for rel in record["sha256"]:
                    path = self.root / rel
                    if path.is_file() and old.get(rel) != sha256(path):
                        path.unlink()
            del writing[k]
        self.save()

    def _forget_damaged(self) -> list[str]:
        shards = self.manifest["shards"]
        damaged = [k for k, shard in shards.items() if file_problems(self.root, shard)]
        for k in damaged:
            for rel in shards[k]["sha256"]:  # our own files: removed, so nothing is unrecorded
                (self.root / rel).unlink(missing_ok=True)
            del shards[k]
        if damaged:
            self.manifest["complete"] = False
            self.save()
        return damaged

    @staticmethod
    def shard_name(k: int) -> str:
        return f"part-{k:05d}.parquet"

    def done(self) -> set[int]:
        return {int(k) for k in self.manifest["shards"]}

    def held_ranges(self) -> dict[int, range]:
        """The sample ids each recorded shard holds."""
        return {int(k): range(*s["samples"]) for k, s in self.manifest["shards"].items()}

    def write_shard(self, k: int, tables: dict[str, pd.DataFrame], extra: dict[str, Any]) -> None:
        """Write shard k: files aside, their record under `writing`, renames, then the record."""
        name = self.shard_name(k)
        files = [(table, name) for table in TABLES]
        aside = {
            table: _write_frame_aside(self.root / table / name, tables[table]) for table in TABLES
        }
        record = {
            "samples": [k * self.shard_size, k * self.shard_size + len(tables["samples"])],
            "rows": {t: len(tables[t]) for t in TABLES},
            "files": files,
            "sha256": {f"{t}/{name}": sha256(aside[t]) for t in TABLES},
            "code": self.code,
            **extra,
        }
        self.manifest["writing"][str(k)] = record
        self.save()
        for table in TABLES:
            os.replace(aside[table], self.root / table / name)
        self.manifest["shards"][str(k)] = self.manifest["writing"].pop(str(k))
        self.save()

    def save(self, **fields: Any) -> None:
        self.manifest.update(fields)
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.manifest["counts"] = {
            t: sum(s["rows"][t] for s in self.manifest["shards"].values()) for t in TABLES
        }
        text = json.dumps(self.manifest, indent=1, sort_keys=True)
        atomic_write_bytes(self.manifest_path, text.encode())
