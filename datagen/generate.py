"""Generate a dataset: sample scenarios, simulate them in parallel, store them shard by shard.

Sample i depends only on (seed, i): its scenario and its simulation draw from
`SeedSequence(seed, spawn_key=(i,))`, so the data are the same whatever the number of workers, the
executor, the order of completion, or how often the run was interrupted and resumed.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from chainnet.dataset.store import (
    DatasetError,
    DatasetStore,
    boolean,
    check_dataset,
    code_version,
    positive_int,
    read_table,
)
from chainnet.dataset.tables import TABLES, simulated_rows
from chainnet.parsing import ScenarioWarning
from chainnet.scenario import Scenario
from chainnet.sim import ENGINES, SimulatorSettings, simulate
from datagen.executors import EXECUTORS, resolve_workers, run_dask, run_local
from datagen.presets import make_sampler


@dataclass(frozen=True)
class Recipe:
    """Everything a worker needs to make sample i (small and picklable)."""

    seed: int
    preset_json: str | None  # the scenario preset, or None when scenarios come from a dataset
    settings: SimulatorSettings
    engine: str = "fast"  # not part of a dataset's identity: both engines give the same data


def sample_seeds(seed: int, i: int) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """The scenario's and the simulation's seed sequences of sample i."""
    scenario_ss, simulation_ss = np.random.SeedSequence(seed, spawn_key=(i,)).spawn(2)
    return scenario_ss, simulation_ss


@lru_cache(maxsize=8)
def _sampler(preset_json: str):
    return make_sampler(json.loads(preset_json))


def make_sample(recipe: Recipe, task: tuple[int, str | None]) -> tuple[int, dict]:
    """Sample i: draw (or take) its scenario, simulate it, return its table rows."""
    i, scenario_json = task
    scenario_ss, simulation_ss = sample_seeds(recipe.seed, i)
    with warnings.catch_warnings():
        # A drawn stage whose job outgrows its memory is a legal sample: its label (loss 1) is
        # what the data should hold, and a warning per sample would only be noise.
        warnings.simplefilter("ignore", ScenarioWarning)
        if scenario_json is None:
            sc = _sampler(recipe.preset_json)(np.random.default_rng(scenario_ss), name=f"s{i}")
        else:
            sc = Scenario.from_json(scenario_json, where=f"sample {i}")
    res = simulate(sc, simulation_ss, recipe.settings, engine=recipe.engine)
    return i, simulated_rows(i, sc, res)


# `n` left out: the recorded n when resuming, this many for a new dataset of a preset, and every
# sample of the source with from_dataset.
DEFAULT_N = 1000


def _source_scenarios(source: str | Path, n: int | None) -> tuple[list[str], dict]:
    """Scenario JSON of every sample of an existing dataset, in sample order, and its manifest."""
    root = Path(source)
    try:
        manifest = check_dataset(root)
    except DatasetError as exc:
        raise DatasetError(f"from_dataset: {exc}") from None
    if not manifest.get("shards"):  # completeness: check_dataset, as verify judges it
        raise DatasetError(
            f"from_dataset: {root} is not a complete dataset; finish it (run its command again)"
        )
    samples = read_table(root, "samples")
    ids = samples["sample"].tolist()
    if ids != list(range(len(ids))):
        raise DatasetError(f"from_dataset: {root} does not hold samples 0..{len(ids) - 1}")
    if n is not None and n > len(ids):
        raise DatasetError(f"n: got {n}; {root} holds only {len(ids)} samples")
    return samples["scenario"].tolist()[: n or len(ids)], manifest


def _origin(
    n: int | None, preset: dict | None, from_dataset: str | Path | None
) -> tuple[int | None, str | None, list[str] | None, dict[str, Any]]:
    """(n, the preset as JSON, the source's scenarios, what the data come from), all checked."""
    if n is not None:
        n = positive_int("n", n)
    if from_dataset is None:
        make_sampler(preset)  # validates the preset before anything is written
        return n, json.dumps(preset, sort_keys=True), None, {"scenario": preset}
    scenarios, src_manifest = _source_scenarios(from_dataset, n)
    checksums = {k: v["sha256"] for k, v in src_manifest["shards"].items()}
    origin = {
        "from_dataset": str(Path(from_dataset).resolve()),
        "source_identity": src_manifest.get("identity"),
        # the source's content, not just its name: a changed source is another config
        "source_digest": hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest(),
    }
    return len(scenarios), None, scenarios, origin


def generate(
    *,
    n: int | None,
    seed: int,
    out: str | Path,
    preset: dict | None,
    settings: SimulatorSettings,
    engine: str = "fast",
    shard_size: int = 100,
    workers: Any = "auto",
    executor: str = "local",
    dask_address: str | None = None,
    from_dataset: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Create or resume the dataset at `out`; returns a summary. Checks everything before work.

    `n=None`: the n the folder's dataset records (resuming), else DEFAULT_N samples of the preset,
    or every sample of `from_dataset`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DatasetError(f"seed: got {seed!r}; expected an integer >= 0")
    shard_size = positive_int("shard_size", shard_size)
    workers = resolve_workers(workers)
    if engine not in ENGINES:
        raise DatasetError(f"simulator.engine: got {engine!r}; one of {ENGINES}")
    if executor not in EXECUTORS:
        raise DatasetError(f"executor: got {executor!r}; one of {EXECUTORS}")
    boolean("progress", progress)
    n, preset_json, scenarios, origin = _origin(n, preset, from_dataset)
    # n is not part of the identity: sample i depends only on (seed, i), so a larger n extends
    # the same dataset.
    identity = {
        **origin,
        "seed": seed,
        "shard_size": shard_size,
        "simulator": asdict(settings),
    }
    store = DatasetStore(out, identity, shard_size, code_version())
    try:
        recorded = store.manifest.get("n")
        n = n or recorded or DEFAULT_N
        if recorded is not None and n < recorded:
            raise DatasetError(
                f"n: got {n}; {out} holds a dataset of this config with n={recorded}. Give "
                f"n={recorded} (or more, to extend it), or another out= folder."
            )
        sources = scenarios if scenarios is not None else [None] * n
        recipe = Recipe(seed, preset_json, settings, engine)
        return _run(store, recipe, sources, workers, executor, dask_address, progress)
    finally:
        store.close()


def _run(
    store: DatasetStore,
    recipe: Recipe,
    sources: list[str | None],
    workers: int,
    executor: str,
    dask_address: str | None,
    progress: bool,
) -> dict[str, Any]:
    """Make every sample the store does not hold yet, shard by shard; returns the summary."""
    n, shard_size, out = len(sources), store.shard_size, store.root
    extended_from = store.manifest.get("n")
    n_shards = math.ceil(n / shard_size)
    ranges = {k: range(k * shard_size, min((k + 1) * shard_size, n)) for k in range(n_shards)}
    held = store.held_ranges()
    # a shard is made unless it is held whole; a short last shard of a smaller n is made again
    # (it stays recorded, and readable, until its longer version replaces it)
    todo = [k for k in range(n_shards) if held.get(k) != ranges[k]]
    ranges = {k: ranges[k] for k in todo}
    store.save(n=n, last_run_with=store.code, **({"complete": False} if todo else {}))
    if store.repaired:
        print(f"{out}: shards {', '.join(store.repaired)} were damaged and will be made again")
    if extended_from is not None and n > extended_from:
        print(f"{out}: extending the dataset from {extended_from} to {n} samples")
    tasks = [(i, sources[i]) for k in todo for i in ranges[k]]
    done_before = n - len(tasks)
    fn = partial(make_sample, recipe)
    if executor == "dask":
        results = run_dask(fn, tasks, workers, dask_address)
    else:
        results = run_local(fn, tasks, workers)
    t0 = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with tqdm(
            total=n,
            initial=done_before,
            unit="sample",
            desc=f"generating {Path(out).name}",
            disable=not progress,
            smoothing=0.05,
        ) as bar:
            _collect(results, ranges, store, bar, shard_size)
    except KeyboardInterrupt:
        saved = len(store.done())
        raise Interrupted(
            f"interrupted: {saved} of {n_shards} shards are saved in {out}; run the same command "
            "again to finish the rest"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    wall = time.perf_counter() - t0
    store.save(complete=True, last_run_seconds=wall, last_run_samples=len(tasks))
    return summarise(out, wall, len(tasks))


class Interrupted(Exception):
    """Generation stopped by a signal; every finished shard is on disk and the run can resume."""


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _collect(results: Iterable, ranges: dict, store: DatasetStore, bar, shard_size: int) -> None:
    pending: dict[int, dict[int, dict]] = defaultdict(dict)
    for i, rows in results:
        k = i // shard_size
        pending[k][i] = rows
        bar.update(1)
        if len(pending[k]) == len(ranges[k]):
            shard = pending.pop(k)
            tables = {
                t: pd.DataFrame([r for i in sorted(shard) for r in shard[i][t]]) for t in TABLES
            }
            stops = pd.Series([shard[i]["samples"][0]["stop_reason"] for i in shard])
            store.write_shard(k, tables, {"stop_reasons": stops.value_counts().to_dict()})


def summarise(out: str | Path, wall: float, simulated: int) -> dict[str, Any]:
    chains = read_table(out, "chains")
    samples = read_table(out, "samples")
    loss = chains["loss_ratio"]
    summary = {
        "out": str(out),
        "samples": len(samples),
        "chains": len(chains),
        "simulated_now": simulated,
        "wall_seconds": wall,
        "samples_per_second": simulated / wall if wall > 0 and simulated else None,
        "loss_ratio_quantiles": {
            str(q): float(loss.quantile(q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)
        },
        "share_of_chains_losing": {
            ">1%": float((loss > 0.01).mean()),
            ">10%": float((loss > 0.10).mean()),
            ">50%": float((loss > 0.50).mean()),
        },
        "stop_reasons": samples["stop_reason"].value_counts().to_dict()
        if "stop_reason" in samples
        else {},
    }
    return summary
