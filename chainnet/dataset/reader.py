"""Reading a dataset folder (see `chainnet.dataset.store`) only when it is sound.

`verify` lists what is wrong with a dataset: a shard file missing or not matching its checksum in
the manifest, a file in a table folder that pandas would read but no shard record names (a stray
`part-00099.parquet`, an interrupted write), samples not recorded yet. `read_table`, the reader of
every part of chainnet (training, evaluation, re-simulation), runs the same checks on the files it
reads and refuses with a `DatasetError` naming the first problem; `allow_incomplete=True` reads an
unfinished dataset's recorded shards, still checked. The checksums cost little beside the parsing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from chainnet.dataset.tables import TABLE_KEYS, TABLES

FORMAT = "chainnet-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# What `unrecorded` says of a file an interrupted (or ongoing) shard write claims: not a stray.
INTERRUPTED = (
    "not recorded yet (a shard being written, or an interrupted write: run the same command "
    "again to finish it)"
)
# The only file names a manifest may record: a run deletes recorded files it finds damaged, so a
# hand-edited manifest must never point it outside the table folders.
SHARD_FILE = re.compile(rf"({'|'.join(TABLES)})/part-\d{{5,}}\.parquet")


class DatasetError(ValueError):
    """A dataset folder cannot be used as asked; the message says why and what to do."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_by_pandas(name: str) -> bool:
    """Whether `pd.read_parquet(folder)` reads an entry of that name (it skips '.' and '_')."""
    return not name.startswith((".", "_"))


def _claimed(records: Iterable[dict]) -> set[str]:
    return {rel for r in records for rel in r["sha256"]}


def file_problems(root: Path, shard: dict[str, Any], tables: Iterable[str] = TABLES) -> list[str]:
    """What is wrong with a recorded shard's files: missing, or not matching their checksum."""
    problems = []
    for rel, digest in shard.get("sha256", {}).items():
        if rel.split("/")[0] not in tables:
            continue
        f = root / rel
        if not f.is_file():
            problems.append(f"{rel} is missing")
        elif sha256(f) != digest:
            problems.append(f"{rel} does not match its checksum (changed or damaged)")
    return problems


def unrecorded(
    root: Path, manifest: dict[str, Any], tables: Iterable[str] = TABLES
) -> list[tuple[str, str]]:
    """The entries of the table folders that pandas would read but no shard record names, as
    (path relative to root, what is wrong with it). An interrupted write's files (claimed under
    `writing` in the manifest) say so."""
    recorded = _claimed(manifest["shards"].values())
    interrupted = _claimed(manifest["writing"].values())
    out = []
    for table in tables:
        folder = root / table
        if folder.exists() and not folder.is_dir():
            out.append((table, "a file where the table's folder should be"))
        for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
            rel = f"{table}/{entry.name}"
            if not _read_by_pandas(entry.name) or (rel in recorded and entry.is_file()):
                continue
            if not entry.is_file() and rel in recorded | interrupted:
                out.append((rel, "a folder where a shard file should be"))
            elif rel in interrupted:
                out.append((rel, INTERRUPTED))
            else:
                out.append((rel, f"not part of the dataset (no record in {MANIFEST} names it)"))
    return out


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of the dataset at `root`, its structure checked; DatasetError if it has none."""
    path = Path(root) / MANIFEST
    if path.exists() and not path.is_file():
        raise DatasetError(f"{path} is not a file")
    if not path.is_file():
        raise DatasetError(f"{Path(root)}: not a dataset folder (no {MANIFEST})")
    try:
        m = json.loads(path.read_text())
        for k, shard in [*m["shards"].items(), *m.get("writing", {}).items()]:
            int(k)
            for rel, digest in shard["sha256"].items():
                if not SHARD_FILE.fullmatch(rel):
                    raise ValueError(f"a shard file named {rel!r}")
                digest.lower()
            first, end = shard["samples"]
            range(first, end), [shard["rows"][t] + 0 for t in TABLES]
        if m.get("n") is not None:
            range(m["n"])
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} cannot be read: {exc}") from None
    except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as exc:
        raise DatasetError(
            f"{path}: not a valid {FORMAT} manifest ({type(exc).__name__}: {exc})"
        ) from None
    if m.get("format") != FORMAT:
        raise DatasetError(f"{path} is not a {FORMAT} manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path} has format version {m.get('format_version')}; this code reads version "
            f"{FORMAT_VERSION}"
        )
    m.setdefault("writing", {})
    return m


def dataset_problems(
    root: Path, manifest: dict[str, Any], tables: Iterable[str] = TABLES, complete: bool = True
) -> list[str]:
    """What `verify` reports, for the given tables: damaged or missing shard files, files that
    pandas would read but no record names, and (if `complete`) samples not recorded yet."""
    tables = tuple(tables)
    records = sorted(manifest["shards"].items(), key=lambda kv: int(kv[0]))
    problems = [f"shard {k}: {p}" for k, s in records for p in file_problems(root, s, tables)]
    for rel, why in unrecorded(root, manifest, tables):
        advice = "" if why == INTERRUPTED else "; pandas would read it as data: move it out"
        problems.append(f"{rel}: {why}{advice}")
    n = manifest.get("n")
    ids = sorted(i for s in manifest["shards"].values() for i in range(*s["samples"]))
    if complete and (n is None or ids != list(range(n))):
        of = "an unknown number of" if n is None else f"{n}"
        problems.append(
            f"incomplete: {len(ids)} of {of} samples are recorded; run the same command again"
            " to finish it"
        )
    return problems


def verify(root: str | Path) -> list[str]:
    """Check every shard file against the manifest, and that nothing else would be read as data;
    returns the problems found (empty if none). An unfinished dataset is reported too."""
    try:
        manifest = read_manifest(root)
    except DatasetError as exc:
        return [str(exc)]
    return dataset_problems(Path(root), manifest)


def check_dataset(
    root: str | Path, tables: Iterable[str] = TABLES, *, allow_incomplete: bool = False
) -> dict[str, Any]:
    """The manifest of a dataset that passes `verify` for `tables` (allowing an unfinished one
    if asked); otherwise a DatasetError naming the first problem."""
    root = Path(root)
    manifest = read_manifest(root)
    problems = dataset_problems(root, manifest, tables, complete=not allow_incomplete)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise DatasetError(
            f"{root}: {problems[0]}{more}; `python -m datagen.verify out={root}` lists them"
        )
    return manifest


def read_table(root: str | Path, table: str, *, allow_incomplete: bool = False) -> pd.DataFrame:
    """A whole table, sorted by its keys (what `pd.read_parquet(root / table)` gives, in order),
    after checking it as `verify` does: the checksum of every file read, no unrecorded file, and a
    complete dataset. `allow_incomplete=True` reads the shards recorded so far (still checked)."""
    if table not in TABLE_KEYS:
        raise DatasetError(f"table: got {table!r}; one of {TABLES}")
    manifest = check_dataset(root, (table,), allow_incomplete=allow_incomplete)
    if not manifest["shards"]:
        raise DatasetError(f"{root}: no shard is recorded yet; nothing to read")
    df = pd.read_parquet(Path(root) / table)
    return df.sort_values(TABLE_KEYS[table]).reset_index(drop=True)
