"""Random deployment problems: `random_problem`, drawn like the `edge` preset's scenarios, and the
problem families of `problem_family` (small, medium, large), with gateways, RAM that binds and a
load drawn from light to overloaded, for studies of the optimizer across problem sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from chainnet.optim.problem import (
    OBJECTIVES,
    ExitOption,
    Fragment,
    HostDevice,
    Objective,
    Problem,
    Service,
)
from chainnet.optim.space import SearchSpace
from chainnet.parsing import ScenarioError


def random_problem(
    rng: np.random.Generator,
    devices: tuple[int, int] = (3, 5),
    services: tuple[int, int] = (1, 3),
    fragments: tuple[int, int] = (2, 4),
    exit_share: float = 0.5,
    objective: str = "min_loss",
    name: str = "",
) -> Problem:
    """A random edge deployment problem: `devices`, `services` and `fragments` per service are
    (min, max) ranges; `exit_share` of the fragments but the last have an exit of three rows."""
    n_dev = int(rng.integers(devices[0], devices[1] + 1))
    devs = tuple(
        HostDevice(
            f"d{i}",
            speed=float(np.exp(rng.uniform(np.log(0.5), np.log(8.0)))),
            capacity=int(rng.integers(2, 31)),
            ram=float(np.exp(rng.uniform(np.log(1024.0), np.log(4096.0)))),
            discipline="ps" if rng.random() < 0.4 else "fcfs",
        )
        for i in range(n_dev)
    )
    total_speed = sum(d.speed for d in devs)
    n_srv = int(rng.integers(services[0], services[1] + 1))
    svcs = []
    works = []
    for s in range(n_srv):
        n_frag = int(rng.integers(fragments[0], fragments[1] + 1))
        frags = _random_fragments(rng, n_frag, exit_share)
        works.append(sum(f.work for f in frags))
        svcs.append(Service(f"s{s}", 1.0, frags, gateway=devs[s % n_dev].name))
    # Rates that load the system as a whole to 0.6-1.1 of its total speed: placement matters.
    target = rng.uniform(0.6, 1.1) * total_speed
    shares = rng.dirichlet(np.ones(n_srv))
    loaded = tuple(
        Service(sv.name, float(target * sh / w), sv.fragments, sv.gateway)
        for sv, sh, w in zip(svcs, shares, works)
    )
    obj = Objective("max_accuracy", max_loss=0.05) if objective == "max_accuracy" else Objective()
    return Problem(devs, loaded, obj, name)


def _random_fragments(
    rng: np.random.Generator, n_frag: int, exit_share: float
) -> tuple[Fragment, ...]:
    """The fragments of one service, accuracy rising along the chain."""
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
    return tuple(frags)


# ---- problem families: small, medium and large deployments for studies across problem sizes ----
@dataclass(frozen=True)
class Family:
    """The ranges of one problem family: (min, max) devices, services and fragments per service."""

    devices: tuple[int, int]
    services: tuple[int, int]
    fragments: tuple[int, int]


FAMILIES = {
    # at most 4 devices, 4 free placement genes and 2 exits: at most 2,304 candidates
    "small": Family(devices=(3, 4), services=(2, 2), fragments=(2, 3)),
    "medium": Family(devices=(4, 8), services=(2, 4), fragments=(2, 5)),
    "large": Family(devices=(20, 40), services=(6, 12), fragments=(3, 8)),
}
LOAD = (0.2, 1.5)  # the system load drawn, uniform: light (< 0.5) to overloaded (> 1)
WEIGHTS_SHARE = (0.35, 0.6)  # the non-gateway fragments' weights as a share of the workers' RAM
GATEWAY_LOAD = 0.7  # the most offered load the gateway-fixed first fragments put on a gateway
TRIES = 50  # draws before a family gives up (a draw is redone when it breaks a family rule)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def mean_work(service: Service) -> float:
    """A job's mean work when every exit uses its least-exiting row (the most accurate setting):
    the most work the service's thresholds let a job bring."""
    total, reach = 0.0, 1.0
    for fr in service.fragments:
        total += reach * fr.work
        reach *= 1.0 - min((o.exit_prob for o in fr.exit), default=0.0)
    return total


def system_load(problem: Problem) -> float:
    """The load of a problem: the work arriving per unit time (`mean_work` times the arrival rate,
    summed over services) over the devices' total speed. Above 1, every placement overloads some
    device unless lower thresholds let jobs leave early."""
    work = sum(sv.arrival_rate * mean_work(sv) for sv in problem.services)
    return work / sum(d.speed for d in problem.devices)


def ram_binds(problem: Problem) -> bool:
    """The fragments' weights together exceed the RAM of the fastest quarter of the devices (at
    least one): the fastest devices cannot host everything."""
    devices = sorted(problem.devices, key=lambda d: -d.speed)[: max(1, len(problem.devices) // 4)]
    ram = sum(math.inf if d.ram is None else d.ram for d in devices)
    return sum(fr.memory for sv in problem.services for fr in sv.fragments) > ram


def problem_family(name: str, seed: int, objective: str = "min_loss") -> Problem:
    """A random deployment problem of family `name` (small, medium or large; see `FAMILIES`),
    the same for the same seed. Gateways (slow, small RAM) host the first fragment of the services
    assigned to them; workers have log-uniform speed and RAM; the weights of the other fragments
    fill 35-60 % of the workers' RAM, and the fastest quarter of the devices cannot hold them all;
    exits sit on about half of the non-final fragments; the system load (`system_load`) is drawn
    from 0.2 to 1.5. `objective`: min_loss, or max_accuracy with a loss target of 5 %."""
    if name not in FAMILIES:
        raise ValueError(f"family: got {name!r}; one of {', '.join(sorted(FAMILIES))}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: got {seed!r}; expected an integer >= 0")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: got {objective!r}; one of {', '.join(OBJECTIVES)}")
    rng = np.random.default_rng([int(seed), sorted(FAMILIES).index(name)])
    for _ in range(TRIES):
        try:
            problem = _draw_family(rng, FAMILIES[name], objective, f"{name}_{seed}")
            SearchSpace(problem)  # some placement fits the RAM
        except ScenarioError:
            continue
        if ram_binds(problem):
            return problem
    raise ValueError(f"family {name!r}, seed {seed}: no valid problem in {TRIES} draws")


def _family_devices(rng: np.random.Generator, n_dev: int) -> tuple[HostDevice, ...]:
    """Gateways (about 1 in 7 devices, at least one) first, then the workers."""
    n_gw = max(1, round(n_dev * rng.uniform(0.1, 0.2)))
    gateways = [
        HostDevice(
            f"gw{i}",
            speed=_log_uniform(rng, 0.25, 1.0),
            capacity=int(rng.integers(2, 11)),
            ram=_log_uniform(rng, 768.0, 2048.0),
        )
        for i in range(n_gw)
    ]
    workers = [
        HostDevice(
            f"d{i}",
            speed=_log_uniform(rng, 0.5, 8.0),
            capacity=int(rng.integers(2, 31)),
            ram=_log_uniform(rng, 1024.0, 4096.0),
            discipline="ps" if rng.random() < 0.4 else "fcfs",
        )
        for i in range(n_dev - n_gw)
    ]
    return tuple(gateways + workers)


def _draw_family(rng: np.random.Generator, family: Family, objective: str, name: str) -> Problem:
    """One draw of a family's problem (checked by the caller)."""
    devs = _family_devices(rng, int(rng.integers(family.devices[0], family.devices[1] + 1)))
    gateways = [d for d in devs if d.name.startswith("gw")]
    worker_ram = sum(d.ram for d in devs if not d.name.startswith("gw"))
    n_srv = int(rng.integers(family.services[0], family.services[1] + 1))
    on = rng.integers(len(gateways), size=n_srv)  # the gateway of each service
    lengths = rng.integers(family.fragments[0], family.fragments[1] + 1, size=n_srv)
    # the weights of fragments past the first, in shares of WEIGHTS_SHARE of the workers' RAM
    rest = [np.exp(rng.uniform(0.0, np.log(4.0), size=n - 1)) for n in lengths]
    scale = rng.uniform(*WEIGHTS_SHARE) * worker_ram / sum(r.sum() for r in rest)
    services = []
    for s in range(n_srv):
        gw = gateways[on[s]]
        stem = gw.ram * rng.uniform(0.1, 0.4) / int((on == on[s]).sum())
        memory = [stem, *(scale * rest[s])]
        frags = _family_fragments(rng, memory)
        services.append(Service(f"s{s}", 1.0, frags, gateway=gw.name))
    services = _load(rng, services, devs)
    obj = Objective("max_accuracy", max_loss=0.05) if objective == "max_accuracy" else Objective()
    return Problem(devs, tuple(services), obj, name)


def _family_fragments(rng: np.random.Generator, memory: list[float]) -> tuple[Fragment, ...]:
    """Fragments with these weights: a light first one, exits on about half of the non-final
    ones (three threshold rows each), accuracy rising along the chain."""
    n = len(memory)
    n_exit = (n - 1 + int(rng.integers(0, 2))) // 2
    exits = set(rng.choice(n - 1, size=n_exit, replace=False).tolist()) if n_exit else set()
    accs = np.sort(rng.uniform(0.55, 0.95, size=n))
    frags = []
    for k in range(n):
        rows: tuple[ExitOption, ...] = ()
        if k in exits:
            probs = np.cumsum(rng.uniform((0.02, 0.05, 0.05), (0.2, 0.2, 0.2)))
            rows = tuple(
                ExitOption(t, float(p), round(min(0.99, float(accs[k]) + 0.1 * (t - 0.5)), 4))
                for t, p in zip((0.9, 0.7, 0.5), probs)
            )
        general = rng.random() < 0.7
        frags.append(
            Fragment(
                f"f{k}",
                work=_log_uniform(rng, 0.01, 0.1) if k == 0 else _log_uniform(rng, 0.05, 2.0),
                memory=float(memory[k]),
                job_memory=_log_uniform(rng, 16.0, 256.0),
                distribution="general" if general else "exp",
                scv=_log_uniform(rng, 0.2, 4.0) if general else None,
                exit=rows,
                accuracy=float(accs[k]) if k == n - 1 else None,
            )
        )
    return tuple(frags)


def _load(rng: np.random.Generator, services: list[Service], devs) -> list[Service]:
    """Arrival rates that put the system at a load drawn from `LOAD` (split among services at
    random); a gateway whose fixed first fragments would load it above `GATEWAY_LOAD` gets lighter
    first fragments (no placement could relieve it), which lowers the load a little."""
    target = rng.uniform(*LOAD) * sum(d.speed for d in devs)
    shares = rng.dirichlet(np.full(len(services), 2.0))
    rates = [target * sh / mean_work(sv) for sv, sh in zip(services, shares)]
    for gw in sorted({sv.gateway for sv in services}):
        speed = next(d.speed for d in devs if d.name == gw)
        fixed = sum(r * sv.fragments[0].work for r, sv in zip(rates, services) if sv.gateway == gw)
        cut = min(1.0, GATEWAY_LOAD * speed / fixed)
        services = [_lighter_first(sv, cut) if sv.gateway == gw else sv for sv in services]
    return [replace(sv, arrival_rate=float(r)) for sv, r in zip(services, rates)]


def _lighter_first(service: Service, factor: float) -> Service:
    first = replace(service.fragments[0], work=service.fragments[0].work * factor)
    return replace(service, fragments=(first, *service.fragments[1:]))
