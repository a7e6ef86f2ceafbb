"""Settings of a run and the labels it produces (SPEC section 2)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from chainnet.parsing import ScenarioError, integer, number
from chainnet.scenario import Scenario
from chainnet.sim.stats import ARRIVED, COMPLETED, DROPPED, RESPONSE_SUM, BatchMeans

OUTCOME_COMPLETE, OUTCOME_EXIT, OUTCOME_DROP = "complete", "exit", "drop"


@dataclass(frozen=True)
class SimulatorSettings:
    """How long a run lasts: warm-up, batch means and the stopping rule."""

    precision: float = (
        0.01  # relative 95 % half-width of every chain's throughput and response time
    )
    max_arrivals: int = 1_000_000  # cap on simulated arrivals (all chains, warm-up included)
    warmup_arrivals: int = 5_000  # expected arrivals discarded before statistics start
    batch_arrivals: int = 200  # expected arrivals in one initial batch
    min_batches: int = 32

    def __post_init__(self) -> None:
        p = number(self.precision, "simulator.precision")
        if not 0.0 < p < 1.0:  # NaN included
            raise ScenarioError("simulator.precision", self.precision, "allowed range is (0, 1)")
        object.__setattr__(self, "precision", p)
        for name in ("max_arrivals", "warmup_arrivals", "batch_arrivals"):
            v = integer(getattr(self, name), f"simulator.{name}")
            if v < 1:
                raise ScenarioError(f"simulator.{name}", v, "must be an integer >= 1")
            object.__setattr__(self, name, v)
        v = integer(self.min_batches, "simulator.min_batches")
        if v < 2:
            raise ScenarioError("simulator.min_batches", v, "must be an integer >= 2")
        object.__setattr__(self, "min_batches", v)


@dataclass
class SimulationResult:
    """Labels of one run: a row per chain, per stage and per device, and how the run ended."""

    chains: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    stop_reason: str
    warmup_time: float
    window: float  # simulated time over which the labels are measured
    arrivals: int  # all simulated arrivals, warm-up included
    events: int
    wall_time: float
    batches: int
    mean_jobs: float  # time-average number of jobs in the system (sum over devices)
    settings: dict[str, Any] = field(default_factory=dict)

    def chain_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.chains)

    def stage_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.stages)

    def device_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.devices)


def _accuracy_defined(chain) -> bool:
    last = len(chain.stages) - 1
    return all(
        st.exit_accuracy is not None
        for k, st in enumerate(chain.stages)
        if k == last or st.exit_prob > 0
    )


def _chain_row(
    scenario: Scenario,
    c: int,
    warm: dict,
    end: dict,
    batches: BatchMeans,
    in_system: list[int],
    span: float,
) -> dict[str, Any]:
    """Chain `c`'s labels: batch-means estimates over the window, counts over the whole run."""
    spec = scenario.chains[c]
    est = batches.chain_estimates(c)
    counts1, lost1, lost_soj1 = end["chains"][c]
    counts0, lost0, lost_soj0 = warm["chains"][c]
    rt = est["response_time"]
    service_sum = sum(scenario.mean_service_time(st) for st in spec.stages)
    loss = est["loss_ratio"]
    # Every job that left in the window: completed, exited, or dropped after its first stage.
    departed = counts1[COMPLETED] - counts0[COMPLETED] + lost1 - lost0
    sojourn = counts1[RESPONSE_SUM] - counts0[RESPONSE_SUM] + lost_soj1 - lost_soj0
    return {
        "chain": spec.name,
        "service": spec.service,
        "arrival_rate": spec.arrival_rate,
        "throughput": est["throughput"].mean,
        "throughput_hw": est["throughput"].half_width,
        "loss_ratio": loss.mean,
        "loss_ratio_hw": loss.half_width,
        "throughput_ratio": 1.0 - loss.mean,
        "throughput_ratio_hw": loss.half_width,
        "response_time": rt.mean,
        "response_time_hw": rt.half_width,
        "response_ratio": service_sum / rt.mean if rt.mean > 0 else math.nan,
        "response_ratio_hw": service_sum * rt.half_width / rt.mean**2 if rt.mean > 0 else math.nan,
        "accuracy": est["accuracy"].mean if _accuracy_defined(spec) else math.nan,
        "accuracy_hw": est["accuracy"].half_width if _accuracy_defined(spec) else math.nan,
        "exit_fraction": [est[f"exit_fraction_{k}"].mean for k in range(len(spec.stages))],
        "exit_fraction_hw": [est[f"exit_fraction_{k}"].half_width for k in range(len(spec.stages))],
        # Whole run, warm-up included: arrived = completed + dropped + in_system exactly.
        "arrived": int(counts1[ARRIVED]),
        "completed": int(counts1[COMPLETED]),
        "dropped": int(counts1[DROPPED]),
        "in_system": int(in_system[c]),
        # With the devices' mean_jobs, Little's law: sum of departure_rate * mean_sojourn.
        "departure_rate": departed / span,
        "mean_sojourn": sojourn / departed if departed else math.nan,
    }


def _stage_rows(scenario: Scenario, warm: dict, end: dict, span: float) -> list[dict[str, Any]]:
    """A row per stage of every chain, in chain order: arrivals and drops in the window."""
    stages = []
    i = 0
    for spec in scenario.chains:
        for k, st in enumerate(spec.stages):
            a = end["stages"][i][0] - warm["stages"][i][0]
            d = end["stages"][i][1] - warm["stages"][i][1]
            stages.append(
                {
                    "chain": spec.name,
                    "stage": k,
                    "device": st.device,
                    "arrivals": a,
                    "drops": d,
                    "arrival_rate": a / span,
                    "drop_ratio": d / a if a else math.nan,
                }
            )
            i += 1
    return stages


def _device_rows(
    scenario: Scenario, warm: dict, end: dict, span: float, stages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A row per device: time averages over the window, and the totals of its stages' rows."""
    devices = []
    for j, dev in enumerate(scenario.devices):
        area1, busy1 = end["devices"][j]
        area0, busy0 = warm["devices"][j]
        here = [s for s in stages if s["device"] == dev.name]
        devices.append(
            {
                "device": dev.name,
                "utilisation": (busy1 - busy0) / span,
                "mean_jobs": (area1 - area0) / span,
                "arrivals": sum(s["arrivals"] for s in here),
                "drops": sum(s["drops"] for s in here),
            }
        )
    return devices


def build_result(
    scenario: Scenario,
    warm: dict,
    end: dict,
    batches: BatchMeans,
    *,
    in_system: list[int],
    stop_reason: str,
    events: int,
    wall_time: float,
    settings: SimulatorSettings,
) -> SimulationResult:
    """The labels of a run from its snapshots at the end of warm-up (`warm`) and at `end`."""
    span = end["time"] - warm["time"]
    chains = [
        _chain_row(scenario, c, warm, end, batches, in_system, span)
        for c in range(len(scenario.chains))
    ]
    stages = _stage_rows(scenario, warm, end, span)
    devices = _device_rows(scenario, warm, end, span, stages)
    return SimulationResult(
        chains=chains,
        stages=stages,
        devices=devices,
        stop_reason=stop_reason,
        warmup_time=warm["time"],
        window=span,
        arrivals=int(sum(ch["arrived"] for ch in chains)),
        events=events,
        wall_time=wall_time,
        batches=batches.n_batches,
        mean_jobs=float(sum(d["mean_jobs"] for d in devices)),
        settings=asdict(settings),
    )
