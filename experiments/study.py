"""What the experiments' studies share: the common judge, the quiet-machine meter, and the rows
saved as they are done so that a rerun resumes.

- `judge`: every returned deployment is judged by ONE simulation no search used (`EVAL_SEED`).
- `LoadMeter`: a run is timed only on a quiet machine. The meter measures the CPU time that OTHER
  processes use, in CPUs busy, from /proc/stat (the whole machine's busy time less this process's
  own, over a probe of `--probe-s` seconds or over a timed run): unlike the 1-minute load average
  it does not count the study itself and does not lag. `timed` waits until others use at most
  `--max-load` CPUs, runs the job, and flags it contended when others used more meanwhile (or it
  gave up waiting).
- `Rows`: a study's table, one CSV line appended (flushed and fsynced) per row as soon as it is
  done, so a run stopped at any moment keeps every row it finished. The last row of a key
  counts; the key is done when that row is good (not contended, and with status "ok", where the
  table says). A rerun runs the pending keys only, so contended and failed rows are redone.

Imported by the scripts beside it (`python experiments/search_budget.py` puts this folder on the
path); their tests put it there too.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import resource
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chainnet.optim.mix import service_frame
from chainnet.optim.objective import objective_value
from chainnet.optim.space import SearchSpace
from chainnet.sim import SimulatorSettings, make_engine

EVAL_SEED = 777_777  # the common judge: no search uses this seed
MAX_LOAD, PROBE_S = 0.7, 3.0  # the quiet machine: others busy on at most 0.7 CPUs, over 3 s


# ---- the common judge ---------------------------------------------------------------------------
def judge(space: SearchSpace, candidate: np.ndarray, settings: SimulatorSettings) -> dict:
    """`candidate` simulated once with `EVAL_SEED`: the objective of `space`'s problem, the loss
    ratio, the accuracy of served jobs, and their 95 % half-widths.

    One rule for the half-widths: a service's own (NaN, where it counted no job, as 0; an
    infinite one as 1); the loss's and the accuracy's are the weighted sums of the services'
    (by arrival rate; by served rate over the services that served jobs): a weighted sum's
    half-width is at most that, the services' estimates sharing one run; the objective's
    (`judge_hw`) is its largest distance to the objective at the worse and the better corner
    (every loss ratio plus or minus its half-width, every accuracy minus or plus its own)."""
    chains = make_engine(space.scenario(candidate), EVAL_SEED, settings).run().chain_frame()
    frame = service_frame(space.problem, chains)  # one row per service (mixed: over its routes)
    loss, acc = frame["loss_ratio"].to_numpy(float), frame["accuracy"].to_numpy(float)
    lhw = np.nan_to_num(frame["loss_ratio_hw"].to_numpy(float), nan=0.0, posinf=1.0)
    ahw = np.nan_to_num(frame["accuracy_hw"].to_numpy(float), nan=0.0, posinf=1.0)
    p = space.problem
    obj, total_loss, total_acc = objective_value(p, loss, acc)
    worse = objective_value(p, np.clip(loss + lhw, 0, 1), acc - ahw)[0]
    better = objective_value(p, np.clip(loss - lhw, 0, 1), acc + ahw)[0]
    rates = np.array([sv.arrival_rate for sv in p.services])
    served = rates * (1.0 - loss)
    counted = (served > 0) & np.isfinite(acc)
    return {
        "objective": obj,
        "loss": total_loss,
        "loss_hw": float(np.sum(rates * lhw) / rates.sum()),
        "accuracy": total_acc,
        "accuracy_hw": float(np.sum(served[counted] * ahw[counted]) / served[counted].sum())
        if counted.any()
        else math.nan,
        "judge_hw": max(worse - obj, obj - better),
    }


# ---- the quiet machine --------------------------------------------------------------------------
def busy_cpu_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU-seconds this process (and its finished children) has used."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class LoadMeter:
    """What other processes use, in CPUs busy: over `probe_s` seconds (`probe`), or over a timed
    run (`start`, then `others`)."""

    def __init__(self, probe_s: float = PROBE_S):
        self.probe_s = probe_s
        self.t = self.busy = self.own = 0.0

    def start(self) -> None:
        self.t, self.busy, self.own = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()

    def others(self) -> float:
        """Others' CPUs busy since `start`, over at least `probe_s` (it waits out the rest): the
        kernel counts CPU time in ticks of 10 ms, so one tick over a run of microseconds would
        read as hundreds of CPUs."""
        time.sleep(max(0.0, self.probe_s - (time.perf_counter() - self.t)))
        wall = max(time.perf_counter() - self.t, 1e-9)
        others = (busy_cpu_seconds() - self.busy) - (own_cpu_seconds() - self.own)
        return max(0.0, others / wall)

    def probe(self) -> float:
        self.start()
        time.sleep(self.probe_s)
        return self.others()

    def wait_quiet(self, max_load: float, max_wait: float = math.inf) -> float:
        """Wait (at most `max_wait` s) until others use at most `max_load` CPUs, saying once
        that it waits; the last load probed."""
        t0, load, said = time.monotonic(), self.probe(), False
        while load > max_load and time.monotonic() - t0 < max_wait:
            if not said:
                print(f"waiting for a quiet machine: others use {load:.2f} CPUs (> {max_load})",
                      flush=True)  # fmt: skip
                said = True
            load = self.probe()
        return load


def timed(
    job: Callable[[], Any],
    meter: LoadMeter,
    max_load: float,
    max_wait: float = math.inf,
    wait: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Wait for a quiet machine, then run `job()`: its result and the record of the run,
    `wall_s`, `load_before` (others' CPUs busy when it started), `load_during` (over the run) and
    `contended` (either above `max_load`: others shared the machine, or it gave up waiting).
    With `wait` False (a run whose time does not count) it starts at once, `load_before` is NaN
    and it is never contended."""
    before = meter.wait_quiet(max_load, max_wait) if wait else math.nan
    meter.start()
    t0 = time.perf_counter()
    result = job()
    wall = time.perf_counter() - t0
    during = meter.others()
    return result, {
        "wall_s": wall,
        "load_before": before,
        "load_during": during,
        "contended": wait and bool(before > max_load or during > max_load),
    }


def positive(text: str) -> float:
    """An option's number > 0 (argparse says which option got what otherwise)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"got {text}; a number > 0")
    return value


def add_quiet_options(ap: argparse.ArgumentParser) -> None:
    """`--max-load` and `--probe-s`, the same in every study."""
    ap.add_argument("--max-load", type=positive, default=MAX_LOAD,
                    help="quiet: others' CPUs busy (from /proc/stat), at most")  # fmt: skip
    ap.add_argument("--probe-s", type=positive, default=PROBE_S,
                    help="seconds of each probe of the others' load")  # fmt: skip


# ---- the rows, saved as they are done -----------------------------------------------------------
class Rows:
    """A study's table at `path`: rows of `columns`, identified by the `key` columns (see the
    module's docstring)."""

    def __init__(self, path: Path, columns: list[str], key: list[str]):
        self.path, self.columns, self.key = Path(path), list(columns), list(key)

    def read(self) -> pd.DataFrame:
        """Every row saved (none if the file does not exist yet)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return pd.DataFrame(columns=self.columns)
        table = pd.read_csv(self.path)
        missing = [c for c in self.columns if c not in table.columns]
        if missing:
            raise ValueError(
                f"{self.path}: not a table of this study (no {', '.join(missing[:3])}); "
                "use another --out"
            )
        return table

    def append(self, row: dict) -> None:
        """`row` as one line (with a header if the file is new), flushed and fsynced."""
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k) for k in self.columns})
            f.flush()
            os.fsync(f.fileno())

    def done(self, rows: pd.DataFrame) -> set[tuple]:
        """The keys whose last row is good."""
        return set(final_rows(rows, self.key)[self.key].itertuples(index=False, name=None))

    def pending(self, keys: Iterable[tuple], rows: pd.DataFrame) -> list[tuple]:
        """The keys of `keys` still to run: those whose last row is not good, or with none."""
        done = self.done(rows)
        return [k for k in keys if tuple(k) not in done]


def good_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows not contended (where the table says) and with status "ok" (where it has a
    status)."""
    ok = pd.Series(True, index=rows.index)
    if "contended" in rows.columns:
        ok &= ~rows["contended"].astype(bool)
    if "status" in rows.columns:
        ok &= rows["status"] == "ok"
    return rows[ok]


def latest(rows: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """The last row of every `key`: the one that counts."""
    return rows.drop_duplicates(key, keep="last").reset_index(drop=True)


def final_rows(rows: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """The last row of every `key`, where it is good."""
    return good_rows(latest(rows, key)).reset_index(drop=True)
