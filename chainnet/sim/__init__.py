"""Discrete-event simulation of scenarios: the ground truth of every label."""

from __future__ import annotations

import numpy as np

from chainnet.scenario import Scenario
from chainnet.sim.engine import LimitViolation, SimPyEngine
from chainnet.sim.result import SimulationResult, SimulatorSettings

__all__ = ["LimitViolation", "SimPyEngine", "SimulationResult", "SimulatorSettings", "simulate"]


def simulate(
    scenario: Scenario,
    seed: int | np.random.SeedSequence = 0,
    settings: SimulatorSettings | None = None,
    debug: bool = False,
) -> SimulationResult:
    """Simulate `scenario` to steady state and return its labels (SPEC section 2)."""
    return SimPyEngine(scenario, seed, settings, debug=debug).run()
