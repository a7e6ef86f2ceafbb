"""Dataset generation speed: samples/s and simulated events/s per preset, with 1 and 2 workers.

Generates `--samples` samples of each preset at the default simulator settings of
`python -m datagen` (conf/datagen.yaml) into a temporary folder, with workers=1 and workers=2, and
projects the wall time of n=50,000 on this machine. Prints a table and saves it as JSON.

    python experiments/bench_datagen.py [--samples 40] [--presets dsn24 edge dsn24_large]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from chainnet.dataset.store import read_table
from datagen.defaults import cli_defaults, preset
from datagen.generate import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--presets", nargs="+", default=["dsn24", "edge", "dsn24_large"])
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--engine", default="fast", help="fast (numba) or simpy")
    ap.add_argument("--target", type=int, default=50_000, help="n to project the wall time of")
    ap.add_argument("--out", default="experiments/results/bench_datagen.json")
    args = ap.parse_args()
    settings, _, _ = cli_defaults()
    rows = []
    for name in args.presets:
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                generate(
                    n=args.samples,
                    seed=0,
                    out=Path(tmp) / "ds",
                    preset=preset(name),
                    settings=settings,
                    engine=args.engine,
                    shard_size=10,
                    workers=workers,
                    progress=False,
                )
                wall = time.perf_counter() - t0
                samples = read_table(Path(tmp) / "ds", "samples")
            per_sample = wall / args.samples
            row = {
                "preset": name,
                "engine": args.engine,
                "workers": workers,
                "samples": args.samples,
                "wall_s": wall,
                "samples_per_s": args.samples / wall,
                "events_per_s": float(samples["events"].sum()) / wall,
                "mean_arrivals": float(samples["arrivals"].mean()),
                "share_capped": float((samples["stop_reason"] != "precision").mean()),
                f"projected_hours_n{args.target}": per_sample * args.target / 3600,
            }
            rows.append(row)
            print(
                f"{name:12s} {args.engine:5s} workers={workers}  "
                f"{row['samples_per_s']:6.2f} samples/s  "
                f"{row['events_per_s']:10,.0f} events/s  {row['mean_arrivals']:9,.0f} arrivals/"
                f"sample  capped {row['share_capped']:4.0%}  n={args.target}: "
                f"{row[f'projected_hours_n{args.target}']:6.1f} h",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": platform.machine(), "settings": vars(settings), "rows": rows}
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
