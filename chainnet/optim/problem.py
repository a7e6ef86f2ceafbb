"""Deployment problems (SPEC section 6): the problem file, as plain frozen data, read and checked.

A problem file (YAML or JSON):

    name: two_cameras
    devices:
      - {name: gateway, speed: 1.0, capacity: 8, ram: 1024}
      - {name: edge1, speed: 4.0, capacity: 16, ram: 4096, discipline: ps}
    services:
      - name: detect
        arrival_rate: 0.8
        gateway: gateway           # optional: the first fragment's device is fixed
        fragments:
          - name: backbone
            work: 0.4              # mean work (service time = work / device speed)
            memory: 300            # MB of weights, held by the device that hosts the fragment
            job_memory: 20         # MB held by each resident job (optional)
            exit:                  # optional early exit after this fragment, one row per threshold
              - {threshold: 0.9, exit_prob: 0.2, accuracy: 0.88}
              - {threshold: 0.7, exit_prob: 0.5, accuracy: 0.80}
          - {name: head, work: 1.2, memory: 500, accuracy: 0.93}   # the full model's accuracy
      - name: digits               # fragments and exits from an early-exit profile: one decision,
        arrival_rate: 1.5          # the threshold vector (see `chainnet.optim.profiles`)
        profile: {path: profiles/digits.yaml, flops_per_work: 1.0e5, bytes_per_memory: 1024}
    objective: {kind: min_loss}    # or {kind: max_accuracy, max_loss: 0.05}

A service written out in full may give `exit_vectors` instead of per-fragment exit tables: rows of
`{thresholds: [...], exit_prob: [...], accuracy: [...]}`, one value per fragment (what a profile
gives, and what `to_dict` writes for a profile service).

`Problem.load(path)` and `Problem.from_dict(d)` read it; every field is checked when a `Problem` is
built (from a file or in code), and a mistake is one `ScenarioError` naming the field. A problem is
immutable (frozen dataclasses, tuples): what is derived from it (the decisions, the memory arrays)
lives in its search space (`chainnet.optim.space`), which also checks that some placement fits the
devices' RAM; the objective is computed in `chainnet.optim.objective`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from chainnet.documents import load_document
from chainnet.optim.mix import DEFAULT_SHARE_STEP, check_mix, coerce_mix, read_mix
from chainnet.optim.profiles import (
    VECTOR_KEYS,
    check_exit_vectors,
    expand_profile,
    read_exit_vector,
)
from chainnet.parsing import (
    ScenarioError,
    ScenarioTypeError,
    capacity,
    coerce,
    integer,
    items_of,
    mapping,
    maybe,
    number,
    positive,
    probability,
    real,
    sequence,
    spec,
    text,
)
from chainnet.scenario import DISCIPLINES, DISTRIBUTIONS

OBJECTIVES = ("min_loss", "max_accuracy")


@dataclass(frozen=True)
class ExitOption:
    threshold: float
    exit_prob: float
    accuracy: float | None = None

    def __post_init__(self) -> None:
        coerce(self, spec(threshold=real, exit_prob=real, accuracy=maybe(real)))


@dataclass(frozen=True)
class Fragment:
    name: str
    work: float
    memory: float = 0.0
    job_memory: float = 0.0
    distribution: str = "det"
    scv: float | None = None
    exit: tuple[ExitOption, ...] = ()
    accuracy: float | None = None  # the accuracy of a job that completes this (last) fragment

    def __post_init__(self) -> None:
        coerce(self, spec(name=text, work=real, memory=real, job_memory=real, distribution=text))
        coerce(self, spec(scv=maybe(real), accuracy=maybe(real)))
        object.__setattr__(self, "exit", items_of(self.exit, ExitOption, "Fragment.exit"))


@dataclass(frozen=True)
class ExitVector:
    """One choice of a service's exit thresholds (one per exit) and what it sets on each of its
    fragments: the exit probability (of the jobs that reach it) and the accuracy of those leaving
    there (None: none leave, or unknown)."""

    thresholds: tuple[float, ...]
    exit_prob: tuple[float, ...]
    accuracy: tuple[float | None, ...]

    def __post_init__(self) -> None:
        values = read_exit_vector({k: getattr(self, k) for k in VECTOR_KEYS}, "ExitVector")
        for key, value in values.items():
            object.__setattr__(self, key, value)


@dataclass(frozen=True)
class Service:
    name: str
    arrival_rate: float
    fragments: tuple[Fragment, ...]
    gateway: str | None = None
    exit_vectors: tuple[ExitVector, ...] = ()  # one decision for all exits (a profile service)
    alternatives: int = 1  # a mixed policy (`chainnet.optim.mix`): jobs split between deployments
    share_step: float = DEFAULT_SHARE_STEP  # the grid of the alternatives' probabilities
    shares: tuple[float, ...] = ()  # the probabilities fixed by hand (none: chosen)

    def __post_init__(self) -> None:
        coerce(self, spec(name=text, arrival_rate=real, gateway=maybe(text)))
        coerce_mix(self)
        object.__setattr__(
            self, "fragments", items_of(self.fragments, Fragment, "Service.fragments")
        )
        vectors = items_of(self.exit_vectors, ExitVector, "Service.exit_vectors")
        object.__setattr__(self, "exit_vectors", vectors)


@dataclass(frozen=True)
class HostDevice:
    name: str
    speed: float
    capacity: int
    ram: float | None = None
    discipline: str = "fcfs"

    def __post_init__(self) -> None:
        coerce(
            self, spec(name=text, speed=real, capacity=integer, ram=maybe(real), discipline=text)
        )


@dataclass(frozen=True)
class Objective:
    kind: str = "min_loss"
    max_loss: float | None = None
    penalty: float = 10.0

    def __post_init__(self) -> None:
        coerce(self, spec(kind=text, max_loss=maybe(real), penalty=real))


@dataclass(frozen=True)
class Problem:
    """Devices, services and the objective of one deployment problem, checked when built."""

    devices: tuple[HostDevice, ...]
    services: tuple[Service, ...]
    objective: Objective = field(default_factory=Objective)
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", items_of(self.devices, HostDevice, "Problem.devices"))
        object.__setattr__(self, "services", items_of(self.services, Service, "Problem.services"))
        if not isinstance(self.objective, Objective):
            raise ScenarioTypeError("Problem.objective", self.objective, "expected an Objective")
        coerce(self, spec(name=text))
        check_problem(self)

    @classmethod
    def load(cls, path: str | Path) -> Problem:
        """Read a problem file; a service's profile path is relative to the file's folder."""
        doc = load_document(path)
        return cls.from_dict(doc, where=f"problem {path}", base=Path(path).parent)

    @classmethod
    def from_dict(cls, d: Any, where: str = "problem", base: str | Path | None = None) -> Problem:
        """A problem from plain data; `base`: the folder of relative profile paths (None: the
        working directory)."""
        d = mapping(d, where, ("name", "devices", "services", "objective"), ("devices", "services"))
        devices = tuple(
            _device(x, f"{where}.devices[{i}]")
            for i, x in enumerate(sequence(d["devices"], f"{where}.devices"))
        )
        folder = None if base is None else Path(base)
        services = tuple(
            _service(x, f"{where}.services[{i}]", folder)
            for i, x in enumerate(sequence(d["services"], f"{where}.services"))
        )
        objective = _objective(d.get("objective") or {}, f"{where}.objective")
        return cls(devices, services, objective, text(d.get("name", ""), f"{where}.name"))

    def to_dict(self) -> dict[str, Any]:
        parts = {k: _plain(getattr(self, k)) for k in ("devices", "services", "objective")}
        return {"name": self.name, **parts}


# ---- reading: one function per kind of record ---------------------------------------------------
def _names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


def _device(x: Any, w: str) -> HostDevice:
    x = mapping(x, w, _names(HostDevice), ("name", "speed", "capacity"))
    return HostDevice(
        name=text(x["name"], f"{w}.name"),
        speed=number(x["speed"], f"{w}.speed"),
        capacity=integer(x["capacity"], f"{w}.capacity"),
        ram=maybe(number)(x.get("ram"), f"{w}.ram"),
        discipline=text(x.get("discipline", "fcfs"), f"{w}.discipline"),
    )


def _service(x: Any, w: str, base: Path | None) -> Service:
    x = mapping(x, w, [*_names(Service), "profile"], ("name", "arrival_rate"))
    if "profile" in x:
        x = expand_profile(x, w, base)
    elif "fragments" not in x:
        raise ScenarioError(f"{w}.fragments", None, "required field is missing (or a profile)")
    return Service(
        name=text(x["name"], f"{w}.name"),
        arrival_rate=number(x["arrival_rate"], f"{w}.arrival_rate"),
        fragments=tuple(
            _fragment(fr, k, f"{w}.fragments[{k}]")
            for k, fr in enumerate(sequence(x["fragments"], f"{w}.fragments"))
        ),
        gateway=maybe(text)(x.get("gateway"), f"{w}.gateway"),
        exit_vectors=tuple(
            ExitVector(**read_exit_vector(o, f"{w}.exit_vectors[{i}]"))
            for i, o in enumerate(sequence(x.get("exit_vectors") or [], f"{w}.exit_vectors"))
        ),
        **read_mix(x, w),
    )


def _fragment(fr: Any, k: int, w: str) -> Fragment:
    fr = mapping(fr, w, _names(Fragment), ("work",))
    return Fragment(
        name=text(fr.get("name", f"f{k}"), f"{w}.name"),
        work=number(fr["work"], f"{w}.work"),
        memory=number(fr.get("memory", 0.0), f"{w}.memory"),
        job_memory=number(fr.get("job_memory", 0.0), f"{w}.job_memory"),
        distribution=text(fr.get("distribution", "det"), f"{w}.distribution"),
        scv=maybe(number)(fr.get("scv"), f"{w}.scv"),
        exit=tuple(
            _exit_option(o, j, f"{w}.exit[{j}]")
            for j, o in enumerate(sequence(fr.get("exit") or [], f"{w}.exit"))
        ),
        accuracy=maybe(number)(fr.get("accuracy"), f"{w}.accuracy"),
    )


def _exit_option(o: Any, j: int, w: str) -> ExitOption:
    o = mapping(o, w, ("threshold", "exit_prob", "accuracy"), ("exit_prob",))
    return ExitOption(
        threshold=number(o.get("threshold", j), f"{w}.threshold"),
        exit_prob=number(o["exit_prob"], f"{w}.exit_prob"),
        accuracy=maybe(number)(o.get("accuracy"), f"{w}.accuracy"),
    )


def _objective(obj: Any, w: str) -> Objective:
    obj = mapping(obj, w, _names(Objective), ())
    return Objective(
        kind=text(obj.get("kind", "min_loss"), f"{w}.kind"),
        max_loss=maybe(number)(obj.get("max_loss"), f"{w}.max_loss"),
        penalty=number(obj.get("penalty", 10.0), f"{w}.penalty"),
    )


def _plain(obj: Any) -> Any:
    """Dataclasses and tuples as dicts and lists, without the fields left unset (a service's
    at their defaults: its mix fields)."""
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return {
            k: _plain(getattr(obj, k))
            for k, f in obj.__dataclass_fields__.items()
            if getattr(obj, k) not in (None, ())
            and not (isinstance(obj, Service) and getattr(obj, k) == f.default)
        }
    return obj


# ---- checking: every field, with its path --------------------------------------------------------
def check_problem(problem: Problem) -> None:
    """Raise a `ScenarioError` naming the first invalid field of `problem`."""
    w = f"problem {problem.name}".strip()
    devices, services, objective = problem.devices, problem.services, problem.objective
    if not devices:
        raise ScenarioError(f"{w}.devices", [], "at least one device")
    if len({d.name for d in devices}) != len(devices):
        raise ScenarioError(f"{w}.devices", [d.name for d in devices], "unique names")
    if not services:
        raise ScenarioError(f"{w}.services", [], "at least one service")
    if objective.kind not in OBJECTIVES:
        raise ScenarioError(f"{w}.objective.kind", objective.kind, f"one of {OBJECTIVES}")
    if not (math.isfinite(objective.penalty) and objective.penalty >= 0):
        raise ScenarioError(f"{w}.objective.penalty", objective.penalty, "a number >= 0")
    names = [sv.name for sv in services]
    if len(set(names)) != len(names):
        raise ScenarioError(f"{w}.services", names, "service names must be unique")
    if objective.kind == "max_accuracy":
        ml = objective.max_loss
        if ml is None or not 0.0 <= ml <= 1.0:
            raise ScenarioError(
                f"{w}.objective.max_loss", ml, "max_accuracy needs a loss target in [0, 1]"
            )
    for i, dev in enumerate(devices):
        _check_device(dev, f"{w}.devices[{i}]")
    for i, sv in enumerate(services):
        _check_service(sv, f"{w}.services[{i}]", devices, objective.kind)


def _check_device(dev: HostDevice, dw: str) -> None:
    for key in ("speed", "ram"):
        v = getattr(dev, key)
        if v is not None:
            positive(v, f"{dw}.{key}")
    capacity(dev.capacity, f"{dw}.capacity")
    if dev.discipline not in DISCIPLINES:
        raise ScenarioError(f"{dw}.discipline", dev.discipline, f"one of {DISCIPLINES}")


def _check_service(sv: Service, sw: str, devices: tuple[HostDevice, ...], kind: str) -> None:
    device_names = {d.name for d in devices}
    positive(sv.arrival_rate, f"{sw}.arrival_rate")
    if not sv.fragments:
        raise ScenarioError(f"{sw}.fragments", [], "at least one fragment")
    if sv.gateway is not None and sv.gateway not in device_names:
        raise ScenarioError(f"{sw}.gateway", sv.gateway, "the name of a device")
    check_mix(sv, sw)
    frag_names = [fr.name for fr in sv.fragments]
    if len(set(frag_names)) != len(frag_names):
        raise ScenarioError(f"{sw}.fragments", frag_names, "fragment names must be unique")
    last = len(sv.fragments) - 1
    if sv.exit_vectors:
        check_exit_vectors(sv, sw, kind)
    for k, fr in enumerate(sv.fragments):
        _check_fragment(fr, f"{sw}.fragments[{k}]", k == last and not sv.exit_vectors, kind)
        hosts = [d for d in devices if d.name == sv.gateway] if k == 0 and sv.gateway else devices
        _check_fits(fr, f"{sw}.fragments[{k}]", hosts, sv.gateway if k == 0 else None)


def _check_fits(fr: Fragment, fw: str, hosts: list[HostDevice], gateway: str | None) -> None:
    """The fragment's weights and one job fit the RAM of some device it may be placed on (as
    `SearchSpace.overfull` counts them), or no deployment can hold it."""
    rams = [math.inf if d.ram is None else d.ram for d in hosts]
    if any(fr.memory <= r and (fr.job_memory <= 0 or r - fr.memory >= fr.job_memory) for r in rams):
        return
    on = f"the RAM {rams[0]:g} of its gateway {gateway!r}" if gateway else "any device's RAM"
    on += "" if gateway else f" (the largest is {max(rams):g})"
    need = "no placement fits the devices' RAM: its weights"
    if any(fr.memory <= r for r in rams):
        need += f" ({fr.memory:g}) and one job ({fr.job_memory:g}) need more than {on}"
        raise ScenarioError(f"{fw}.job_memory", fr.job_memory, need)
    raise ScenarioError(f"{fw}.memory", fr.memory, f"{need} need more than {on}")


def _check_fragment(fr: Fragment, fw: str, last: bool, kind: str) -> None:
    positive(fr.work, f"{fw}.work")
    for key in ("memory", "job_memory"):
        v = getattr(fr, key)
        if not (math.isfinite(v) and v >= 0):
            raise ScenarioError(f"{fw}.{key}", v, "memory sizes must be finite numbers >= 0")
    if fr.distribution not in DISTRIBUTIONS:
        raise ScenarioError(f"{fw}.distribution", fr.distribution, f"one of {DISTRIBUTIONS}")
    if (fr.distribution == "general") != (fr.scv is not None):
        raise ScenarioError(f"{fw}.scv", fr.scv, "set (> 0) for 'general' service, and only then")
    if fr.scv is not None:
        positive(fr.scv, f"{fw}.scv")
    if fr.accuracy is not None:
        probability(fr.accuracy, f"{fw}.accuracy")
    if fr.exit and last:
        raise ScenarioError(f"{fw}.exit", "...", "the last fragment cannot have an exit")
    thresholds = [o.threshold for o in fr.exit]
    if not all(math.isfinite(t) for t in thresholds) or len(set(thresholds)) != len(thresholds):
        raise ScenarioError(f"{fw}.exit", thresholds, "thresholds must be finite and distinct")
    for j, o in enumerate(fr.exit):
        if not 0.0 <= o.exit_prob < 1.0:
            raise ScenarioError(f"{fw}.exit[{j}].exit_prob", o.exit_prob, "in [0, 1)")
        if o.accuracy is not None and not 0.0 <= o.accuracy <= 1.0:
            raise ScenarioError(f"{fw}.exit[{j}].accuracy", o.accuracy, "in [0, 1]")
    if kind == "max_accuracy":
        if last and fr.accuracy is None:
            raise ScenarioError(f"{fw}.accuracy", None, "max_accuracy needs the final accuracy")
        if any(o.accuracy is None for o in fr.exit):
            raise ScenarioError(f"{fw}.exit", "...", "max_accuracy needs every exit row's accuracy")
