"""The rules of an early-exit profile (`chainnet.eenn.profile`): each broken rule is one
`ScenarioError` naming the field, its value and what is allowed. Also the mean FLOPs per job that
a vector's fractions imply, computed here once for the measurement and for the check."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from chainnet.parsing import ScenarioError, finite, probability

TOLERANCE = 1e-6  # fractions sum to 1, and stored totals agree with the fractions, within this


def expected_flops(
    costs: Sequence[float], exit_blocks: Sequence[int], fractions: Sequence[float]
) -> float:
    """Mean FLOPs per job: each block's cost (its head included) times the share of jobs that
    reach it. `exit_blocks`: the block after which each early exit sits; `fractions`: the share
    of all jobs leaving at each early exit, then at the final classifier (after the last block)."""
    leaving = [0.0] * len(costs)
    for b, share in zip((*exit_blocks, len(costs) - 1), fractions):
        leaving[b] += share
    return math.fsum(c * math.fsum(leaving[b:]) for b, c in enumerate(costs))


def nonnegative(v: float, where: str) -> None:
    finite(v, where)
    if v < 0:
        raise ScenarioError(where, v, "must be >= 0")


def check_grid(grid: Sequence[float], where: str) -> set[float]:
    """A grid of confidence thresholds: not empty, each in [0, 1], no value twice."""
    if len(grid) == 0:
        raise ScenarioError(
            where, list(grid), "the threshold grid is empty; give at least one threshold in [0, 1]"
        )
    for i, t in enumerate(grid):
        probability(t, f"{where}[{i}]")
    if len(set(grid)) != len(grid):
        raise ScenarioError(where, list(grid), "each threshold once")
    return set(grid)


def check_profile(p: Any, w: str) -> None:
    """Raise a `ScenarioError` naming the first invalid field of the profile `p`."""
    if p.jobs < 1:
        raise ScenarioError(f"{w}.jobs", p.jobs, "must be >= 1 (the held-out jobs measured)")
    for key, value in p.training.items():
        if not isinstance(key, str) or not isinstance(value, (str, numbers.Real)):
            raise ScenarioError(f"{w}.training.{key}", value, "a setting name and one value")
    names = [b.name for b in p.blocks]
    if not names:
        raise ScenarioError(f"{w}.blocks", [], "at least one block")
    if len(set(names)) != len(names):
        raise ScenarioError(f"{w}.blocks", names, "block names must be unique")
    for i, b in enumerate(p.blocks):
        for key in ("flops", "weight_bytes", "activation_bytes"):
            nonnegative(getattr(b, key), f"{w}.blocks[{i}].{key}")
    exit_blocks = _check_heads(p.exits, p.final, names, w)
    grid = check_grid(p.thresholds, f"{w}.thresholds")
    if not p.vectors:
        raise ScenarioError(f"{w}.vectors", [], "at least one threshold vector")
    costs = [s.flops for s in p.stage_costs()]
    seen: dict[tuple, int] = {}
    for i, v in enumerate(p.vectors):
        vw = f"{w}.vectors[{i}]"
        _check_vector(v, vw, grid, costs, exit_blocks)
        if v.thresholds in seen:
            raise ScenarioError(
                f"{vw}.thresholds", list(v.thresholds), f"as in vectors[{seen[v.thresholds]}]"
            )
        seen[v.thresholds] = i


def _check_heads(exits: Sequence, final: Any, names: list[str], w: str) -> list[int]:
    """The early exits sit in block order before the last block, `final` after the last one;
    returns the block of each early exit."""
    if not exits:
        raise ScenarioError(
            f"{w}.exits", [], "no exit: give a head after at least one block before the last"
        )
    index = {n: i for i, n in enumerate(names)}
    out: list[int] = []
    for k, h in enumerate(exits):
        hw = f"{w}.exits[{k}]"
        _check_head(h, hw)
        b = index.get(h.after)
        if b is None:
            raise ScenarioError(f"{hw}.after", h.after, f"the name of a block: {', '.join(names)}")
        if b == len(names) - 1:
            raise ScenarioError(
                f"{hw}.after",
                h.after,
                "an early exit sits before the last block ('final' after it)",
            )
        if out and b <= out[-1]:
            raise ScenarioError(f"{hw}.after", h.after, "exits in block order, one per block")
        out.append(b)
    _check_head(final, f"{w}.final")
    if final.after != names[-1]:
        raise ScenarioError(f"{w}.final.after", final.after, f"the last block, {names[-1]!r}")
    heads = [h.name for h in (*exits, final)]
    if len(set(heads)) != len(heads):
        raise ScenarioError(f"{w}.exits", heads, "head names (exits and final) must be unique")
    return out


def _check_head(h: Any, hw: str) -> None:
    nonnegative(h.flops, f"{hw}.flops")
    nonnegative(h.weight_bytes, f"{hw}.weight_bytes")
    probability(h.accuracy, f"{hw}.accuracy")


def _check_vector(v: Any, vw: str, grid: set, costs: list[float], exit_blocks: list[int]) -> None:
    n_exits = len(exit_blocks)
    if len(v.thresholds) != n_exits:
        raise ScenarioError(
            f"{vw}.thresholds", list(v.thresholds), f"one threshold per exit ({n_exits})"
        )
    for k, t in enumerate(v.thresholds):
        if t not in grid:
            raise ScenarioError(f"{vw}.thresholds[{k}]", t, "a value of the grid 'thresholds'")
    for key in ("fractions", "accuracies"):
        if len(getattr(v, key)) != n_exits + 1:
            raise ScenarioError(
                f"{vw}.{key}", list(getattr(v, key)), f"one per exit, then final ({n_exits + 1})"
            )
    for k, (share, acc) in enumerate(zip(v.fractions, v.accuracies)):
        probability(share, f"{vw}.fractions[{k}]")
        if share > 0 and acc is None:
            raise ScenarioError(f"{vw}.accuracies[{k}]", acc, "an accuracy where jobs leave")
        if share == 0 and acc is not None:
            raise ScenarioError(f"{vw}.accuracies[{k}]", acc, "null where no job leaves")
        if acc is not None:
            probability(acc, f"{vw}.accuracies[{k}]")
    total = math.fsum(v.fractions)
    if abs(total - 1.0) > TOLERANCE:
        raise ScenarioError(
            f"{vw}.fractions", list(v.fractions), f"must sum to 1 (they sum to {total:.9g})"
        )
    probability(v.accuracy, f"{vw}.accuracy")
    implied = math.fsum(f * a for f, a in zip(v.fractions, v.accuracies) if a is not None)
    if abs(v.accuracy - implied) > TOLERANCE:
        raise ScenarioError(
            f"{vw}.accuracy", v.accuracy, f"the fractions and accuracies give {implied:.9g}"
        )
    nonnegative(v.mean_flops, f"{vw}.mean_flops")
    flops = expected_flops(costs, exit_blocks, v.fractions)
    if abs(v.mean_flops - flops) > TOLERANCE * max(1.0, flops):
        raise ScenarioError(
            f"{vw}.mean_flops",
            v.mean_flops,
            f"the fractions and the blocks' flops give {flops:.9g}",
        )
