"""Re-simulate the published ChainNet validation samples and compare with their labels.

Prints the median and 90th percentile of |tputRatio error| and of the relative responseTime error
(the labels' own noise is about 0.0003 / 0.004 and 0.15 %), and saves the per-chain rows and a
summary under experiments/results/.

    python experiments/validate_chainnet.py [--samples 500] [--precision 0.01] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm import tqdm

from chainnet.dataset.published import read_chainnet_split
from chainnet.dataset.replicate import compare_with_labels
from chainnet.sim import SimulatorSettings

DEFAULT_SPLIT = Path(__file__).resolve().parents[2] / "shared/data/chainnet_dsn24/val"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--split", default=str(DEFAULT_SPLIT), help="published split folder")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--precision", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="experiments/results/validate_chainnet")
    args = ap.parse_args()
    samples = read_chainnet_split(args.split, limit=args.samples)
    settings = SimulatorSettings(precision=args.precision)
    t0 = time.perf_counter()
    with tqdm(total=len(samples), desc="re-simulating", unit="sample") as bar:
        df = compare_with_labels(samples, settings, args.seed, progress=bar.update)
    wall = time.perf_counter() - t0
    tr, rt = df["abs_err_throughput_ratio"], df["rel_err_response_time"]
    summary = {
        "samples": len(samples),
        "chains": len(df),
        "precision": args.precision,
        "throughput_ratio_abs_err_median": float(tr.median()),
        "throughput_ratio_abs_err_p90": float(tr.quantile(0.9)),
        "response_time_rel_err_median": float(rt.median()),
        "response_time_rel_err_p90": float(rt.quantile(0.9)),
        "stopped_by_arrival_cap": int(
            (df.groupby("sample")["stop_reason"].first() != "precision").sum()
        ),
        "mean_arrivals_per_sample": float(df.groupby("sample")["arrivals"].first().mean()),
        "wall_seconds": wall,
        "seconds_per_sample": wall / len(samples),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "chains.csv", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{len(samples)} samples, {len(df)} chains, precision {args.precision:.1%}")
    print(
        f"tputRatio  |err|: median {summary['throughput_ratio_abs_err_median']:.5f}, "
        f"p90 {summary['throughput_ratio_abs_err_p90']:.5f}"
    )
    print(
        f"responseTime rel: median {summary['response_time_rel_err_median']:.3%}, "
        f"p90 {summary['response_time_rel_err_p90']:.3%}"
    )
    print(
        f"{summary['seconds_per_sample']:.2f} s/sample, {summary['mean_arrivals_per_sample']:.0f} "
        f"arrivals/sample, {summary['stopped_by_arrival_cap']} stopped by the arrival cap"
    )
    print(f"saved {out}/summary.json and chains.csv")


if __name__ == "__main__":
    main()
