"""Events per second of the simulation engines, measured in one run on the same scenarios.

Compares our SimPy engine (callbacks, no process per job), a straightforward SimPy model of the same
network (one `simpy.Resource` per device, one process per job; written only for this comparison) and
the oracle engine and the numba fast path (the SimPy engine's logic compiled), on small networks
(4 devices, 2 chains) and large ones (50 devices, 10 chains).
An event is a chain arrival or a service completion, counted the same way for every engine. Each
engine simulates the same scenario over the same simulated horizon, and the event counts of the
three must agree (they are fed the same random streams). Several random dsn24-like networks of each
size are used, so that light and heavy loads are both represented.

    python experiments/bench_simulator.py [--arrivals 50000] [--networks 5] [--out ...json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import simpy

from chainnet.scenario import Device, Scenario, ServiceChain, Stage
from chainnet.sim import SimPyEngine
from chainnet.sim.fast import FastEngine
from chainnet.sim.oracle import run_oracle
from chainnet.sim.streams import Streams


def random_network(n_devices: int, n_chains: int, seed: int) -> Scenario:
    """A dsn24-like network: deterministic FCFS service, drop on full, no device twice a chain."""
    rng = np.random.default_rng(seed)
    devices = [Device(f"d{i}", capacity=int(rng.integers(1, 51))) for i in range(n_devices)]
    chains = []
    for c in range(n_chains):
        length = int(rng.integers(2, min(6, n_devices) + 1))
        path = rng.choice(n_devices, length, replace=False)
        stages = [Stage(f"d{d}", float(rng.uniform(0.05, 2.0))) for d in path]
        chains.append(ServiceChain(f"c{c}", 1.0 / float(rng.uniform(0.1, 10.0)), stages))
    return Scenario(devices, chains)


def straightforward_model(scenario: Scenario, seed: int, horizon: float) -> int:
    """The textbook SimPy model: a Resource per device and a process per job. Returns events."""
    env = simpy.Environment()
    streams = Streams(scenario, seed)
    resources = [simpy.Resource(env, capacity=1) for _ in scenario.devices]
    capacity = [d.capacity for d in scenario.devices]
    count = [0]

    def job(c: int):
        chain = scenario.chains[c]
        for k, stage in enumerate(chain.stages):
            d = scenario.device_id(stage.device)
            res = resources[d]
            if res.count + len(res.queue) >= capacity[d]:
                return
            draw = streams.requirements[c][k]
            work = stage.work if draw is None else next(draw)
            with res.request() as req:
                yield req
                yield env.timeout(work / scenario.devices[d].speed)
            count[0] += 1

    def source(c: int):
        iat = streams.arrivals[c]
        while True:
            yield env.timeout(next(iat))
            count[0] += 1
            env.process(job(c))

    for c in range(len(scenario.chains)):
        env.process(source(c))
    env.run(until=horizon)
    return count[0]


def measure(name: str, fn, repeats: int) -> dict:
    """Best of `repeats` runs (the least disturbed by the rest of the machine)."""
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        events = fn()
        dt = time.perf_counter() - t0
        if best is None or dt < best[1]:
            best = (events, dt)
    return {"engine": name, "events": best[0], "seconds": best[1]}


def bench_size(n_devices: int, n_chains: int, seeds: list[int], arrivals: int, repeats: int):
    """Totals per engine over several random networks of one size (loads vary with the seed)."""
    totals: dict[str, dict] = {}
    for seed in seeds:
        sc = random_network(n_devices, n_chains, seed)
        horizon = arrivals / sum(c.arrival_rate for c in sc.chains)

        def ours(sc=sc, horizon=horizon):
            eng = SimPyEngine(sc, seed=0)
            eng.run_until(horizon)
            return eng.events

        def fast(sc=sc, horizon=horizon):
            eng = FastEngine(sc, seed=0)
            eng.run_until(horizon)
            return eng.events

        runs = [
            measure("simpy_callbacks (ours)", ours, repeats),
            measure(
                "simpy_resource_process",
                lambda sc=sc, h=horizon: straightforward_model(sc, 0, h),
                repeats,
            ),
            measure("oracle", lambda sc=sc, h=horizon: run_oracle(sc, 0, h).events, repeats),
            measure("fast (numba, same logic)", fast, repeats),
        ]
        if len({r["events"] for r in runs}) != 1:
            raise SystemExit(f"engines disagree on the event count for seed {seed}: {runs}")
        for r in runs:
            t = totals.setdefault(r["engine"], {"engine": r["engine"], "events": 0, "seconds": 0.0})
            t["events"] += r["events"]
            t["seconds"] += r["seconds"]
    rows = list(totals.values())
    for r in rows:
        r["events_per_s"] = r["events"] / r["seconds"]
    base = totals["simpy_resource_process"]["events_per_s"]
    for r in rows:
        r["ratio_vs_resource_process"] = r["events_per_s"] / base
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--arrivals", type=int, default=50_000, help="expected arrivals per network")
    ap.add_argument("--networks", type=int, default=5, help="random networks per size")
    ap.add_argument("--repeats", type=int, default=2, help="runs per engine (best is kept)")
    ap.add_argument("--out", default="experiments/results/bench_simulator.json")
    args = ap.parse_args()
    sizes = {"small (4 devices, 2 chains)": (4, 2), "large (50 devices, 10 chains)": (50, 10)}
    report = {"machine": platform.machine(), "args": vars(args), "networks": {}}
    FastEngine(random_network(2, 1, 0), 0).run_until(1.0)  # compile outside the measurement
    for label, (nd, nc) in sizes.items():
        seeds = list(range(1, args.networks + 1))
        rows = bench_size(nd, nc, seeds, args.arrivals, args.repeats)
        report["networks"][label] = rows
        print(f"\n{label}: {args.networks} random networks, ~{args.arrivals} arrivals each")
        print(f"{'engine':28s} {'events':>10s} {'seconds':>8s} {'events/s':>11s} {'ratio':>6s}")
        for r in rows:
            print(
                f"{r['engine']:28s} {r['events']:10d} {r['seconds']:8.2f} "
                f"{r['events_per_s']:11,.0f} {r['ratio_vs_resource_process']:6.2f}"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
