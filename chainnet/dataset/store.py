"""A dataset on disk: sharded Parquet tables and a manifest, written so nothing is ever corrupt.

Layout (read any table with plain pandas: `pd.read_parquet("data/dsn24/chains")`):

    out/manifest.json                 config, seed, counts, versions, a sha256 per shard file
    out/samples/part-00000.parquet    one folder per table, one file per shard
    out/chains/part-00000.parquet
    out/stages/...  out/devices/...

Shard k holds samples [k * shard_size, (k + 1) * shard_size). Each file is written to a hidden
temporary name (pandas and pyarrow ignore names starting with '.'), flushed to disk and renamed;
the manifest, rewritten the same way after every shard, is the only record of which shards are
done. A shard file not in the manifest is an interrupted write: it is deleted and written again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from chainnet.dataset.tables import TABLE_KEYS, TABLES

FORMAT = "chainnet-dataset"
FORMAT_VERSION = 1
LOCK = ".lock"


class DatasetError(ValueError):
    """The output folder cannot be used as asked; the message says why and what to do."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_frame(path: Path, df: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_parquet(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


class DatasetStore:
    """Open (create or resume) the dataset at `root` made with `identity`.

    Holds an exclusive lock on the folder until `close()` (or the process ends), so two runs never
    write into one dataset. On opening, a recorded shard whose files are missing or fail their
    checksum is forgotten (it will be made again), and files no record mentions are deleted.
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
        self.manifest_path = self.root / "manifest.json"
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
        if self.manifest_path.exists():
            self.manifest = self._load_manifest()
            recorded = dict(self.manifest.get("identity", {}))
            if "n" not in identity:  # datasets made before n left the identity
                recorded.pop("n", None)
            diff = _differences(identity, recorded)
            if diff:
                self.close()
                raise DatasetError(
                    f"{self.root} holds a dataset made with another config ("
                    + "; ".join(diff[:4])
                    + "). Use another out= folder, or delete this one to start again."
                )
            self.manifest["identity"] = identity
        else:
            if not self._only_interrupted_leftovers():
                self.close()
                raise DatasetError(
                    f"{self.root} is not empty and holds no manifest.json: refusing to write a "
                    "dataset into it. Use an empty or new out= folder."
                )
            self.manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "identity": identity,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "created_with": self.code,
                "shards": {},
            }
            self.save()  # the manifest first: from here on the folder is recognisably ours
        for table in TABLES:
            (self.root / table).mkdir(exist_ok=True)
        self.repaired = self._forget_damaged()
        self._remove_unrecorded()

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def _only_interrupted_leftovers(self) -> bool:
        """True if the folder holds nothing but what an interrupted first run could leave."""
        for entry in self.root.iterdir():
            if entry.name in (LOCK, f".{self.manifest_path.name}.tmp"):
                continue
            ours = entry.is_dir() and entry.name in TABLES
            if ours and all(
                f.is_file() and f.name.startswith(("part-", ".part-")) for f in entry.iterdir()
            ):
                continue
            return False
        return True

    def _forget_damaged(self) -> list[str]:
        damaged = [
            k for k, shard in self.manifest["shards"].items() if file_problems(self.root, shard)
        ]
        for k in damaged:
            del self.manifest["shards"][k]
        if damaged:
            self.manifest["complete"] = False
            self.save()
        return damaged

    def _load_manifest(self) -> dict[str, Any]:
        try:
            m = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{self.manifest_path} cannot be read: {exc}") from None
        if m.get("format") != FORMAT:
            raise DatasetError(f"{self.manifest_path} is not a {FORMAT} manifest")
        if m.get("format_version") != FORMAT_VERSION:
            raise DatasetError(
                f"{self.manifest_path} has format version {m.get('format_version')}; this code "
                f"reads version {FORMAT_VERSION}"
            )
        return m

    def _remove_unrecorded(self) -> None:
        """Delete temporary files and shard files the manifest does not record (interrupted)."""
        recorded = {
            f"{table}/{name}"
            for s in self.manifest["shards"].values()
            for table, name in s["files"]
        }
        for table in TABLES:
            for path in (self.root / table).iterdir():
                if f"{table}/{path.name}" not in recorded:
                    path.unlink()

    @staticmethod
    def shard_name(k: int) -> str:
        return f"part-{k:05d}.parquet"

    def done(self) -> set[int]:
        return {int(k) for k in self.manifest["shards"]}

    def held_ranges(self) -> dict[int, range]:
        """The sample ids each recorded shard holds."""
        return {int(k): range(*s["samples"]) for k, s in self.manifest["shards"].items()}

    def write_shard(self, k: int, tables: dict[str, pd.DataFrame], extra: dict[str, Any]) -> None:
        name = self.shard_name(k)
        files = []
        for table in TABLES:
            path = self.root / table / name
            _atomic_write_frame(path, tables[table])
            files.append((table, name))
        self.manifest["shards"][str(k)] = {
            "samples": [k * self.shard_size, k * self.shard_size + len(tables["samples"])],
            "rows": {t: len(tables[t]) for t in TABLES},
            "files": files,
            "sha256": {f"{t}/{n}": sha256(self.root / t / n) for t, n in files},
            "code": self.code,
            **extra,
        }
        self.save()

    def save(self, **fields: Any) -> None:
        self.manifest.update(fields)
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.manifest["counts"] = {
            t: sum(s["rows"][t] for s in self.manifest["shards"].values()) for t in TABLES
        }
        text = json.dumps(self.manifest, indent=1, sort_keys=True)
        _atomic_write_bytes(self.manifest_path, text.encode())


def file_problems(root: Path, shard: dict[str, Any]) -> list[str]:
    """What is wrong with a recorded shard's files: missing, or not matching their checksum."""
    problems = []
    for rel, digest in shard.get("sha256", {}).items():
        f = root / rel
        if not f.is_file():
            problems.append(f"{rel} is missing")
        elif sha256(f) != digest:
            problems.append(f"{rel} does not match its checksum")
    return problems


def verify(root: str | Path) -> list[str]:
    """Check every shard file against the manifest; returns the problems found (empty if none).

    An unfinished dataset is reported too: it is consistent, but not all of it is there yet.
    """
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        return [f"{path}: no manifest (not a dataset folder)"]
    try:
        manifest = json.loads(path.read_text())
        shards = manifest["shards"]
        records = sorted(shards.items(), key=lambda kv: int(kv[0]))
        for _, shard in records:
            shard["sha256"].items()
            range(*shard["samples"])
    except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as exc:
        return [f"{path}: not a valid {FORMAT} manifest ({type(exc).__name__}: {exc})"]
    problems = [f"shard {k}: {p}" for k, shard in records for p in file_problems(root, shard)]
    n = manifest.get("n")
    ids = sorted(i for s in shards.values() for i in range(*s["samples"]))
    if n is not None and ids != list(range(n)):
        problems.append(
            f"incomplete: {len(ids)} of {n} samples are recorded; run the same command again"
            " to finish it"
        )
    return problems


def read_table(root: str | Path, table: str) -> pd.DataFrame:
    """A whole table, sorted by its keys (what `pd.read_parquet(root / table)` gives, in order)."""
    if table not in TABLE_KEYS:
        raise DatasetError(f"table: got {table!r}; one of {TABLES}")
    df = pd.read_parquet(Path(root) / table)
    return df.sort_values(TABLE_KEYS[table]).reset_index(drop=True)
