"""Candidates scored per second by the surrogate scorer: genes straight to the graph (the fast
path, `chainnet.optim.batch_graphs`) against decoding every candidate to a scenario, in one run.

Draws `--problems` medium deployment problems (`--devices` devices, `--services` services of 2-4
fragments, exits on half the fragments but the last, `max_accuracy`), a pool of feasible
candidates for each, and scores the pool in batches of `--batch` both ways:
- decoding (the scorer before the fast path): `SearchSpace.scenario` per candidate,
  `Surrogate.predict_arrays`, then the objective per candidate;
- fast: `SurrogateScorer.score` (the graph and limits from the gene matrix, the network, the
  objective per candidate).
Prints candidates per second, where the time goes, the ratio, and the largest difference between
the two paths' objectives; saves the figures as JSON.

    python experiments/bench_candidates.py --ckpt <edge checkpoint> [--batch 1024]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from chainnet.learn.features import graph_batch
from chainnet.learn.surrogate import Surrogate, physical_limits
from chainnet.optim.generators import random_problem
from chainnet.optim.objective import objective_value
from chainnet.optim.scorers import SurrogateScorer
from chainnet.optim.space import SearchSpace


def pool_of(space: SearchSpace, n: int, seed: int) -> list[np.ndarray]:
    """`n` feasible candidates: random draws and single moves, as a search proposes them."""
    rng = np.random.default_rng(seed)
    out, c = [], space.random_candidate(rng)
    while len(out) < n:
        c = space.neighbour(c, rng) if rng.random() < 0.7 else space.random_candidate(rng)
        out.append(c)
    return out


def decoding(space: SearchSpace, surrogate: Surrogate, batch: list[np.ndarray], split: dict):
    """The objectives of `batch` as the scorer found them before the fast path, timing its
    parts into `split` (graph and limits timed apart on the same scenarios)."""
    t0 = time.perf_counter()
    scenarios = [space.scenario(c) for c in batch]
    t1 = time.perf_counter()
    arrays = surrogate.predict_arrays(scenarios)
    t2 = time.perf_counter()
    n = len(space.problem.services)
    loss, acc = arrays["loss_ratio"].reshape(-1, n), arrays["accuracy"].reshape(-1, n)
    values = [objective_value(space.problem, lo, ac)[0] for lo, ac in zip(loss, acc)]
    t3 = time.perf_counter()
    graph_batch(scenarios)
    t4 = time.perf_counter()
    physical_limits(scenarios)
    t5 = time.perf_counter()
    parts = {
        "decode": t1 - t0,
        "graph": t4 - t3,
        "limits": t5 - t4,
        "network_and_rest": (t2 - t1) - (t4 - t3) - (t5 - t4),
        "objective": t3 - t2,
    }
    for key, seconds in parts.items():
        split[key] = split.get(key, 0.0) + seconds
    return np.array(values), t3 - t0


def fast(scorer: SurrogateScorer, batch: list[np.ndarray], split: dict):
    scorer.timings.clear()
    t0 = time.perf_counter()
    values = [s.objective for s in scorer.score(batch)]
    total = time.perf_counter() - t0
    parts = dict(scorer.timings)
    parts["objective"] = total - sum(parts.values())
    for key, seconds in parts.items():
        split[key] = split.get(key, 0.0) + seconds
    return np.array(values), total


def bench(space, surrogate, pool, batch: int, repeats: int) -> dict:
    """Both paths on `pool`, `repeats` times each (the fastest pass counts)."""
    scorer = SurrogateScorer(space, surrogate)
    batches = [pool[i : i + batch] for i in range(0, len(pool), batch)]
    decoding(space, surrogate, batches[0], {})  # warm up
    fast(scorer, batches[0], {})
    out = {}
    for name in ("decoding", "fast"):
        best, best_split, values = np.inf, {}, None
        for _ in range(repeats):
            split, total, vals = {}, 0.0, []
            for b in batches:
                v, seconds = (
                    decoding(space, surrogate, b, split)
                    if name == "decoding"
                    else fast(scorer, b, split)
                )
                total += seconds
                vals.append(v)
            if total < best:
                best, best_split, values = total, split, np.concatenate(vals)
        out[name] = {
            "candidates_per_s": len(pool) / best,
            "ms_per_1k": {k: 1e6 * v / len(pool) for k, v in best_split.items()},
            "values": values,
        }
    diff = np.abs(out["fast"].pop("values") - out["decoding"].pop("values"))
    out["max_objective_difference"] = float(np.nanmax(diff)) if len(diff) else 0.0
    out["ratio"] = out["fast"]["candidates_per_s"] / out["decoding"]["candidates_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="a checkpoint of train.py (edge data)")
    ap.add_argument("--problems", type=int, default=3)
    ap.add_argument("--devices", type=int, nargs=2, default=(4, 8), metavar=("MIN", "MAX"))
    ap.add_argument("--services", type=int, nargs=2, default=(2, 4), metavar=("MIN", "MAX"))
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--batches", type=int, default=4, help="batches per pass")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=31_337, help="held out: no dataset uses it")
    ap.add_argument("--out", default="experiments/results/bench_candidates.json")
    args = ap.parse_args()
    surrogate = Surrogate.load(args.ckpt, warn_ranges=False)
    rng = np.random.default_rng(args.seed)
    print(f"torch threads {torch.get_num_threads()}; batches of {args.batch}")
    results = []
    for i in range(args.problems):
        problem = random_problem(
            rng, tuple(args.devices), tuple(args.services), (2, 4), 0.5, "max_accuracy", f"p{i}"
        )
        space = SearchSpace(problem)
        pool = pool_of(space, args.batch * args.batches, args.seed + i)
        row = {
            "problem": problem.name,
            "devices": len(problem.devices),
            "services": len(problem.services),
            "fragments": space.n_placement,
            "space": space.size,
            **bench(space, surrogate, pool, args.batch, args.repeats),
        }
        results.append(row)
        print(
            f"{problem.name}: {row['devices']} devices, {row['services']} services, "
            f"{row['fragments']} fragments: decoding {row['decoding']['candidates_per_s']:,.0f}/s, "
            f"fast {row['fast']['candidates_per_s']:,.0f}/s ({row['ratio']:.1f}x); "
            f"objectives differ by at most {row['max_objective_difference']:.2g}"
        )
        for name in ("decoding", "fast"):
            split = ", ".join(f"{k} {v:.1f}" for k, v in row[name]["ms_per_1k"].items())
            print(f"    {name:8s} ms per 1,000 candidates: {split}")
    summary = {
        "ckpt": args.ckpt,
        "batch": args.batch,
        "torch_threads": torch.get_num_threads(),
        "problems": results,
        "mean_ratio": float(np.mean([r["ratio"] for r in results])),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"mean ratio {summary['mean_ratio']:.1f}x; saved {args.out}")


if __name__ == "__main__":
    main()
