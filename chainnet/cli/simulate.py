"""`python -m chainnet.simulate scenario_file=...`: simulate one scenario and print its QoS.

Writes chains.csv, stages.csv and devices.csv (and the resolved config) to the run's output folder,
plain numbers only: a chain's per-stage exit fractions are columns of stages.csv, one row per stage,
as in the dataset tables (`chainnet.dataset.tables`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from chainnet.cli.common import command
from chainnet.configs import settings_from
from chainnet.scenario import Scenario
from chainnet.sim import SimulationResult, make_engine

CHAIN_COLUMNS = [
    "chain",
    "arrival_rate",
    "throughput",
    "loss_ratio",
    "response_time",
    "response_time_hw",
    "response_ratio",
    "accuracy",
]


def qos_table(chains: pd.DataFrame) -> str:
    cols = [c for c in CHAIN_COLUMNS if c in chains and not chains[c].isna().all()]
    return chains[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}")


PER_STAGE = ("exit_fraction", "exit_fraction_hw")  # lists in a chain's labels: one value per stage
HINTS = {
    "debug": "to assert every region limit after each admission, use check_limits=true "
    "(conf/debug/ is a config group of train.py)"
}


def stage_frame(res: SimulationResult) -> pd.DataFrame:
    """A row per stage: arrivals, drops, and the chain's exit fraction there (and half-width)."""
    stages = res.stage_frame()
    for key in PER_STAGE:
        stages[key] = [float(v) for chain in res.chains for v in chain[key]]
    return stages


def run(cfg: DictConfig) -> pd.DataFrame:
    scenario = Scenario.load(cfg.scenario_file)
    settings, engine_name = settings_from(cfg.simulator)
    engine = make_engine(scenario, cfg.seed, settings, engine_name, debug=cfg.check_limits)
    bar = tqdm(
        total=settings.max_arrivals,
        unit="arrival",
        unit_scale=True,
        desc="simulating (stops earlier at the precision target)",
        disable=not cfg.progress,
    )
    res = engine.run(progress=lambda arrived: bar.update(int(arrived) - bar.n))
    bar.close()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    chains = res.chain_frame()
    chains.drop(columns=list(PER_STAGE)).to_csv(out / "chains.csv", index=False)
    stage_frame(res).to_csv(out / "stages.csv", index=False)
    res.device_frame().to_csv(out / "devices.csv", index=False)
    print(f"\n{scenario.name or cfg.scenario_file}: per-chain QoS")
    print(qos_table(chains))
    print("\nper device")
    print(res.device_frame().to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(
        f"\nstopped by {res.stop_reason} after {res.arrivals:,} arrivals "
        f"({res.events:,} events, {res.wall_time:.2f} s); outputs in {out}"
    )
    return chains


@command("simulate", hints=HINTS)
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
