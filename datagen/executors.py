"""Where samples are made: local processes or a Dask cluster; each yields results as they finish.

Every executor maps one picklable function over the sample tasks and yields its results in
completion order; which executor ran them never changes the data (sample i depends only on
(seed, i)).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from chainnet.dataset.store import DatasetError

EXECUTORS = ("local", "dask")


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _worker_init(parent: int | None) -> None:
    # Workers leave Ctrl-C to the parent, which stops them; a shard is only written by the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent's SIGTERM handler (inherited by fork) is for the parent: the pool ends its
    # workers with SIGTERM, which must just end them.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _end_with_parent(parent)


def _end_with_parent(parent: int | None) -> None:
    """A worker whose parent is gone (killed with SIGKILL: no chance to stop its pool) ends at
    once and quietly: it would otherwise finish its sample and die on the closed result pipe
    with a BrokenPipeError traceback. Linux: the kernel sends SIGTERM (default action: end) when
    the parent dies; elsewhere a thread watches the parent. `parent` is None where the worker's
    parent is not the run itself (a forkserver, which ends with the run)."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if parent is None:
        return
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(0)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def run_local(fn: Callable, tasks: list, workers: int) -> Iterator:
    if workers == 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    ctx = mp.get_context()
    parent = os.getpid() if ctx.get_start_method() in ("fork", "spawn") else None
    with ctx.Pool(workers, initializer=_worker_init, initargs=(parent,)) as pool:
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
