"""Services written with an early-exit profile, and the threshold vectors of a problem's service.

A service of a problem file may name a profile (`chainnet.eenn.profile`, written by
`python -m chainnet.profile`) instead of hand-written fragments and exit tables:

    - name: digits
      arrival_rate: 1.5
      gateway: gateway
      profile:
        path: profiles/digits.yaml   # relative to the problem file
        flops_per_work: 1.0e5        # FLOPs in one unit of work (service time = work / speed)
        bytes_per_memory: 1024       # bytes in one unit of the problem's memory (default 2**20)
        vectors: front               # the profile's Pareto front of threshold vectors, or all
        distribution: det            # optional: every fragment's service distribution (and scv)

`expand_profile` writes such a service out as plain data: one fragment per block of the profile
(named after it; work, memory and job memory from `Profile.stage_costs()` and the scales), and
`exit_vectors`, one per threshold vector chosen, each setting every fragment's `exit_prob` (of
the jobs that reach it) and `accuracy` (of the jobs leaving there) from `Profile.stage_exits`,
exactly: chained along the service they give back the profile's joint fractions. Where no job
reaches the final classifier, the last fragment gets the classifier's accuracy on all jobs (it
weighs nothing, but the simulator and the surrogate define a service's accuracy only where its
last stage has one). The problem
reads that as it reads a service written out by hand, so a profile is one way of writing
`exit_vectors`, and `Problem.to_dict` writes them out. `check_exit_vectors` holds their rules.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from chainnet.eenn.profile import Profile, load_profile, reals
from chainnet.parsing import (
    ScenarioError,
    mapping,
    maybe,
    number,
    positive,
    probability,
    text,
)
from chainnet.scenario import DISTRIBUTIONS

PROFILE_KEYS = ("path", "flops_per_work", "bytes_per_memory", "vectors", "distribution", "scv")
VECTOR_CHOICES = ("front", "all")
BYTES_PER_MB = 2.0**20  # the default unit of memory: problems give RAM in MB
VECTOR_KEYS = ("thresholds", "exit_prob", "accuracy")


def profile_fragments(
    profile: Profile,
    flops_per_work: float,
    bytes_per_memory: float = BYTES_PER_MB,
    vectors: str = "front",
    distribution: str = "det",
    scv: float | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The fragments (one per block) and exit vectors of a service running `profile`, as plain
    data for `Problem.from_dict`: `vectors` is "front" (`Profile.front()`, cheapest first) or
    "all" (every vector, in the profile's order)."""
    fragments = [
        {
            "name": cost.name,
            "work": cost.flops / flops_per_work,
            "memory": cost.weight_bytes / bytes_per_memory,
            "job_memory": cost.job_bytes / bytes_per_memory,
            "distribution": distribution,
            **({} if scv is None else {"scv": scv}),
        }
        for cost in profile.stage_costs()
    ]
    chosen = profile.front() if vectors == "front" else range(len(profile.vectors))
    exit_vectors = []
    for i in chosen:
        stages = profile.stage_exits(i)
        accuracy = [a for _, a in stages]
        if accuracy[-1] is None:  # no job reaches the final classifier: its accuracy on all
            accuracy[-1] = profile.final.accuracy  # jobs, with weight 0 (the scenario needs one)
        exit_vectors.append(
            {
                "thresholds": list(profile.vectors[i].thresholds),
                "exit_prob": [float(p) for p, _ in stages],
                "accuracy": accuracy,
            }
        )
    return fragments, exit_vectors


def expand_profile(x: dict[str, Any], w: str, base: Path | None) -> dict[str, Any]:
    """The service mapping `x` (read at `w`) with its `profile` replaced by the `fragments` and
    `exit_vectors` it gives; a relative profile path is read from `base` (None: the working
    directory). Every mistake is one `ScenarioError` naming its field."""
    for key in ("fragments", "exit_vectors"):
        if key in x:
            raise ScenarioError(
                f"{w}.{key}",
                "...",
                "a service with a profile takes its fragments and exits from the profile: "
                "give one or the other",
            )
    pw = f"{w}.profile"
    p = mapping(x["profile"], pw, PROFILE_KEYS, ("path", "flops_per_work"))
    given = text(p["path"], f"{pw}.path")
    scales = {}
    for key, default in (("flops_per_work", None), ("bytes_per_memory", BYTES_PER_MB)):
        scales[key] = number(p.get(key, default), f"{pw}.{key}")
        positive(scales[key], f"{pw}.{key}")
    vectors = text(p.get("vectors", "front"), f"{pw}.vectors")
    if vectors not in VECTOR_CHOICES:
        raise ScenarioError(f"{pw}.vectors", vectors, f"one of {VECTOR_CHOICES}")
    path = Path(given) if base is None or Path(given).is_absolute() else base / given
    if not path.is_file():
        raise ScenarioError(f"{pw}.path", given, f"no such file ({path})")
    try:
        profile = load_profile(path)
    except ScenarioError as exc:
        raise exc.within(f"{pw}.path: ") from None
    distribution = text(p.get("distribution", "det"), f"{pw}.distribution")
    if distribution not in DISTRIBUTIONS:
        raise ScenarioError(f"{pw}.distribution", distribution, f"one of {DISTRIBUTIONS}")
    scv = maybe(number)(p.get("scv"), f"{pw}.scv")
    if scv is not None:
        positive(scv, f"{pw}.scv")
    if (distribution == "general") != (scv is not None):
        raise ScenarioError(f"{pw}.scv", scv, "set (> 0) for 'general' service, and only then")
    fragments, exit_vectors = profile_fragments(
        profile, scales["flops_per_work"], scales["bytes_per_memory"], vectors, distribution, scv
    )
    out = {k: v for k, v in x.items() if k != "profile"}
    return out | {"fragments": fragments, "exit_vectors": exit_vectors}


def read_exit_vector(o: Any, w: str) -> dict[str, tuple]:
    """One exit vector of a problem file as plain tuples (the fields of `ExitVector`)."""
    o = mapping(o, w, VECTOR_KEYS, VECTOR_KEYS)
    return {
        "thresholds": reals(o["thresholds"], f"{w}.thresholds"),
        "exit_prob": reals(o["exit_prob"], f"{w}.exit_prob"),
        "accuracy": reals(o["accuracy"], f"{w}.accuracy", optional=True),
    }


def check_exit_vectors(sv: Any, sw: str, kind: str) -> None:
    """The rules of a service's `exit_vectors` (a `Service` read at `sw`; `kind`: the objective):
    they set every fragment's exit, so no fragment has its own exit table or accuracy; each gives
    one exit probability in [0, 1] and one accuracy in [0, 1] or None per fragment, 0 on the last
    (its jobs all leave there); the same number of thresholds in each, no vector twice; with
    `max_accuracy`, an accuracy wherever jobs leave."""
    for k, fr in enumerate(sv.fragments):
        for key in ("exit", "accuracy"):
            if getattr(fr, key) not in ((), None):
                raise ScenarioError(
                    f"{sw}.fragments[{k}].{key}",
                    "...",
                    "a service with exit_vectors (or a profile) takes every fragment's exit and "
                    "accuracy from them",
                )
    n, seen = len(sv.fragments), {}
    for i, v in enumerate(sv.exit_vectors):
        vw = f"{sw}.exit_vectors[{i}]"
        width = len(sv.exit_vectors[0].thresholds)
        if not v.thresholds or len(v.thresholds) != width:
            raise ScenarioError(
                f"{vw}.thresholds", list(v.thresholds), f"{max(width, 1)} thresholds, as the first"
            )
        if not all(math.isfinite(t) for t in v.thresholds) or v.thresholds in seen:
            raise ScenarioError(
                f"{vw}.thresholds", list(v.thresholds), "finite, and not a vector given before"
            )
        seen[v.thresholds] = i
        for key in ("exit_prob", "accuracy"):
            if len(getattr(v, key)) != n:
                raise ScenarioError(f"{vw}.{key}", list(getattr(v, key)), f"one per fragment ({n})")
        _check_vector_stages(v, vw, kind)


def _check_vector_stages(v: Any, vw: str, kind: str) -> None:
    last = len(v.exit_prob) - 1
    for k, (p, acc) in enumerate(zip(v.exit_prob, v.accuracy)):
        probability(p, f"{vw}.exit_prob[{k}]")
        if k == last and p != 0.0:
            raise ScenarioError(
                f"{vw}.exit_prob[{k}]", p, "0 on the last fragment (all its jobs leave there)"
            )
        if acc is not None:
            probability(acc, f"{vw}.accuracy[{k}]")
        # as the simulator and the surrogate define a chain's accuracy
        if kind == "max_accuracy" and (p > 0 or k == last) and acc is None:
            raise ScenarioError(
                f"{vw}.accuracy[{k}]",
                acc,
                "max_accuracy needs an accuracy on the last fragment and wherever exit_prob > 0",
            )
