"""Fault injection: the faults the README says a dataset survives, injected with random timing.

    python experiments/fault_injection.py [--kills 20] [--rounds 3] [--n 120] [--ckpt model.ckpt]

1. Reference: one uninterrupted run of `python -m datagen` (a small dsn24 set, coarse simulator
   settings, the SimPy engine so that a run lasts long enough to be killed).
2. Kills: the same command on another folder, killed with SIGKILL at a random moment `--kills`
   times in a row, with 1 or 2 workers at random. After each kill, what is on disk must verify as
   consistent (only unfinished), no process of the run may outlive it by more than 3 s, and
   nothing may have printed a traceback.
3. `--rounds` rounds of damage to that folder: a truncated shard file and a bit-flipped one
   (verify and read_table must refuse them), a stray part file or a user's file (the next run must
   stop, name it and change nothing), a deleted manifest (the run must stop and change nothing),
   a second run started while one holds the folder (refused), the first one then killed at a
   random moment.
4. A last run finishes the dataset: it must verify, and every file must be byte-identical to the
   reference's.
5. With `--ckpt`: truncated, byte-flipped and NaN-weighted copies of a checkpoint given to
   `Surrogate.load`, counted as refused (CheckpointError) or loaded silently.

Prints the counts and writes them to experiments/results/fault_injection.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from chainnet.dataset.store import DatasetError, read_table, verify
from chainnet.dataset.tables import TABLES

ROOT = Path(__file__).resolve().parents[1]
FAST_ARGS = [
    "seed=7",
    "simulator.engine=simpy",
    "simulator.precision=0.1",
    "simulator.max_arrivals=15000",
    "simulator.warmup_arrivals=1000",
    "progress=false",
]


def manifest_of(out: Path) -> dict:
    try:
        return json.loads((out / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def recorded_samples(out: Path) -> int:
    return sum(
        b - a for a, b in (s["samples"] for s in manifest_of(out).get("shards", {}).values())
    )


def files_of(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def group_alive(pgid: int) -> list[int]:
    """Live processes of a process group (Linux /proc)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def holds_lock(pid: int, lock: Path) -> bool:
    """Whether process `pid` holds the flock of `lock` (read from /proc/locks, never taken)."""
    try:
        inode = os.stat(lock).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        f = line.split()
        if "FLOCK" in f and str(pid) in f and any(x.endswith(f":{inode}") for x in f):
            return True
    return False


class Injector:
    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.rng = np.random.default_rng(args.seed)
        self.counts: Counter = Counter()
        self.notes: list[str] = []
        self.runs = 0
        self.startup = 1.0  # seconds before a run writes; measured by the reference run
        self.per_sample = 0.05

    # -- running the command ------------------------------------------------------------------

    def start(self, out: Path, workers: int) -> tuple[subprocess.Popen, Path]:
        self.runs += 1
        log = self.work / f"run{self.runs:03d}.log"
        cmd = [sys.executable, "-m", "datagen", f"n={self.args.n}"]
        cmd += [f"shard_size={self.args.shard_size}", f"workers={workers}", f"out={out}"]
        cmd += [f"hydra.run.dir={self.work / 'hydra' / str(self.runs)}", *FAST_ARGS]
        with open(log, "w") as err:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
            )
        return proc, log

    def run(self, out: Path, workers: int = 1) -> tuple[int, str]:
        proc, log = self.start(out, workers)
        code = proc.wait(timeout=600)
        self.after_exit(proc.pid, log)
        return code, log.read_text()

    def after_exit(self, pgid: int, log: Path) -> None:
        """No process of the run outlives it by 3 s; nothing printed a traceback."""
        deadline = time.time() + 3.0
        while group_alive(pgid) and time.time() < deadline:
            time.sleep(0.02)
        survivors = group_alive(pgid)
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        self.counts["processes alive 3 s after their run ended"] += len(survivors)
        time.sleep(0.05)
        if "Traceback" in log.read_text():
            self.counts["runs that printed a traceback"] += 1
            self.notes.append(f"traceback in {log}")

    def kill_at_random(self, out: Path, workers: int, proc=None, log=None, phase="") -> bool:
        """Start a run (or take one), SIGKILL it at a random moment; False if it ended first."""
        remaining = max(self.args.n - recorded_samples(out), 1) * self.per_sample / workers
        delay = self.rng.uniform(0.0, self.startup + remaining / 3)
        if proc is None:
            proc, log = self.start(out, workers)
        t0 = time.time()
        while time.time() - t0 < delay and proc.poll() is None:
            time.sleep(0.005)
        if proc.poll() is not None:
            self.counts[f"runs that ended before their kill{phase}"] += 1
            self.after_exit(proc.pid, log)
            return False
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self.after_exit(proc.pid, log)
        self.counts["SIGKILL of python -m datagen"] += 1
        self.counts[f"SIGKILL with {workers} worker(s)"] += 1
        m = manifest_of(out)
        temporary = list(out.rglob(".part-*.tmp"))
        moment = (
            "before its first manifest"
            if not m
            else "during a shard write"
            if m.get("writing") or temporary
            else "between shard writes"
        )
        self.counts[f"SIGKILL {moment}"] += 1
        problems = [p for p in verify(out) if not p.startswith("incomplete")]
        problems = [p for p in problems if "interrupted write" not in p and "no manifest" not in p]
        if problems:
            self.counts["kills that left an inconsistent dataset"] += 1
            self.notes.append(f"after a kill: {problems}")
        return True

    # -- the phases ---------------------------------------------------------------------------

    def reference(self) -> Path:
        out = self.work / "reference"
        t0 = time.time()
        code, err = self.run(out, workers=1)
        assert code == 0, err
        wall = time.time() - t0
        compute = manifest_of(out)["last_run_seconds"]
        self.startup = max(wall - compute, 0.2)
        self.per_sample = compute / self.args.n
        return out

    def kills(self, out: Path) -> None:
        done, tries = 0, 0
        while done < self.args.kills and tries < 3 * self.args.kills:
            tries += 1
            done += self.kill_at_random(out, int(self.rng.integers(1, 3)), phase=" (kill loop)")
        self.counts["kills in a row on one dataset"] = done

    def damage(self, out: Path) -> None:
        """Truncate one recorded shard file and flip a bit of another: found and refused."""
        shards = manifest_of(out)["shards"]
        files = sorted(rel for s in shards.values() for rel in s["sha256"])
        cut, flip = self.rng.choice(files, 2, replace=False)
        data = (out / cut).read_bytes()
        (out / cut).write_bytes(data[: int(self.rng.integers(0, len(data)))])
        data = bytearray((out / flip).read_bytes())
        data[int(self.rng.integers(0, len(data)))] ^= 1 << int(self.rng.integers(0, 8))
        (out / flip).write_bytes(bytes(data))
        self.counts["truncated shard files"] += 1
        self.counts["bit-flipped shard files"] += 1
        problems = " ".join(verify(out))
        for rel in (cut, flip):
            self.counts["damaged files named by verify"] += rel in problems
            try:
                read_table(out, rel.split("/")[0], allow_incomplete=True)
                self.notes.append(f"read_table read the damaged {rel}")
            except DatasetError:
                self.counts["damaged files refused by read_table"] += 1

    def refused_untouched(self, out: Path, kind: str, expected: str) -> None:
        """The next run stops with exit code 2 and a message, and changes nothing."""
        before = files_of(out)
        code, err = self.run(out, int(self.rng.integers(1, 3)))
        self.counts[kind] += 1
        if code == 2 and expected in err and files_of(out) == before:
            self.counts[f"{kind}: refused, nothing changed"] += 1
        else:
            self.notes.append(f"{kind}: exit {code}, {err.strip()[-300:]}")

    def strays_and_manifest(self, out: Path) -> None:
        manifest = manifest_of(out)
        some = sorted(rel for s in manifest["shards"].values() for rel in s["sha256"])
        stray = out / ("samples/part-09999.parquet" if self.rng.random() < 0.5 else "chains/n.txt")
        shutil.copy(out / some[0], stray)
        self.counts["stray files named by verify"] += stray.name in " ".join(verify(out))
        self.refused_untouched(out, "stray files", stray.name)
        stray.unlink()
        aside = self.work / "manifest.aside"
        (out / "manifest.json").rename(aside)
        self.refused_untouched(out, "deleted manifests", "no manifest.json")
        aside.rename(out / "manifest.json")

    def concurrent(self, out: Path) -> None:
        """A second run while one holds the folder (paused, so they overlap): refused. The first
        one then goes on and is killed at a random moment."""
        workers = int(self.rng.integers(1, 3))
        first, log = self.start(out, workers)
        deadline = time.time() + 60
        while not holds_lock(first.pid, out / ".lock") and first.poll() is None:
            if time.time() > deadline:
                break
            time.sleep(0.005)
        if first.poll() is not None:
            self.notes.append("the first of two concurrent runs ended before it held the lock")
            self.after_exit(first.pid, log)
            return
        os.killpg(first.pid, signal.SIGSTOP)
        code, err = self.run(out, 1)
        os.killpg(first.pid, signal.SIGCONT)
        self.counts["second concurrent runs"] += 1
        if code == 2 and "another run is writing" in err:
            self.counts["second concurrent runs: refused"] += 1
        else:
            self.notes.append(f"second run: exit {code}, {err.strip()[-300:]}")
        self.kill_at_random(out, workers, first, log, " (after a concurrent run)")

    def checkpoint(self, path: Path) -> None:
        import torch

        from chainnet.learn.surrogate import CheckpointError, Surrogate

        Surrogate.load(path)  # the undamaged one loads
        data = path.read_bytes()
        for trial in range(self.args.ckpt_trials):
            copy = self.work / f"damaged{trial}.ckpt"
            kind = ("truncated", "byte-flipped", "NaN weight")[trial % 3]
            if kind == "truncated":
                copy.write_bytes(data[: int(self.rng.integers(1, len(data)))])
            elif kind == "byte-flipped":
                b = bytearray(data)
                b[int(self.rng.integers(0, len(b)))] ^= int(self.rng.integers(1, 256))
                copy.write_bytes(bytes(b))
            else:
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
                floats = [k for k, v in ckpt["state_dict"].items() if v.is_floating_point()]
                name = floats[int(self.rng.integers(0, len(floats)))]
                ckpt["state_dict"][name].view(-1)[0] = float("nan")
                torch.save(ckpt, copy)
            self.counts[f"checkpoints {kind}"] += 1
            try:
                Surrogate.load(copy)
                self.counts[f"checkpoints {kind}: loaded silently"] += 1
            except CheckpointError:
                self.counts[f"checkpoints {kind}: refused (CheckpointError)"] += 1
            except Exception as exc:  # counted, not hidden: another error type than promised
                self.counts[f"checkpoints {kind}: refused with {type(exc).__name__}"] += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs in a row on one dataset")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of damage, strays, concurrency")
    ap.add_argument("--n", type=int, default=120, help="samples of the dataset")
    ap.add_argument("--shard-size", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="of the fault timing and placement")
    ap.add_argument("--ckpt", type=Path, help="a checkpoint to damage (optional)")
    ap.add_argument("--ckpt-trials", type=int, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments/results/fault_injection.json")
    args = ap.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("error: this script reads /proc (Linux)")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="fault_injection_") as tmp:
        fi = Injector(args, Path(tmp))
        reference = fi.reference()
        victim = Path(tmp) / "victim"
        fi.kills(victim)
        for _ in range(args.rounds):
            if manifest_of(victim).get("shards"):
                fi.damage(victim)
                fi.strays_and_manifest(victim)
            fi.concurrent(victim)
        code, err = fi.run(victim, int(fi.rng.integers(1, 3)))
        identical = (
            code == 0
            and verify(victim) == []
            and all(files_of(victim / t) == files_of(reference / t) for t in TABLES)
            and {k: v["sha256"] for k, v in manifest_of(victim)["shards"].items()}
            == {k: v["sha256"] for k, v in manifest_of(reference)["shards"].items()}
        )
        if args.ckpt:
            fi.checkpoint(args.ckpt)
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "counts": dict(sorted(fi.counts.items())),
        "final_dataset_identical_to_uninterrupted_run": identical,
        "notes": fi.notes,
        "wall_seconds": round(time.time() - t0, 1),
    }
    for key, value in result["counts"].items():
        print(f"{value:6d}  {key}")
    print(f"final dataset byte-identical to an uninterrupted run: {identical}")
    for note in fi.notes:
        print(f"note: {note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{result['wall_seconds']} s; written to {args.out}")
    sys.exit(0 if identical and not fi.notes else 1)


if __name__ == "__main__":
    main()
