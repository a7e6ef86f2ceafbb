"""Random deployment problems, drawn like the `edge` preset's scenarios (tests, experiments)."""

from __future__ import annotations

import numpy as np

from chainnet.optim.problem import ExitOption, Fragment, HostDevice, Objective, Problem, Service


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
