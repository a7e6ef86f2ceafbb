"""A dataset folder (chainnet.dataset) as a PyG `InMemoryDataset` of `HeteroData` graphs
(OPFDataset style).

    ds = QoSDataset("data/dsn24", split="train")

Each time, the dataset is checked as `python -m datagen.verify` checks it: a damaged shard, a
part file no record names or an unfinished dataset gives a DatasetError, cache or not. The
processed splits are cached under `<dataset>/processed/<name>/`, where the name carries the
feature and graph versions, the split fractions and a digest of the dataset's config and shard
checksums, so two settings never overwrite each other and a regenerated or extended dataset is
processed again. The split is
deterministic by sample id (a hash of the id, so neighbouring ids spread over the splits).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import InMemoryDataset

from chainnet.dataset.store import check_dataset, read_table
from chainnet.learn.features import FEATURE_VERSION, GRAPH_VERSION, attach_targets, scenario_graph
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
        pre_transform=None,
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
        super().__init__(
            str(self.source), transform, pre_transform, force_reload=force_reload, log=False
        )
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
        has_stage_labels = "arrivals" in stages.columns
        chains_of = dict(tuple(chains.groupby("sample", sort=False)))
        stages_of = dict(tuple(stages.groupby("sample", sort=False))) if has_stage_labels else {}
        which = split_of(samples["sample"].to_numpy(), self.fractions)
        out: list[list] = [[], [], []]
        for (sid, text), part in zip(
            samples[["sample", "scenario"]].itertuples(index=False), which
        ):
            g = scenario_graph(Scenario.from_json(text, where=f"sample {sid}"))
            ch = chains_of[sid]
            st = stages_of.get(sid)
            attach_targets(
                g,
                {t: ch[t].to_numpy() for t in ("throughput_ratio", "response_ratio")},
                None if st is None else {"arrivals": st["arrivals"], "drops": st["drops"]},
            )
            g.sample = torch.tensor([int(sid)])
            if self.pre_transform is not None:
                g = self.pre_transform(g)
            out[part].append(g)
        for part, graphs in zip(range(3), out):
            if graphs:
                self.save(graphs, self.processed_paths[part])
            else:  # PyG cannot collate nothing; `sizes.json` says the split is empty
                Path(self.processed_paths[part]).write_bytes(b"")
        sizes = {s: len(g) for s, g in zip(SPLITS, out)}
        (Path(self.processed_dir) / "sizes.json").write_text(json.dumps(sizes))
