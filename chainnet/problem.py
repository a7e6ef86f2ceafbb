"""Deployment problems (SPEC section 6): where each DNN fragment runs, and when each exit fires.

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
    objective: {kind: min_loss}    # or {kind: max_accuracy, max_loss: 0.05}

Decisions: the device of every fragment (a gateway fixes a service's first), and the threshold row
of every exit. A candidate is one integer vector: placement genes (device indices) for every
fragment, then threshold genes (row indices) for every exit.

Memory: a device holds the weights of the fragments it hosts (their sum must fit its `ram`); what
is left of its RAM is the region memory that resident jobs share, so crowding weights onto a device
leaves room for fewer jobs. A device that hosts no fragment with `job_memory` has no memory limit.

Objectives, lower is better:
- `min_loss`: the arrival-weighted loss ratio of all services;
- `max_accuracy`: minus the expected accuracy of served jobs (weighted by throughput), plus
  `penalty` x (loss - max_loss) where the loss exceeds `max_loss`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from chainnet.scenario import (
    Device,
    Scenario,
    ScenarioError,
    ServiceChain,
    Stage,
    _integer,
    _list,
    _mapping,
    _number,
    _opt,
    _text,
    load_document,
)

OBJECTIVES = ("min_loss", "max_accuracy")


@dataclass(frozen=True)
class ExitOption:
    threshold: float
    exit_prob: float
    accuracy: float | None = None


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


@dataclass(frozen=True)
class Service:
    name: str
    arrival_rate: float
    fragments: tuple[Fragment, ...]
    gateway: str | None = None


@dataclass(frozen=True)
class HostDevice:
    name: str
    speed: float
    capacity: int
    ram: float | None = None
    discipline: str = "fcfs"


@dataclass(frozen=True)
class Objective:
    kind: str = "min_loss"
    max_loss: float | None = None
    penalty: float = 10.0


@dataclass
class Problem:
    devices: tuple[HostDevice, ...]
    services: tuple[Service, ...]
    objective: Objective = field(default_factory=Objective)
    name: str = ""

    def __post_init__(self) -> None:
        self.devices, self.services = tuple(self.devices), tuple(self.services)
        self._device_index = {d.name: i for i, d in enumerate(self.devices)}
        # genes: (service, fragment) per placement gene, then (service, fragment) per exit gene
        self.fragments = [
            (s, f) for s, sv in enumerate(self.services) for f in range(len(sv.fragments))
        ]
        self.exits = [
            (s, f)
            for s, sv in enumerate(self.services)
            for f, fr in enumerate(sv.fragments)
            if fr.exit
        ]
        self.domains = np.array(
            [self._placement_domain(s, f) for s, f in self.fragments]
            + [len(self.services[s].fragments[f].exit) for s, f in self.exits],
            dtype=np.int64,
        )
        self._check()

    # ---- reading and checking ------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Problem:
        return cls.from_dict(load_document(path), where=f"problem {path}")

    @classmethod
    def from_dict(cls, d: Any, where: str = "problem") -> Problem:
        keys = ("name", "devices", "services", "objective")
        d = _mapping(d, where, keys, ("devices", "services"))
        devices = []
        for i, x in enumerate(_list(d["devices"], f"{where}.devices")):
            w = f"{where}.devices[{i}]"
            x = _mapping(x, w, [f.name for f in fields(HostDevice)], ("name", "speed", "capacity"))
            devices.append(
                HostDevice(
                    name=_text(x["name"], f"{w}.name"),
                    speed=_number(x["speed"], f"{w}.speed"),
                    capacity=_integer(x["capacity"], f"{w}.capacity"),
                    ram=_opt(x.get("ram"), _number, f"{w}.ram"),
                    discipline=_text(x.get("discipline", "fcfs"), f"{w}.discipline"),
                )
            )
        services = []
        for i, x in enumerate(_list(d["services"], f"{where}.services")):
            w = f"{where}.services[{i}]"
            x = _mapping(
                x, w, [f.name for f in fields(Service)], ("name", "arrival_rate", "fragments")
            )
            frags = []
            for k, fr in enumerate(_list(x["fragments"], f"{w}.fragments")):
                fw = f"{w}.fragments[{k}]"
                fr = _mapping(fr, fw, [f.name for f in fields(Fragment)], ("work",))
                options = []
                for j, o in enumerate(_list(fr.get("exit") or [], f"{fw}.exit")):
                    ow = f"{fw}.exit[{j}]"
                    o = _mapping(o, ow, ("threshold", "exit_prob", "accuracy"), ("exit_prob",))
                    options.append(
                        ExitOption(
                            threshold=_number(o.get("threshold", j), f"{ow}.threshold"),
                            exit_prob=_number(o["exit_prob"], f"{ow}.exit_prob"),
                            accuracy=_opt(o.get("accuracy"), _number, f"{ow}.accuracy"),
                        )
                    )
                frags.append(
                    Fragment(
                        name=_text(fr.get("name", f"f{k}"), f"{fw}.name"),
                        work=_number(fr["work"], f"{fw}.work"),
                        memory=_number(fr.get("memory", 0.0), f"{fw}.memory"),
                        job_memory=_number(fr.get("job_memory", 0.0), f"{fw}.job_memory"),
                        distribution=_text(fr.get("distribution", "det"), f"{fw}.distribution"),
                        scv=_opt(fr.get("scv"), _number, f"{fw}.scv"),
                        exit=tuple(options),
                        accuracy=_opt(fr.get("accuracy"), _number, f"{fw}.accuracy"),
                    )
                )
            services.append(
                Service(
                    name=_text(x["name"], f"{w}.name"),
                    arrival_rate=_number(x["arrival_rate"], f"{w}.arrival_rate"),
                    fragments=tuple(frags),
                    gateway=_opt(x.get("gateway"), _text, f"{w}.gateway"),
                )
            )
        ow = f"{where}.objective"
        obj = _mapping(d.get("objective") or {}, ow, [f.name for f in fields(Objective)], ())
        objective = Objective(
            kind=_text(obj.get("kind", "min_loss"), f"{ow}.kind"),
            max_loss=_opt(obj.get("max_loss"), _number, f"{ow}.max_loss"),
            penalty=_number(obj.get("penalty", 10.0), f"{ow}.penalty"),
        )
        return cls(devices, services, objective, _text(d.get("name", ""), f"{where}.name"))

    def to_dict(self) -> dict[str, Any]:
        def clean(obj: Any) -> Any:
            if isinstance(obj, (list, tuple)):
                return [clean(v) for v in obj]
            if hasattr(obj, "__dataclass_fields__"):
                return {
                    k: clean(getattr(obj, k))
                    for k in obj.__dataclass_fields__
                    if getattr(obj, k) is not None and getattr(obj, k) != ()
                }
            return obj

        return {
            "name": self.name,
            "devices": clean(self.devices),
            "services": clean(self.services),
            "objective": clean(self.objective),
        }

    def _placement_domain(self, s: int, f: int) -> int:
        return 1 if (f == 0 and self.services[s].gateway is not None) else len(self.devices)

    def _check(self) -> None:
        w = f"problem {self.name}".strip()
        if not self.devices:
            raise ScenarioError(f"{w}.devices", [], "at least one device")
        if len(self._device_index) != len(self.devices):
            raise ScenarioError(f"{w}.devices", [d.name for d in self.devices], "unique names")
        if not self.services:
            raise ScenarioError(f"{w}.services", [], "at least one service")
        if self.objective.kind not in OBJECTIVES:
            raise ScenarioError(f"{w}.objective.kind", self.objective.kind, f"one of {OBJECTIVES}")
        if not (math.isfinite(self.objective.penalty) and self.objective.penalty >= 0):
            raise ScenarioError(f"{w}.objective.penalty", self.objective.penalty, "a number >= 0")
        names = [sv.name for sv in self.services]
        if len(set(names)) != len(names):
            raise ScenarioError(f"{w}.services", names, "service names must be unique")
        if self.objective.kind == "max_accuracy":
            ml = self.objective.max_loss
            if ml is None or not 0.0 <= ml <= 1.0:
                raise ScenarioError(
                    f"{w}.objective.max_loss", ml, "max_accuracy needs a loss target in [0, 1]"
                )
        for i, dev in enumerate(self.devices):
            dw = f"{w}.devices[{i}]"
            for key in ("speed", "ram"):
                v = getattr(dev, key)
                if v is not None and not (math.isfinite(v) and v > 0):
                    raise ScenarioError(f"{dw}.{key}", v, "must be a finite number > 0")
            if dev.capacity < 1:
                raise ScenarioError(f"{dw}.capacity", dev.capacity, "must be an integer >= 1")
        for i, sv in enumerate(self.services):
            sw = f"{w}.services[{i}]"
            if not (math.isfinite(sv.arrival_rate) and sv.arrival_rate > 0):
                raise ScenarioError(f"{sw}.arrival_rate", sv.arrival_rate, "must be > 0")
            if not sv.fragments:
                raise ScenarioError(f"{sw}.fragments", [], "at least one fragment")
            if sv.gateway is not None and sv.gateway not in self._device_index:
                raise ScenarioError(f"{sw}.gateway", sv.gateway, "the name of a device")
            frag_names = [fr.name for fr in sv.fragments]
            if len(set(frag_names)) != len(frag_names):
                raise ScenarioError(f"{sw}.fragments", frag_names, "fragment names must be unique")
            last = len(sv.fragments) - 1
            for k, fr in enumerate(sv.fragments):
                fw = f"{sw}.fragments[{k}]"
                if not (math.isfinite(fr.work) and fr.work > 0):
                    raise ScenarioError(f"{fw}.work", fr.work, "must be a finite number > 0")
                if fr.memory < 0 or fr.job_memory < 0:
                    raise ScenarioError(f"{fw}.memory", fr.memory, "memory sizes must be >= 0")
                if fr.exit and k == last:
                    raise ScenarioError(
                        f"{fw}.exit", "...", "the last fragment cannot have an exit"
                    )
                for j, o in enumerate(fr.exit):
                    if not 0.0 <= o.exit_prob < 1.0:
                        raise ScenarioError(f"{fw}.exit[{j}].exit_prob", o.exit_prob, "in [0, 1)")
                    if o.accuracy is not None and not 0.0 <= o.accuracy <= 1.0:
                        raise ScenarioError(f"{fw}.exit[{j}].accuracy", o.accuracy, "in [0, 1]")
                if self.objective.kind == "max_accuracy":
                    if k == last and fr.accuracy is None:
                        raise ScenarioError(
                            f"{fw}.accuracy", None, "max_accuracy needs the final accuracy"
                        )
                    if any(o.accuracy is None for o in fr.exit):
                        raise ScenarioError(
                            f"{fw}.exit", "...", "max_accuracy needs every exit row's accuracy"
                        )
        # Some placement must fit the devices' RAM, and its scenario must be valid (fragments'
        # distributions, scv, memory against RAM), with the problem's path in the message.
        example = self.random_candidate(np.random.default_rng(0))
        if example is None:
            raise ScenarioError(w, self.name, "no placement found that fits the devices' RAM")
        try:
            self.scenario(example)
        except ScenarioError as exc:
            raise ScenarioError(w, self.name, f"its deployments are invalid: {exc}") from None

    # ---- candidates ----------------------------------------------------------------------------
    @property
    def n_placement(self) -> int:
        return len(self.fragments)

    def space_size(self) -> float:
        return float(np.prod(self.domains.astype(float)))

    def device_of(self, candidate: np.ndarray) -> np.ndarray:
        """The device index of every fragment (gene order)."""
        out = candidate[: self.n_placement].copy()
        for g, (s, f) in enumerate(self.fragments):
            if f == 0 and self.services[s].gateway is not None:
                out[g] = self._device_index[self.services[s].gateway]
        return out

    def memory_use(self, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per device: the weights it holds, and the largest job memory of what it hosts."""
        weights = np.zeros(len(self.devices))
        job = np.zeros(len(self.devices))
        for d, (s, f) in zip(self.device_of(candidate), self.fragments):
            fr = self.services[s].fragments[f]
            weights[d] += fr.memory
            job[d] = max(job[d], fr.job_memory)
        return weights, job

    def overfull(self, candidate: np.ndarray) -> np.ndarray:
        """Per device: its fragments' weights exceed its RAM, or leave no room for one job."""
        weights, job = self.memory_use(candidate)
        ram = np.array([math.inf if d.ram is None else d.ram for d in self.devices])
        return (weights > ram) | ((job > 0) & (ram - weights < job))

    def feasible(self, candidate: np.ndarray) -> bool:
        return not self.overfull(candidate).any()

    def random_candidate(self, rng: np.random.Generator, tries: int = 20) -> np.ndarray | None:
        """A random feasible candidate: a uniform draw, repaired if it does not fit; None if no
        repair finds room (then the greedy repair, most free RAM first, has the last word)."""
        for _ in range(tries):
            c = rng.integers(0, self.domains)
            if self.feasible(c):
                return c
            c = self.repair(c, rng)
            if c is not None:
                return c
        return self.repair(rng.integers(0, self.domains), None)

    def repair(self, candidate: np.ndarray, rng: np.random.Generator | None) -> np.ndarray | None:
        """`candidate` made feasible by moving fragments off over-full devices, each to the device
        with the most free RAM (or, half the time with `rng`, a random one); None if stuck."""
        c = candidate.copy()
        ram = np.array([math.inf if d.ram is None else d.ram for d in self.devices])
        for _ in range(3 * self.n_placement + 1):
            bad = self.overfull(c)
            if not bad.any():
                return c
            dev = self.device_of(c)
            movable = [g for g in range(self.n_placement) if self.domains[g] > 1 and bad[dev[g]]]
            if not movable:  # only fixed gateway fragments overfill a device
                return None
            g = movable[0] if rng is None else movable[int(rng.integers(len(movable)))]
            if rng is None or rng.random() < 0.5:
                c[g] = int(np.argmax(ram - self.memory_use(c)[0]))
            else:
                c[g] = int(rng.integers(self.domains[g]))
        return c if self.feasible(c) else None

    def neighbour(self, candidate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One gene changed (a fragment moved, or an exit's threshold changed), kept feasible."""
        free = np.flatnonzero(self.domains > 1)
        if not len(free):
            return candidate.copy()
        for _ in range(20):
            c = candidate.copy()
            g = int(rng.choice(free))
            c[g] = (c[g] + rng.integers(1, self.domains[g])) % self.domains[g]
            if self.feasible(c):
                return c
            c = self.repair(c, rng)
            if c is not None:
                return c
        return candidate.copy()

    def enumerate_feasible(self, limit: int = 200_000):
        """Every feasible candidate (for exhaustive search); refuses a space larger than `limit`."""
        if self.space_size() > limit:
            raise ValueError(
                f"strategy=exhaustive: {self.space_size():.3g} candidates, over the limit of "
                f"{limit:,}; use another strategy or a smaller problem"
            )
        for genes in itertools.product(*(range(int(n)) for n in self.domains)):
            c = np.array(genes, dtype=np.int64)
            if self.feasible(c):
                yield c

    # ---- from a candidate to a scenario, and to an objective ----------------------------------
    def scenario(self, candidate: np.ndarray) -> Scenario:
        """The scenario a (feasible) candidate deploys."""
        dev = self.device_of(candidate)
        weights, job = self.memory_use(candidate)
        devices = [
            Device(
                d.name,
                capacity=d.capacity,
                speed=d.speed,
                memory=float(d.ram - weights[i]) if (d.ram is not None and job[i] > 0) else None,
                discipline=d.discipline,
            )
            for i, d in enumerate(self.devices)
        ]
        row = dict(zip(self.exits, candidate[self.n_placement :]))
        chains, g = [], 0
        for s, sv in enumerate(self.services):
            stages = []
            for f, fr in enumerate(sv.fragments):
                opt = fr.exit[int(row[(s, f)])] if fr.exit else None
                stages.append(
                    Stage(
                        self.devices[dev[g]].name,
                        fr.work,
                        distribution=fr.distribution,
                        scv=fr.scv,
                        job_memory=fr.job_memory,
                        exit_prob=opt.exit_prob if opt else 0.0,
                        exit_accuracy=opt.accuracy if opt else fr.accuracy,
                        fragment=fr.name,
                    )
                )
                g += 1
            chains.append(ServiceChain(sv.name, sv.arrival_rate, stages))
        return Scenario(devices, chains, name=self.name)

    def objective_value(
        self, loss_ratio: np.ndarray, accuracy: np.ndarray
    ) -> tuple[float, float, float]:
        """(objective, overall loss ratio, accuracy of served jobs) from per-service QoS."""
        rates = np.array([sv.arrival_rate for sv in self.services])
        loss = float(np.sum(rates * loss_ratio) / rates.sum())
        served = rates * (1.0 - loss_ratio)
        # Over the services that served jobs (one that completed nothing has no accuracy).
        counted = (served > 0) & np.isfinite(accuracy)
        acc = (
            float(np.sum(served[counted] * accuracy[counted]) / served[counted].sum())
            if counted.any()
            else math.nan
        )
        if self.objective.kind == "min_loss":
            return loss, loss, acc
        over = max(0.0, loss - float(self.objective.max_loss))
        return (-acc if np.isfinite(acc) else 0.0) + self.objective.penalty * over, loss, acc

    def describe(self, candidate: np.ndarray) -> dict[str, Any]:
        """The decisions of a candidate, by name."""
        dev = self.device_of(candidate)
        placement = {
            f"{self.services[s].name}/{self.services[s].fragments[f].name}": self.devices[d].name
            for d, (s, f) in zip(dev, self.fragments)
        }
        thresholds = {
            f"{self.services[s].name}/{self.services[s].fragments[f].name}": self.services[s]
            .fragments[f]
            .exit[int(r)]
            .threshold
            for r, (s, f) in zip(candidate[self.n_placement :], self.exits)
        }
        return {"placement": placement, "thresholds": thresholds}


# ---- random problems (tests, experiments) ------------------------------------------------------
def random_problem(
    rng: np.random.Generator,
    devices: tuple[int, int] = (3, 5),
    services: tuple[int, int] = (1, 3),
    fragments: tuple[int, int] = (2, 4),
    exit_share: float = 0.5,
    objective: str = "min_loss",
    name: str = "",
) -> Problem:
    """A random edge deployment problem, drawn like the `edge` preset's scenarios."""
    n_dev = int(rng.integers(devices[0], devices[1] + 1))
    devs = [
        HostDevice(
            f"d{i}",
            speed=float(np.exp(rng.uniform(np.log(0.5), np.log(8.0)))),
            capacity=int(rng.integers(2, 31)),
            ram=float(np.exp(rng.uniform(np.log(1024.0), np.log(4096.0)))),
            discipline="ps" if rng.random() < 0.4 else "fcfs",
        )
        for i in range(n_dev)
    ]
    total_speed = sum(d.speed for d in devs)
    n_srv = int(rng.integers(services[0], services[1] + 1))
    svcs = []
    works = []
    for s in range(n_srv):
        n_frag = int(rng.integers(fragments[0], fragments[1] + 1))
        accs = np.sort(rng.uniform(0.55, 0.95, size=n_frag))
        frags = []
        for k in range(n_frag):
            exit_rows: tuple[ExitOption, ...] = ()
            if k < n_frag - 1 and rng.random() < exit_share:
                base = float(accs[k])
                exit_rows = tuple(
                    ExitOption(t, p, round(min(0.99, base + 0.1 * (t - 0.5)), 4))
                    for t, p in ((0.9, 0.1), (0.7, 0.3), (0.5, 0.5))
                )
            general = rng.random() < 0.7
            scv = float(np.exp(rng.uniform(np.log(0.2), np.log(4.0)))) if general else None
            frags.append(
                Fragment(
                    f"f{k}",
                    work=float(np.exp(rng.uniform(np.log(0.05), np.log(2.0)))),
                    memory=float(rng.uniform(50.0, 600.0)),
                    job_memory=float(np.exp(rng.uniform(np.log(16.0), np.log(256.0)))),
                    distribution="general" if general else "exp",
                    scv=scv,
                    exit=exit_rows,
                    accuracy=float(accs[k]) if k == n_frag - 1 else None,
                )
            )
        works.append(sum(f.work for f in frags))
        svcs.append(Service(f"s{s}", 1.0, tuple(frags), gateway=devs[s % n_dev].name))
    # Rates that load the system as a whole to 0.6-1.1 of its total speed: placement matters.
    target = rng.uniform(0.6, 1.1) * total_speed
    shares = rng.dirichlet(np.ones(n_srv))
    svcs = [
        Service(sv.name, float(target * sh / w), sv.fragments, sv.gateway)
        for sv, sh, w in zip(svcs, shares, works)
    ]
    obj = Objective("max_accuracy", max_loss=0.05) if objective == "max_accuracy" else Objective()
    return Problem(devs, svcs, obj, name)
