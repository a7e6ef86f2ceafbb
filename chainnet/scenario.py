"""The scenario schema: devices, service chains, stages, early exits and finite capacity regions.

Defined once and used by the simulator, the dataset, the featurizer, the scorer and the optimizer.
A scenario round-trips through plain dicts (JSON/YAML); every range check lives in
`Scenario.__post_init__`, so a scenario built in code is checked exactly like one read from a file.

Semantics (SPEC section 1):
- A device serves its resident jobs with one server at `speed` work units per time unit, `fcfs` or
  `ps`. At most `capacity` jobs are resident (the one in service included) and, when `memory` is
  set, the `job_memory` of resident jobs sums to at most `memory` (any unit, used consistently).
- Each device is a finite capacity region; `regions` adds regions spanning several devices, limited
  in jobs and/or memory. A job that would exceed a limit of any region of the device it enters, from
  outside or from the previous stage, is dropped. A job leaves its stage before it enters the next.
- A chain receives Poisson arrivals at `arrival_rate`. A job at a stage needs `work` on average
  (service time = work / speed), drawn from `det`, `exp` or `general` (gamma with squared
  coefficient of variation `scv`). After the stage it exits with probability `exit_prob`; jobs
  leaving by an exit or after the last stage complete with that stage's `exit_accuracy`.
- A service with alternative routes (`routes` with probabilities) is split into one chain per route
  with rate `prob * arrival_rate` (a split Poisson stream is Poisson).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from chainnet.documents import load_document, parse_json, parse_yaml
from chainnet.parsing import (
    ScenarioError,
    ScenarioWarning,
    capacity,
    coerce,
    finite,
    integer,
    items_of,
    maybe,
    positive,
    probability,
    real,
    scenario_fields,
    sequence,
    spec,
    text,
)

DISCIPLINES = ("fcfs", "ps")
# Memory sums are compared with this relative slack, so that adding and removing the same amounts in
# another order (floating point) never flips an admission. Part of the semantics of every engine.
MEMORY_SLACK = 1e-9
DISTRIBUTIONS = ("det", "exp", "general")
# The type of every field (numpy scalars made plain): objects built in code are checked like files.
_DEVICE = spec(name=text, capacity=integer, speed=real, memory=maybe(real), discipline=text)
_STAGE = spec(device=text, work=real, distribution=text, scv=maybe(real), job_memory=real)
_STAGE += spec(exit_prob=real, exit_accuracy=maybe(real), fragment=maybe(text))
_CHAIN = spec(name=text, arrival_rate=real, service=maybe(text))
_REGION = spec(name=text, capacity=maybe(integer), memory=maybe(real))
_SCENARIO = spec(name=text)


@dataclass(frozen=True)
class Device:
    name: str
    capacity: int
    speed: float = 1.0
    memory: float | None = None
    discipline: str = "fcfs"

    def __post_init__(self) -> None:
        coerce(self, _DEVICE)


@dataclass(frozen=True)
class Stage:
    """A fragment of a service placed on a device."""

    device: str
    work: float
    distribution: str = "det"
    scv: float | None = None
    job_memory: float = 0.0
    exit_prob: float = 0.0
    exit_accuracy: float | None = None
    fragment: str | None = None

    def __post_init__(self) -> None:
        coerce(self, _STAGE)

    @property
    def service_scv(self) -> float:
        """Squared coefficient of variation of the service requirement."""
        if self.distribution == "det":
            return 0.0
        if self.distribution == "exp":
            return 1.0
        return float(self.scv)


@dataclass(frozen=True)
class ServiceChain:
    name: str
    arrival_rate: float
    stages: tuple[Stage, ...]
    service: str | None = None

    def __post_init__(self) -> None:
        coerce(self, _CHAIN)
        object.__setattr__(self, "stages", items_of(self.stages, Stage, "ServiceChain.stages"))
        if self.service is None:
            object.__setattr__(self, "service", self.name)


@dataclass(frozen=True)
class Region:
    """A finite capacity region spanning several devices."""

    name: str
    devices: tuple[str, ...]
    capacity: int | None = None
    memory: float | None = None

    def __post_init__(self) -> None:
        devices = sequence(self.devices, "Region.devices")
        devices = tuple(text(d, f"Region.devices[{k}]") for k, d in enumerate(devices))
        object.__setattr__(self, "devices", devices)
        coerce(self, _REGION)


@dataclass(frozen=True)
class Scenario:
    devices: tuple[Device, ...]
    chains: tuple[ServiceChain, ...]
    regions: tuple[Region, ...] = ()
    name: str = ""
    _device_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", items_of(self.devices, Device, "Scenario.devices"))
        object.__setattr__(self, "chains", items_of(self.chains, ServiceChain, "Scenario.chains"))
        object.__setattr__(self, "regions", items_of(self.regions, Region, "Scenario.regions"))
        coerce(self, _SCENARIO)
        _validate(self)
        object.__setattr__(self, "_device_index", {d.name: i for i, d in enumerate(self.devices)})
        _warn_unadmittable(self)

    # ---- derived facts, used by every consumer -------------------------------------------------
    def device_of(self, stage: Stage) -> Device:
        return self.devices[self._device_index[stage.device]]

    def device_id(self, name: str) -> int:
        return self._device_index[name]

    def mean_service_time(self, stage: Stage) -> float:
        return stage.work / self.device_of(stage).speed

    def visit_probabilities(self, chain: ServiceChain) -> list[float]:
        """Probability that a job of `chain` reaches each stage when nothing is dropped."""
        out, p = [], 1.0
        for stage in chain.stages:
            out.append(p)
            p *= 1.0 - stage.exit_prob
        return out

    def offered_loads(self) -> list[float]:
        """Per device: sum over stages placed on it of rate x visit probability x service time."""
        load = [0.0] * len(self.devices)
        for chain in self.chains:
            for stage, v in zip(chain.stages, self.visit_probabilities(chain)):
                load[self._device_index[stage.device]] += (
                    chain.arrival_rate * v * self.mean_service_time(stage)
                )
        return load

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        out["devices"] = [_plain(d) for d in self.devices]
        if self.regions:
            out["regions"] = [_plain(r) for r in self.regions]
        chains = []
        for c in self.chains:
            d = _plain(c, skip=("stages",))
            if d.get("service") == c.name:
                del d["service"]
            d["stages"] = [_plain(s) for s in c.stages]
            chains.append(d)
        out["chains"] = chains
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "scenario") -> Scenario:
        return _parse_scenario(data, where)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str, where: str = "scenario") -> Scenario:
        return cls.from_dict(parse_json(text, where), where)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, where: str = "scenario") -> Scenario:
        return cls.from_dict(parse_yaml(text, where), where)

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """Read one scenario from a .json, .yaml or .yml file; errors start with the file's path."""
        data = load_document(path)
        try:
            return cls.from_dict(data)
        except ScenarioError as exc:
            raise exc.within(f"{path}: ") from None


def _plain(obj: Any, skip: Sequence[str] = ()) -> dict[str, Any]:
    out = {}
    for f in fields(obj):
        if not f.init or f.name in skip:
            continue
        v = getattr(obj, f.name)
        if v is None or (f.default is not None and v == f.default and f.name != "capacity"):
            continue
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def _parse_scenario(data: Any, where: str) -> Scenario:
    """Build a scenario from the fields `scenario_fields` read (each named in errors by `where`)."""
    f = scenario_fields(data, where)
    chains = [
        ServiceChain(
            c["name"], c["arrival_rate"], tuple(Stage(**s) for s in c["stages"]), c["service"]
        )
        for c in f["chains"]
    ]
    devices = tuple(Device(**d) for d in f["devices"])
    regions = tuple(Region(**r) for r in f["regions"])
    try:
        return Scenario(devices, tuple(chains), regions, f["name"])
    except ScenarioError as exc:
        raise exc.within(f"{where}.") from None


def _validate(sc: Scenario) -> None:
    if not sc.devices:
        raise ScenarioError("devices", [], "a scenario needs at least one device")
    if not sc.chains:
        raise ScenarioError("chains", [], "a scenario needs at least one chain")
    names: set[str] = set()
    for i, dev in enumerate(sc.devices):
        w = f"devices[{i}]"
        if dev.name in names:
            raise ScenarioError(f"{w}.name", dev.name, "device names must be unique")
        names.add(dev.name)
        capacity(dev.capacity, f"{w}.capacity")
        positive(dev.speed, f"{w}.speed")
        if dev.memory is not None:
            positive(dev.memory, f"{w}.memory")
        if dev.discipline not in DISCIPLINES:
            raise ScenarioError(f"{w}.discipline", dev.discipline, f"one of {DISCIPLINES}")
    speeds = {d.name: d.speed for d in sc.devices}
    chain_names: set[str] = set()
    for i, ch in enumerate(sc.chains):
        w = f"chains[{i}]"
        if ch.name in chain_names:
            raise ScenarioError(f"{w}.name", ch.name, "chain names must be unique")
        chain_names.add(ch.name)
        positive(ch.arrival_rate, f"{w}.arrival_rate")
        if not ch.stages:
            raise ScenarioError(f"{w}.stages", [], "a chain needs at least one stage")
        for k, st in enumerate(ch.stages):
            _validate_stage(st, f"{w}.stages[{k}]", speeds, k == len(ch.stages) - 1)
    region_names: set[str] = set()
    for i, reg in enumerate(sc.regions):
        w = f"regions[{i}]"
        if reg.name in region_names or reg.name in names:
            raise ScenarioError(f"{w}.name", reg.name, "region names must be unique")
        region_names.add(reg.name)
        if not reg.devices:
            raise ScenarioError(f"{w}.devices", [], "a region spans at least one device")
        for k, dn in enumerate(reg.devices):
            if dn not in names:
                raise ScenarioError(
                    f"{w}.devices[{k}]", dn, f"no such device; known: {sorted(names)}"
                )
        if len(set(reg.devices)) != len(reg.devices):
            raise ScenarioError(f"{w}.devices", list(reg.devices), "a device is listed twice")
        if reg.capacity is None and reg.memory is None:
            raise ScenarioError(w, reg.name, "a region needs a capacity, a memory limit, or both")
        if reg.capacity is not None:
            capacity(reg.capacity, f"{w}.capacity")
        if reg.memory is not None:
            positive(reg.memory, f"{w}.memory")


def _validate_stage(st: Stage, sw: str, speeds: dict[str, float], last: bool) -> None:
    """One stage's rules; `speeds`: each device's speed by name."""
    if st.device not in speeds:
        raise ScenarioError(f"{sw}.device", st.device, f"no such device; known: {sorted(speeds)}")
    positive(st.work, f"{sw}.work")
    service = st.work / speeds[st.device]
    if not 0.0 < service < math.inf:  # each finite, their ratio out of range
        raise ScenarioError(
            f"{sw}.work",
            st.work,
            f"work / device speed is {service:g}: the mean service "
            "time must be a finite number > 0 (rescale the time unit)",
        )
    if st.distribution not in DISTRIBUTIONS:
        raise ScenarioError(f"{sw}.distribution", st.distribution, f"one of {DISTRIBUTIONS}")
    if st.distribution == "general":
        if st.scv is None:
            raise ScenarioError(f"{sw}.scv", None, "'general' service needs scv > 0")
        positive(st.scv, f"{sw}.scv")
    elif st.scv is not None:
        raise ScenarioError(f"{sw}.scv", st.scv, "scv is only set for 'general' service")
    finite(st.job_memory, f"{sw}.job_memory")
    if st.job_memory < 0:
        raise ScenarioError(f"{sw}.job_memory", st.job_memory, "must be >= 0")
    probability(st.exit_prob, f"{sw}.exit_prob")
    if last and st.exit_prob != 0.0:
        raise ScenarioError(
            f"{sw}.exit_prob",
            st.exit_prob,
            "must be 0 on the last stage (all its jobs exit)",
        )
    if st.exit_accuracy is not None:
        probability(st.exit_accuracy, f"{sw}.exit_accuracy")


def _warn_unadmittable(sc: Scenario) -> None:
    """A `ScenarioWarning` for each stage whose job needs more memory than its device or one of
    the device's regions has: no job is ever admitted there (legal, but surely not meant)."""
    regions_of: dict[str, list[Region]] | None = None
    for i, ch in enumerate(sc.chains):
        for k, st in enumerate(ch.stages):
            if st.job_memory <= 0:
                continue
            if regions_of is None:
                regions_of = {}
                for reg in sc.regions:
                    for name in reg.devices:
                        regions_of.setdefault(name, []).append(reg)
            dev = sc.device_of(st)
            limits = [(f"device {dev.name!r}", dev.memory)]
            limits += [(f"region {r.name!r}", r.memory) for r in regions_of.get(dev.name, [])]
            for what, memory in limits:
                if memory is not None and st.job_memory > memory * (1 + MEMORY_SLACK):
                    warnings.warn(
                        f"chains[{i}].stages[{k}] (chain {ch.name!r}): job_memory "
                        f"{st.job_memory:g} is more than the memory {memory:g} of {what}; no job "
                        "is ever admitted there: every job reaching this stage is dropped (loss 1)",
                        ScenarioWarning,
                        stacklevel=4,
                    )
                    break
