"""Problems for studies of early-exit deployments: a problem scaled to a target load, and random
problems whose services run an early-exit profile.

Problems are plain dicts (the problem-file format of `chainnet.optim.problem`), read through
`Problem.from_dict` so that every file rule applies; profile paths are made absolute, so a dict
reads the same from any folder.

**Load** is `chainnet.optim.generators.system_load`: the work arriving per unit time over the
devices' total speed, a job's work counted without early exits (a profile service's jobs run
every block). At load 1 the network without early exits would use every device fully under a
perfect split of the work, so above 1 every placement overloads some device unless exits take
jobs out early. `at_load` scales every arrival rate by one factor to reach a load exactly.

**Random profile problems** (`profile_problem`): a gateway and 2-4 edge boxes of log-uniform
speed and RAM, and 1-3 services, each running the profile from the gateway, with a random
`flops_per_work` (log-uniform), deterministic or general service (scv log-uniform), `vectors:
front` or `all`, and arrival rates split at random and scaled to a load drawn from `LOAD`. The
boxes' RAM holds 1.2-2 times the services' weights (each box at least the largest block and a
job), so the RAM binds; the gateway holds the first blocks and a little more. The same seed gives
the same problem.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from chainnet.documents import load_document
from chainnet.eenn.profile import load_profile
from chainnet.optim.generators import system_load
from chainnet.optim.problem import Problem
from chainnet.optim.space import SearchSpace
from chainnet.parsing import ScenarioError

DIGITS_PROFILE = Path(__file__).resolve().parents[2] / "examples" / "profiles" / "digits.yaml"
LOAD = (0.3, 1.6)  # the load drawn: light (< 0.5) to overloaded (> 1)
BOXES = (2, 4)  # edge boxes besides the gateway
SERVICES = (1, 3)
BYTES_PER_MEMORY = 1024  # memory in KiB: the digits network's blocks weigh a few KiB to 35 KiB
BOX_RAM = (1.2, 2.0)  # the boxes' RAM together, in multiples of the services' weights
TRIES = 50  # draws before `profile_problem` gives up (a draw is redone when it cannot deploy)


def problem_of(doc: dict[str, Any], where: str = "problem") -> Problem:
    """The problem of `doc`, checked as a problem file is (relative profile paths: the working
    directory)."""
    return Problem.from_dict(doc, where=where)


def load_doc(path: str | Path) -> dict[str, Any]:
    """The problem file at `path` as a dict, its profile paths absolute."""
    doc = load_document(path)
    for sv in (doc.get("services") or []) if isinstance(doc, dict) else []:
        prof = sv.get("profile") if isinstance(sv, dict) else None
        if isinstance(prof, dict) and isinstance(prof.get("path"), str):
            given = Path(prof["path"])
            prof["path"] = str(
                given if given.is_absolute() else (Path(path).parent / given).resolve()
            )
    return doc


def positive_number(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: got {v!r}; a number > 0")
    return float(v)


def seed_value(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: got {seed!r}; an integer >= 0")
    return int(seed)


def at_load(doc: dict[str, Any], load: float, problem: Problem | None = None) -> dict[str, Any]:
    """A copy of problem `doc` with every arrival rate scaled by one factor so that its
    `system_load` is `load` (> 0); `problem`: `doc` already read (None: read here)."""
    load = positive_number(load, "load")
    now = system_load(problem_of(doc) if problem is None else problem)
    out = copy.deepcopy(doc)
    for sv in out["services"]:
        sv["arrival_rate"] = float(sv["arrival_rate"]) * load / now
    return out


def with_alternatives(doc: dict[str, Any], k: int) -> dict[str, Any]:
    """A copy of `doc` with `alternatives: k` on every service (mixed policies); `k` = 1: the
    same problem (no key added)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"alternatives: got {k!r}; an integer >= 1")
    out = copy.deepcopy(doc)
    if k > 1:
        for sv in out["services"]:
            sv["alternatives"] = k
    return out


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def profile_problem(
    seed: int, profile: str | Path = DIGITS_PROFILE, load: float | None = None
) -> dict[str, Any]:
    """A random problem (a dict) whose services run `profile` (see the module's docstring), the
    same for the same seed; `load`: its `system_load` (None: drawn uniformly from `LOAD`)."""
    seed = seed_value(seed)
    if load is not None:
        load = positive_number(load, "load")
    path = Path(profile).resolve()
    if not path.is_file():
        raise ValueError(f"profile: got {str(profile)!r}; no such file")
    costs = load_profile(path).stage_costs()
    rng = np.random.default_rng([seed, 12])
    for _ in range(TRIES):
        doc = _draw(rng, path, costs, f"profile_{seed}")
        target = float(rng.uniform(*LOAD)) if load is None else load
        try:
            problem = problem_of(doc)
            SearchSpace(problem)  # some placement fits the RAM (whatever the arrival rates)
        except ScenarioError:
            continue
        return at_load(doc, target, problem)
    raise ValueError(f"profile problem, seed {seed}: no deployable problem in {TRIES} draws")


def profile_problems(
    n: int, seed: int, profile: str | Path = DIGITS_PROFILE
) -> list[dict[str, Any]]:
    """`n` random profile problems (seeds `seed` to `seed + n - 1`), their loads stratified over
    `LOAD` (one in each of `n` equal bins, in random order), so light and overloaded problems are
    both there."""
    loads = stratified_loads(n, seed)
    return [profile_problem(seed + i, profile, float(loads[i])) for i in range(n)]


def stratified_loads(n: int, seed: int) -> np.ndarray:
    """`n` loads, one drawn uniformly in each of `n` equal bins of `LOAD`, in random order."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"random problems: got {n!r}; an integer >= 1")
    rng = np.random.default_rng([seed_value(seed), 13])
    edges = np.linspace(*LOAD, n + 1)
    return rng.permutation(rng.uniform(edges[:-1], edges[1:]))


def _draw(rng: np.random.Generator, path: Path, costs, name: str) -> dict[str, Any]:
    """One draw of a profile problem, at arrival rates of unknown load (the caller scales them)."""
    kib = [c.weight_bytes / BYTES_PER_MEMORY for c in costs]
    job = [c.job_bytes / BYTES_PER_MEMORY for c in costs]
    n_srv = int(rng.integers(SERVICES[0], SERVICES[1] + 1))
    n_box = int(rng.integers(BOXES[0], BOXES[1] + 1))
    gateway = {
        "name": "gateway",
        "speed": _log_uniform(rng, 0.3, 1.0),
        "capacity": int(rng.integers(4, 13)),
        "ram": n_srv * (kib[0] + job[0]) + rng.uniform(0.1, 0.5) * sum(kib),
    }
    rest = (n_srv * sum(kib[1:])) * rng.uniform(*BOX_RAM)
    least = max(w + j for w, j in zip(kib, job)) * 1.05
    boxes = [
        {
            "name": f"box{i + 1}",
            "speed": _log_uniform(rng, 0.5, 4.0),
            "capacity": int(rng.integers(4, 21)),
            "ram": float(max(least, rest * share)),
            "discipline": "ps" if rng.random() < 0.4 else "fcfs",
        }
        for i, share in enumerate(rng.dirichlet(np.full(n_box, 2.0)))
    ]
    services = []
    for s, share in enumerate(rng.dirichlet(np.full(n_srv, 2.0))):
        prof: dict[str, Any] = {
            "path": str(path),
            "flops_per_work": _log_uniform(rng, 0.5e5, 2.0e5),
            "bytes_per_memory": BYTES_PER_MEMORY,
            "vectors": "front" if rng.random() < 0.5 else "all",
        }
        if rng.random() < 0.5:
            prof |= {"distribution": "general", "scv": _log_uniform(rng, 0.3, 2.0)}
        flops = sum(c.flops for c in costs)  # rates in proportion to share / mean work
        rate = float(share) * prof["flops_per_work"] / flops
        services.append(
            {"name": f"s{s}", "arrival_rate": rate, "gateway": "gateway", "profile": prof}
        )
    return {
        "name": name,
        "devices": [gateway, *boxes],
        "services": services,
        "objective": {"kind": "max_accuracy", "max_loss": 0.05},
    }
