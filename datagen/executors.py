"""Where samples are made: local processes or a Dask cluster; each yields results as they finish.

Every executor maps one picklable function over the sample tasks and yields its results in
completion order; which executor ran them never changes the data (sample i depends only on
(seed, i)).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

from chainnet.dataset.store import DatasetError

EXECUTORS = ("local", "dask")


def _worker_signals() -> None:
    # Workers leave Ctrl-C to the parent, which stops them; a shard is only written by the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent's SIGTERM handler (inherited by fork) is for the parent: the pool ends its
    # workers with SIGTERM, which must just end them.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_local(fn: Callable, tasks: list, workers: int) -> Iterator:
    if workers == 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    with mp.get_context().Pool(workers, initializer=_worker_signals) as pool:
        yield from pool.imap_unordered(fn, tasks, chunksize=1)


def run_dask(fn: Callable, tasks: list, workers: int, address: str | None) -> Iterator:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise DatasetError(
            "executor=dask needs the optional extra: pip install 'chainnet[dask]'"
        ) from None
    cluster = None
    if address:
        client = Client(address)
    else:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    try:
        futures = client.map(fn, tasks, pure=False)
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def resolve_workers(workers: Any) -> int:
    """`auto` (the CPUs this process may use) or a positive integer."""
    if workers == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DatasetError(f"workers: got {workers!r}; expected 'auto' or an integer >= 1")
    return workers
