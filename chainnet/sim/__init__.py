"""Discrete-event simulation of scenarios: the ground truth of every label.

Two engines give the same answer on the same seed, job for job and label for label: `simpy`
(SimPy's scheduler with callbacks, the reference) and `fast` (the same logic compiled with numba,
tens of times faster; the default). `debug=True` runs the SimPy engine, which then asserts every
region's limits after each admission.

Modules: `layout` (a scenario as flat arrays, built once per run, read by both engines), `rules`
(each rule the engines share, written once), `engine` (SimPy), `kernel` and `fast` (numba),
`streams` (the random streams), `base` (the steady-state run loop), `stats` (batch means),
`result` (settings and labels), `oracle` (an independent engine, the tests' check).
"""

from __future__ import annotations

from os import PathLike

import numpy as np

from chainnet.scenario import Scenario
from chainnet.sim.base import Engine
from chainnet.sim.engine import LimitViolation, SimPyEngine
from chainnet.sim.result import SimulationResult, SimulatorSettings

__all__ = [
    "ENGINES",
    "LimitViolation",
    "SimPyEngine",
    "SimulationResult",
    "SimulatorSettings",
    "make_engine",
    "simulate",
]

ENGINES = ("fast", "simpy")
FAST_ENGINE_MAX_SLOTS = 2_000_000


def make_engine(
    scenario: Scenario,
    seed: int | np.random.SeedSequence = 0,
    settings: SimulatorSettings | None = None,
    engine: str = "fast",
    trace: bool = False,
    debug: bool = False,
) -> Engine:
    check_arguments(scenario, settings, engine, debug=debug, trace=trace)
    # The fast engine preallocates a slot per job a device can hold; beyond this many slots the
    # SimPy engine (same results, allocation on demand) runs instead.
    slots = sum(d.capacity for d in scenario.devices)
    if engine == "simpy" or debug or slots > FAST_ENGINE_MAX_SLOTS:
        return SimPyEngine(scenario, seed, settings, trace=trace, debug=debug)
    from chainnet.sim.fast import FastEngine  # compiles on first use

    return FastEngine(scenario, seed, settings, trace=trace)


def check_arguments(scenario: Scenario, settings: SimulatorSettings | None, engine: str, **flags):
    """A `TypeError` (or `ValueError` for an unknown engine) naming the argument given a wrong
    type, before anything deeper fails on it. The seed is checked by the random streams."""
    if not isinstance(scenario, Scenario):
        hint = "build one with Scenario(...)"
        if isinstance(scenario, (str, PathLike)):
            hint = f"read a file with Scenario.load({str(scenario)!r})"
        elif isinstance(scenario, dict):
            hint = "read plain data with Scenario.from_dict(data)"
        raise TypeError(f"scenario: got {type(scenario).__name__}; expected a Scenario: {hint}")
    if settings is not None and not isinstance(settings, SimulatorSettings):
        hint = (
            "SimulatorSettings(**settings)" if isinstance(settings, dict) else "SimulatorSettings()"
        )
        raise TypeError(
            f"settings: got {type(settings).__name__} {settings!r}; expected a SimulatorSettings "
            f"(e.g. {hint}) or None"
        )
    if not isinstance(engine, str):
        raise TypeError(f"engine: got {engine!r}; expected one of {ENGINES}")
    if engine not in ENGINES:
        raise ValueError(f"simulator.engine: got {engine!r}; one of {ENGINES}")
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name}: got {value!r}; expected True or False")


def simulate(
    scenario: Scenario,
    seed: int | np.random.SeedSequence = 0,
    settings: SimulatorSettings | None = None,
    debug: bool = False,
    engine: str = "fast",
) -> SimulationResult:
    """Simulate `scenario` to steady state and return its labels (SPEC section 2)."""
    return make_engine(scenario, seed, settings, engine, debug=debug).run()
