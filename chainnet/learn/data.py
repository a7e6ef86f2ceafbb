"""A dataset folder (chainnet.dataset) as a PyG `InMemoryDataset` of `HeteroData` graphs
(OPFDataset style).

    ds = QoSDataset("data/dsn24", split="train")

Each time, the dataset is checked as `python -m datagen.verify` checks it: a damaged shard, a
part file no record names or an unfinished dataset gives a DatasetError, cache or not. The
processed splits are cached under `<dataset>/processed/<name>/`, where the name carries the
feature and graph versions, the split fractions and a digest of the dataset's config and shard
checksums, so two settings never overwrite each other and a regenerated or extended dataset is
processed again. The split is deterministic by sample id (a hash of the id, so neighbouring ids
spread over the splits). Each split is built in one pass (`stored_split`: `graph_batch` over all
its scenarios, the labels joined by sample, chain and stage) and written atomically; batches are
best drawn with `chainnet.learn.batching.graph_loader`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData, InMemoryDataset

from chainnet.dataset.store import DatasetError, atomic_write_bytes, check_dataset, read_table
from chainnet.learn.features import (
    FEATURE_VERSION,
    GRAPH_VERSION,
    NODES,
    TARGETS,
    attach_targets,
    graph_batch,
)
from chainnet.parsing import ScenarioWarning
from chainnet.scenario import Scenario

SPLITS = ("train", "val", "test")


def check_fractions(fractions, where: str = "fractions") -> tuple[float, float, float]:
    """The train / val / test shares as floats; one clear line unless three shares summing to 1."""
    try:
        shares = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        shares = ()
    if len(shares) != 3 or min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-9:
        shown = list(shares) if shares else fractions
        raise ValueError(f"{where}: got {shown!r}; three shares that sum to 1")
    return shares


def split_of(sample_ids: np.ndarray, fractions: tuple[float, float, float]) -> np.ndarray:
    """0 (train), 1 (val) or 2 (test) per sample id; depends on the id only."""
    ids = np.asarray(sample_ids, dtype=np.uint64)
    u = ((ids * np.uint64(2654435761) + np.uint64(97)) % np.uint64(1_000_003)) / 1_000_003.0
    edges = np.cumsum(fractions)
    return np.searchsorted(edges, u, side="right").clip(0, 2)


class QoSDataset(InMemoryDataset):
    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        transform=None,
        force_reload: bool = False,
    ):
        if split not in SPLITS:
            raise ValueError(f"split: got {split!r}; one of {SPLITS}")
        fractions = check_fractions(fractions)
        self.source = Path(root)
        # What verify checks (checksums, no stray part file, complete), even when the processed
        # splits are cached: a damaged or unfinished dataset is refused, never trained on.
        recorded = check_dataset(self.source)
        content = {  # the config and the exact files: an extended dataset is processed again
            "identity": recorded.get("identity", {}),
            "shards": {k: v.get("sha256") for k, v in recorded.get("shards", {}).items()},
        }
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
        share = "-".join(f"{f:g}" for f in fractions)
        self.cache_name = f"v{FEATURE_VERSION}g{GRAPH_VERSION}_split{share}_{digest}"
        self.fractions = fractions
        self.split = split
        super().__init__(str(self.source), transform, None, force_reload=force_reload, log=False)
        sizes = json.loads((Path(self.processed_dir) / "sizes.json").read_text())
        if sizes[split] == 0:
            raise ValueError(
                f"split: {split!r} of {self.source} is empty with fractions {fractions}"
            )
        self.load(self.processed_paths[SPLITS.index(split)])

    @property
    def raw_dir(self) -> str:
        return str(self.source)

    @property
    def raw_file_names(self) -> list[str]:
        return ["manifest.json"]

    @property
    def processed_dir(self) -> str:
        return str(self.source / "processed" / self.cache_name)

    @property
    def processed_file_names(self) -> list[str]:
        return [f"{s}.pt" for s in SPLITS] + ["sizes.json"]

    def download(self) -> None:  # the data are generated, never downloaded
        raise FileNotFoundError(
            f"{self.source}: no dataset here; generate one first (README: Datasets)"
        )

    def process(self) -> None:
        with warnings.catch_warnings():  # stored scenarios were simulated as they are
            warnings.simplefilter("ignore", ScenarioWarning)
            self._build_splits()

    def _build_splits(self) -> None:
        samples = read_table(self.source, "samples")
        chains = read_table(self.source, "chains")
        stages = read_table(self.source, "stages")
        if "arrivals" not in stages.columns:
            stages = None
        which = split_of(samples["sample"].to_numpy(), self.fractions)
        sizes = {}
        for part, split in enumerate(SPLITS):
            chosen = samples[which == part]
            sizes[split] = len(chosen)
            path = self.processed_paths[part]
            if chosen.empty:  # PyG cannot collate nothing; `sizes.json` says the split is empty
                _write_whole(Path(path), b"")
                continue
            ids = chosen["sample"].to_numpy()
            scenarios = [
                Scenario.from_json(text, where=f"sample {sid}")
                for sid, text in zip(ids, chosen["scenario"])
            ]
            data, slices = stored_split(scenarios, ids, chains, stages)
            buffer = io.BytesIO()
            torch.save((data.to_dict(), slices, type(data)), buffer)  # as InMemoryDataset.save
            _write_whole(Path(path), buffer.getvalue())
        # last: PyG processes again unless every file is there
        _write_whole(Path(self.processed_dir) / "sizes.json", json.dumps(sizes).encode())


def _write_whole(path: Path, data: bytes) -> None:
    """Write a cache file atomically, under a temporary name of this process's own, so processes
    that process the same dataset at once (a sweep's jobs, nodes on a shared disk) never read or
    write half a file."""
    atomic_write_bytes(path, data, path.with_name(f".{path.name}.{os.getpid()}.tmp"))


def _labels(table, keys: dict[str, np.ndarray], columns: tuple[str, ...], what: str) -> dict:
    """The `columns` of `table` at the rows whose key columns equal `keys`, in that order; a
    DatasetError naming the first row the table lacks."""
    wanted = pd.DataFrame(keys)
    found = wanted.merge(
        table[[*keys, *columns]], on=list(keys), how="left", validate="1:1", indicator=True
    )
    missing = found["_merge"] != "both"
    if missing.any():
        row = found.loc[missing, list(keys)].iloc[0].to_dict()
        raise DatasetError(f"the {what} table has no row {row} that the samples table implies")
    return {c: found[c].to_numpy() for c in columns}


def stored_split(scenarios, sample_ids, chains, stages) -> tuple[HeteroData, dict]:
    """The graphs of `scenarios` with their labels, as an in-memory dataset stores them: every
    attribute of all graphs concatenated (edge indices local to each graph) and per-graph slices.
    Built in one pass (`graph_batch`) with the labels joined by (sample, chain, stage)."""
    g = graph_batch(scenarios)
    sample_ids = np.asarray(sample_ids, dtype=np.int64)
    ptr = {}
    for node in NODES:
        counts = torch.bincount(g[node].batch, minlength=len(scenarios))
        ptr[node] = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    frag_graph = g["fragment"].batch
    chain_of = g["chain", "contains", "fragment"].edge_index[0]
    chain_local = (chain_of - ptr["chain"][frag_graph]).numpy()
    chain_graph = g["chain"].batch
    chain_keys = {
        "sample": sample_ids[chain_graph.numpy()],
        "chain": (torch.arange(len(chain_graph)) - ptr["chain"][chain_graph]).numpy(),
    }
    stage_keys = {
        "sample": sample_ids[frag_graph.numpy()],
        "chain": chain_local,
        "stage": g["fragment"].hop.numpy(),
    }
    attach_targets(
        g,
        _labels(chains, chain_keys, TARGETS, "chains"),
        None if stages is None else _labels(stages, stage_keys, ("arrivals", "drops"), "stages"),
    )
    slices: dict = {}
    for edge in g.edge_types:
        src, _, dst = edge
        index = g[edge].edge_index  # in graph order, as `graph_batch` adds them
        owner = g[src].batch[index[0]]
        local = torch.stack([ptr[src][owner], ptr[dst][owner]])
        g[edge].edge_index = index - local
        counts = torch.bincount(owner, minlength=len(scenarios))
        slices[edge] = dict.fromkeys(
            g[edge].keys(), torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        )
    for node in NODES:
        del g[node].batch
        slices[node] = dict.fromkeys(g[node].keys(), ptr[node])
    g.sample = torch.tensor(sample_ids)
    slices["sample"] = torch.arange(len(sample_ids) + 1)
    return g, slices
