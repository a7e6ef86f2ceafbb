"""Scoring speed: the surrogate against the simulator on the same scenarios, in the same run.

Draws `--n` scenarios of a preset from held-out seeds, simulates each at the simulator's default
settings (precision 1 %, both engines: `fast` on all, `simpy` on the first `--simpy-n`), then
scores them with the surrogate in batches of 1, 64 and 1024 (the time includes building the
graphs from the scenario objects). Prints scenarios per second and the speed-up per scenario,
with the surrogate's error against the simulated labels, and saves the figures as JSON.

    python experiments/bench_scoring.py --ckpt model.ckpt [--preset dsn24] [--n 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from chainnet.learn.metrics import mae, mape
from chainnet.learn.surrogate import Surrogate
from chainnet.sim import SimulatorSettings, simulate
from datagen.defaults import preset
from datagen.presets import make_sampler


def draw(preset_name: str, n: int, seed: int):
    sampler = make_sampler(preset(preset_name))
    seeds = np.random.SeedSequence(seed).spawn(n)
    return [sampler(np.random.default_rng(s), name=f"b{i}") for i, s in enumerate(seeds)]


def time_simulation(scenarios, engine: str):
    settings = SimulatorSettings()
    simulate(scenarios[0], 0, settings, engine=engine)  # compile / warm up, not timed
    rows, t0 = [], time.perf_counter()
    for i, sc in enumerate(scenarios):
        rows.append(simulate(sc, i, settings, engine=engine).chain_frame())
    return (time.perf_counter() - t0) / len(scenarios), rows


def time_surrogate(s: Surrogate, scenarios, batch: int, repeats: int) -> float:
    total = max(len(scenarios), 2 * batch)
    pool = (scenarios * (total // len(scenarios) + 1))[:total]
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for start in range(0, total, batch):
            s.predict_arrays(pool[start : start + batch])
        best = min(best, (time.perf_counter() - t0) / total)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="a checkpoint of train.py")
    ap.add_argument("--preset", default="dsn24")
    ap.add_argument("--n", type=int, default=200, help="scenarios simulated with the fast engine")
    ap.add_argument("--simpy-n", type=int, default=20, help="of those, simulated with SimPy too")
    ap.add_argument("--seed", type=int, default=987_654, help="held out: no dataset uses it")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="experiments/results/bench_scoring.json")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    surrogate = Surrogate.load(args.ckpt)
    scenarios = draw(args.preset, args.n, args.seed)
    print(f"{args.n} {args.preset} scenarios (seed {args.seed}); torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    sim_fast, frames = time_simulation(scenarios, "fast")
    sim_simpy, _ = time_simulation(scenarios[: args.simpy_n], "simpy")
    print(f"simulator fast engine : {sim_fast * 1e3:9.2f} ms per scenario")
    print(f"simulator SimPy engine: {sim_simpy * 1e3:9.2f} ms per scenario")
    out = {
        "preset": args.preset, "n": args.n, "seed": args.seed, "ckpt": args.ckpt,
        "simulate_fast_s": sim_fast, "simulate_simpy_s": sim_simpy, "surrogate": {},
    }  # fmt: skip
    for batch in (1, 64, 1024):
        per = time_surrogate(surrogate, scenarios, batch, args.repeats)
        out["surrogate"][batch] = {
            "s_per_scenario": per,
            "scenarios_per_s": 1.0 / per,
            "speedup_vs_fast": sim_fast / per,
            "speedup_vs_simpy": sim_simpy / per,
        }
        print(
            f"surrogate, batch {batch:5d}: {per * 1e6:9.1f} us per scenario "
            f"({1 / per:8.0f}/s): {sim_fast / per:8.0f}x the fast engine, "
            f"{sim_simpy / per:8.0f}x SimPy"
        )
    pred = surrogate.predict(scenarios)
    true = np.concatenate([f["throughput_ratio"].to_numpy() for f in frames])
    true_r = np.concatenate([f["response_ratio"].to_numpy() for f in frames])
    out["accuracy"] = {
        "mape_throughput_ratio": mape(pred["throughput_ratio"], true),
        "mape_response_ratio": mape(pred["response_ratio"], true_r),
        "mae_loss_ratio": mae(pred["throughput_ratio"], true),
    }
    print(
        "surrogate against these simulations:", {k: round(v, 4) for k, v in out["accuracy"].items()}
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
