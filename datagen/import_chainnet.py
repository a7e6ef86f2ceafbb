"""`python -m datagen.import_chainnet src=../shared/data/chainnet_dsn24/val out=data/chainnet_val`.

Turns the published ChainNet raw format into our dataset format, labels kept and the semantics
recorded in the manifest, so everything downstream reads it like our own data; its scenarios can be
re-simulated with `python -m datagen from_dataset=data/chainnet_val out=...`, sample ids kept.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from chainnet.cli.common import command
from chainnet.dataset.published import read_chainnet_split
from chainnet.dataset.store import DatasetStore, boolean, code_version, positive_int
from chainnet.dataset.tables import TABLES, scenario_rows

SEMANTICS = {
    "source": "ChainNet DSN'24 (Niu, Roveri, Casale), BSD-3-Clause",
    "arrivals": "Poisson; rate = 1 / arrival.txt (mean inter-arrival time)",
    "service": "deterministic, service.txt, device speed 1",
    "devices": "one FCFS server each, capacity = capacity.txt (jobs, the one in service included)",
    "loss": "a job reaching a full device, from outside or from upstream, is dropped",
    "labels": "tputRatio, resptRatio, throughput, responseTime; loss_ratio = 1 - tputRatio; "
    "no half-widths (about 1.3e5 simulated arrivals per sample)",
}


def import_split(src: str | Path, out: str | Path, shard_size: int = 1000, progress=True) -> int:
    positive_int("shard_size", shard_size)
    boolean("progress", progress)
    samples = read_chainnet_split(src)
    if not samples or not samples[0].labels:
        raise ValueError(f"src: {src} has no label files; nothing to import as a labelled dataset")
    identity = {
        "imported_from": str(Path(src).resolve()),
        "n": len(samples),
        "shard_size": shard_size,
        "semantics": SEMANTICS,
    }
    store = DatasetStore(out, identity, shard_size, code_version())
    try:
        _write(store, samples, shard_size, progress)
    finally:
        store.close()
    return len(samples)


def _write(store: DatasetStore, samples, shard_size: int, progress: bool) -> None:
    store.save(n=len(samples))
    n_shards = math.ceil(len(samples) / shard_size)
    for k in tqdm(range(n_shards), desc="importing", unit="shard", disable=not progress):
        if k in store.done():
            continue
        rows: dict[str, list[dict]] = {t: [] for t in TABLES}
        for s in samples[k * shard_size : (k + 1) * shard_size]:
            r = scenario_rows(s.index, s.scenario)
            for c, row in enumerate(r["chains"]):
                row.update(
                    throughput=float(s.labels["throughput"][c]),
                    throughput_ratio=float(s.labels["throughput_ratio"][c]),
                    loss_ratio=1.0 - float(s.labels["throughput_ratio"][c]),
                    response_time=float(s.labels["response_time"][c]),
                    response_ratio=float(s.labels["response_ratio"][c]),
                )
            for t in TABLES:
                rows[t].extend(r[t])
        store.write_shard(k, {t: pd.DataFrame(rows[t]) for t in TABLES}, {})
    store.save(complete=True)


@command("import_chainnet")
def main(cfg: DictConfig) -> None:
    n = import_split(cfg.src, cfg.out, cfg.shard_size, cfg.progress)
    print(f"imported {n} samples into {cfg.out}")


if __name__ == "__main__":
    main()
