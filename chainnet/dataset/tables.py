"""The dataset tables: one row per sample, per chain, per stage and per device, joined on `sample`.

Inputs (from the scenario) and labels (from a simulation, or imported) sit side by side. Nothing
that depends on the machine (wall time) is stored, so a dataset is the same value for value however
it was produced: with any number of workers, interrupted and resumed, or on another machine.
"""

from __future__ import annotations

import json
import math
from typing import Any

from chainnet.scenario import Scenario
from chainnet.sim.result import SimulationResult

TABLES = ("samples", "chains", "stages", "devices")
TABLE_KEYS = {
    "samples": ["sample"],
    "chains": ["sample", "chain"],
    "stages": ["sample", "chain", "stage"],
    "devices": ["sample", "device"],
}

CHAIN_LABELS = (
    "throughput",
    "throughput_hw",
    "loss_ratio",
    "loss_ratio_hw",
    "throughput_ratio",
    "throughput_ratio_hw",
    "response_time",
    "response_time_hw",
    "response_ratio",
    "response_ratio_hw",
    "accuracy",
    "accuracy_hw",
    "arrived",
    "completed",
    "dropped",
)


def scenario_rows(sample: int, sc: Scenario) -> dict[str, list[dict[str, Any]]]:
    """The scenario's inputs as rows of the four tables (no labels yet)."""
    loads = sc.offered_loads()
    rows: dict[str, list[dict[str, Any]]] = {
        "samples": [
            {
                "sample": sample,
                "name": sc.name,
                "n_devices": len(sc.devices),
                "n_chains": len(sc.chains),
                "n_regions": len(sc.regions),
                "max_offered_load": max(loads),
                "scenario": json.dumps(sc.to_dict(), separators=(",", ":")),
            }
        ],
        "chains": [],
        "stages": [],
        "devices": [],
    }
    for j, dev in enumerate(sc.devices):
        rows["devices"].append(
            {
                "sample": sample,
                "device": j,
                "name": dev.name,
                "speed": dev.speed,
                "capacity": dev.capacity,
                "memory": math.nan if dev.memory is None else dev.memory,
                "discipline": dev.discipline,
                "offered_load": loads[j],
            }
        )
    for c, ch in enumerate(sc.chains):
        rows["chains"].append(
            {
                "sample": sample,
                "chain": c,
                "name": ch.name,
                "service": ch.service,
                "arrival_rate": ch.arrival_rate,
                "n_stages": len(ch.stages),
                "service_time_sum": sum(sc.mean_service_time(st) for st in ch.stages),
            }
        )
        for k, st in enumerate(ch.stages):
            rows["stages"].append(
                {
                    "sample": sample,
                    "chain": c,
                    "stage": k,
                    "device": sc.device_id(st.device),
                    "work": st.work,
                    "mean_service_time": sc.mean_service_time(st),
                    "distribution": st.distribution,
                    "scv": st.service_scv,
                    "job_memory": st.job_memory,
                    "exit_prob": st.exit_prob,
                    "exit_accuracy": math.nan if st.exit_accuracy is None else st.exit_accuracy,
                }
            )
    return rows


def simulated_rows(sample: int, sc: Scenario, res: SimulationResult) -> dict[str, list[dict]]:
    """Inputs plus the simulation's labels."""
    rows = scenario_rows(sample, sc)
    rows["samples"][0].update(
        stop_reason=res.stop_reason,
        arrivals=res.arrivals,
        events=res.events,
        window=res.window,
        mean_jobs=res.mean_jobs,
    )
    for row, lab in zip(rows["chains"], res.chains):
        row.update({k: lab[k] for k in CHAIN_LABELS})
    for row, lab in zip(rows["stages"], res.stages):
        chain = res.chains[row["chain"]]
        row.update(
            arrivals=lab["arrivals"],
            drops=lab["drops"],
            drop_ratio=lab["drop_ratio"],
            exit_fraction=chain["exit_fraction"][row["stage"]],
            exit_fraction_hw=chain["exit_fraction_hw"][row["stage"]],
        )
    for row, lab in zip(rows["devices"], res.devices):
        row.update(
            utilisation=lab["utilisation"],
            mean_jobs=lab["mean_jobs"],
            arrivals=lab["arrivals"],
            drops=lab["drops"],
        )
    return rows
