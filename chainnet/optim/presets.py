"""Which scenario preset a deployment problem looks like, and the one-line warning when a
surrogate was trained on scenarios of another preset than the problem's.

A scope is what a preset covers: its `name`, `kind` (edge, or pool: dsn24's homogeneous,
deterministic, memoryless devices) and the (min, max) of `devices`, `chains` and `chain_length`.
A checkpoint's scope is its training preset's (`Surrogate.preset`) or, for a checkpoint that does
not say, what its training ranges show (`Surrogate.ranges_scope`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from chainnet.configs import CONF
from chainnet.optim.problem import Problem


def preset_scope(preset: dict) -> dict:
    """What a scenario preset covers (the keys of `Surrogate.ranges_scope`): its
    `name`, `kind` (edge, or pool: dsn24's) and the (min, max) of `devices`, `chains` and
    `chain_length` (None where the preset does not say)."""
    kind = preset.get("kind", "pool")
    devices = preset.get("devices") if kind == "edge" else [1, preset.get("device_pool")]

    def span(v):
        return tuple(v) if isinstance(v, (list, tuple)) and None not in v else None

    return {
        "name": preset.get("name"),
        "kind": kind,
        "devices": span(devices),
        "chains": span(preset.get("chains")),
        "chain_length": span(preset.get("chain_length")),
    }


def problem_scope(problem: Problem) -> dict:
    """A problem as `preset_scope` describes a preset: edge if any device has RAM, processor
    sharing or another speed than the rest, or any fragment memory, an exit or a service other
    than deterministic; else pool (dsn24's kind)."""
    devices, services = problem.devices, problem.services
    fragments = [fr for sv in services for fr in sv.fragments]
    edge = (
        any(d.ram is not None or d.discipline == "ps" for d in devices)
        or len({d.speed for d in devices}) > 1
        or any(
            fr.memory or fr.job_memory or fr.exit or fr.distribution != "det" for fr in fragments
        )
    )
    lengths = [len(sv.fragments) for sv in services]
    return {
        "name": problem.name,
        "kind": "edge" if edge else "pool",
        "devices": (len(devices), len(devices)),
        "chains": (len(services), len(services)),
        "chain_length": (min(lengths), max(lengths)),
    }


def covers(outer: dict, inner: dict) -> bool:
    """Whether scope `outer` (a preset's) holds scope `inner`: its kind, and every range within
    (a range the preset does not give holds anything)."""
    spans = ("devices", "chains", "chain_length")
    return outer["kind"] == inner["kind"] and all(
        outer[k] is None or (outer[k][0] <= inner[k][0] and inner[k][1] <= outer[k][1])
        for k in spans
    )


def known_presets() -> list[dict]:
    """The scopes of the scenario presets of conf/scenario, by name."""
    folder = Path(CONF) / "scenario"
    return [preset_scope(yaml.safe_load(f.read_text())) for f in sorted(folder.glob("*.yaml"))]


def describe_scope(scope: dict) -> str:
    def span(k: str) -> str:
        lo, hi = scope[k]
        return str(lo) if lo == hi else f"{lo}-{hi}"

    kind = "edge-like" if scope["kind"] == "edge" else "dsn24-like (pool)"
    return (
        f"{kind}, {span('devices')} devices, {span('chains')} chains of "
        f"{span('chain_length')} fragments"
    )


def preset_warning(trained: dict | None, problem: Problem, label: str) -> str | None:
    """One warning line if the checkpoint's training scope `trained` (`preset_scope`) does not
    cover `problem`, naming the preset it was trained on and the preset the problem looks like;
    None if it does, or if the checkpoint says nothing of its training data."""
    if trained is None:
        return None
    mine = problem_scope(problem)
    if covers(trained, mine):
        return None
    presets = known_presets()
    looks = next((p["name"] for p in presets if covers(p, mine)), None)
    if trained["name"]:
        source = f"preset {trained['name']} scenarios"
    else:
        like = next((p["name"] for p in presets if covers(p, trained)), None)
        source = "scenarios whose recorded ranges " + (
            f"look like {like}" if like else "match no preset"
        )
    return (
        f"warning: the checkpoint was trained on {source} ({describe_scope(trained)}); problem "
        f"{label} looks like {looks or 'no preset'} ({describe_scope(mine)}): the surrogate "
        "extrapolates there"
    )


def warn_preset(scorer: Any, problem: Problem, path: str) -> None:
    """Print `preset_warning` for the surrogate of `scorer`, if it has one."""
    surrogate = getattr(scorer, "surrogate", None)
    surrogate = getattr(surrogate, "surrogate", surrogate)  # scorer=hybrid holds a scorer
    if surrogate is None:
        return
    trained = preset_scope(surrogate.preset) if surrogate.preset else surrogate.ranges_scope()
    warning = preset_warning(trained, problem, problem.name or path)
    if warning:
        print(warning, file=sys.stderr)
