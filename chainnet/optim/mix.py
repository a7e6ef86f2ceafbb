"""Mixed policies: a service's jobs split at arrival between alternatives, with probabilities.

A problem's service may say `alternatives: K` (1 to `MAX_ALTERNATIVES`; default 1, a single
deployment as before) and `share_step` (default `DEFAULT_SHARE_STEP`, a step that divides 1). Each
alternative is a whole deployment of the service (the device of every fragment and the exit
choice); the share gene of the service picks the probabilities from `share_grid`: the vectors of
multiples of `share_step` that sum to 1, in non-increasing order (alternatives are
interchangeable, so (0.25, 0.75) would only repeat (0.75, 0.25) with the alternatives swapped),
first the pure vector (1, 0, ...). An alternative with share 0 is not deployed. `shares: [...]`
fixes the probabilities by hand instead (one vector, K values in [0, 1] that sum to 1).

Memory (`held`): only deployed alternatives hold memory, and a device that hosts the same fragment
of a service for several alternatives holds its weights once. The TC'23 baseline deploys its LP
mix of exit choices as alternatives (`deploy_mix`); the other baselines make every alternative a
copy of the first (`same_alternatives`), one policy whatever the shares.

A deployment with several alternatives of a service is one service with `routes` in the scenario
(one chain per deployed alternative, rate share x arrival rate). Its QoS is the aggregate over its
chains (`by_service`: the surrogate's per-chain predictions, as `predict_candidates` gives them;
`service_arrays` of decoded scenarios; `service_frame` of a simulation's chain rows): throughputs
add up; the loss ratio is the arrival-weighted mean; response time and
accuracy are means weighted by throughput (over the chains where they are defined). A service
with one chain keeps its chain's values exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from chainnet.parsing import ScenarioError, coerce, integer, number, real, sequence, spec

MAX_ALTERNATIVES = 4
DEFAULT_SHARE_STEP = 0.25
# How each predicted or simulated quantity of a service's chains is aggregated: "sum", "rate"
# (arrival-weighted mean), "served" (throughput-weighted mean), "any" (the largest flag), "first".
AGGREGATE = {
    "throughput": "sum",
    "loss_ratio": "rate",
    "throughput_ratio": "rate",
    "response_time": "served",
    "response_ratio": "served",
    "accuracy": "served",
    "out_of_range": "any",
    "scenario": "first",
}


def numbers_of(values: Any, where: str) -> tuple[float, ...]:
    """A list of numbers (`shares`) as a tuple; one `ScenarioError` naming a wrong one."""
    return tuple(number(p, f"{where}[{i}]") for i, p in enumerate(sequence(values, where)))


def coerce_mix(sv: Any) -> None:
    """The mix fields of a `Service` (built in code, or read) as plain values; one
    `ScenarioError` naming a value of the wrong type."""
    coerce(sv, spec(alternatives=integer, share_step=real))
    object.__setattr__(sv, "shares", numbers_of(sv.shares, "Service.shares"))


def read_mix(x: dict[str, Any], w: str) -> dict[str, Any]:
    """The mix fields of a problem file's service mapping `x` (read at `w`), defaults filled."""
    return {
        "alternatives": integer(x.get("alternatives", 1), f"{w}.alternatives"),
        "share_step": number(x.get("share_step", DEFAULT_SHARE_STEP), f"{w}.share_step"),
        "shares": numbers_of(x.get("shares") or [], f"{w}.shares"),
    }


def check_mix(sv: Any, sw: str) -> None:
    """Raise a `ScenarioError` naming the first invalid mix field of service `sv` (read at
    `sw`): `alternatives`, `share_step`, `shares`."""
    k = sv.alternatives
    if not 1 <= k <= MAX_ALTERNATIVES:
        raise ScenarioError(
            f"{sw}.alternatives", k, f"an integer from 1 to {MAX_ALTERNATIVES} (1: no mix)"
        )
    step = sv.share_step
    units = 1.0 / step if 0.0 < step <= 1.0 else math.nan
    if not (math.isfinite(units) and abs(units - round(units)) < 1e-9):
        raise ScenarioError(
            f"{sw}.share_step", step, "a number in (0, 1] that divides 1 (e.g. 0.5, 0.25, 0.1)"
        )
    if not sv.shares:
        return
    shares = list(sv.shares)
    if len(shares) != k:
        raise ScenarioError(f"{sw}.shares", shares, f"one probability per alternative ({k})")
    if not all(0.0 <= p <= 1.0 for p in shares):
        raise ScenarioError(f"{sw}.shares", shares, "every probability in [0, 1]")
    if abs(sum(shares) - 1.0) > 1e-9:
        raise ScenarioError(
            f"{sw}.shares", shares, f"assignment probabilities must sum to 1 (they sum to "
            f"{sum(shares):g})",
        )  # fmt: skip


def share_grid(k: int, step: float, shares: tuple[float, ...] = ()) -> np.ndarray:
    """The share vectors a service's share gene chooses from, [rows, k], read-only: `shares`
    alone when given, else every non-increasing vector of multiples of `step` summing to 1,
    the pure vector (1, 0, ...) first."""
    if shares:
        rows = [tuple(float(p) for p in shares)]
    else:
        units = round(1.0 / step)
        rows = [tuple(u / units for u in parts) for parts in _partitions(units, k, units)]
    out = np.array(rows, dtype=np.float64).reshape(len(rows), k)
    out.setflags(write=False)
    return out


def _partitions(total: int, k: int, most: int) -> list[tuple[int, ...]]:
    """Every non-increasing k-tuple of integers >= 0, each at most `most`, summing to `total`;
    the largest first part first."""
    if k == 1:
        return [(total,)] if total <= most else []
    return [
        (first, *rest)
        for first in range(min(total, most), -1, -1)
        for rest in _partitions(total - first, k - 1, first)
    ]


def round_to_grid(weights: np.ndarray, step: float) -> np.ndarray:
    """`weights` (>= 0, summing to 1) as multiples of `step` summing to 1, by largest
    remainders: each weight rounded down to the grid, then the units left over go one each to
    the weights with the largest remainders (ties: the larger weight, then the first)."""
    units = round(1.0 / step)
    w = np.asarray(weights, float) * units
    base = np.floor(w + 1e-9)
    left = int(units - base.sum())
    order = sorted(range(len(w)), key=lambda i: (-(w[i] - base[i]), -w[i], i))
    for i in order[:left]:
        base[i] += 1
    return base / units


# ---- memory: a fragment held for several alternatives is held once -----------------------------
def held(
    space: Any, dev: np.ndarray, active: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate and device of the search space `space`, from the device of every placement
    gene `dev` [n, genes] and whether it is deployed `active`: the weights held (a fragment
    that several alternatives put on one device counted once), the largest job memory of what
    it hosts, and the stages it hosts (every alternative's); sums in gene order."""
    rows = np.arange(len(dev))
    weights = np.zeros((len(dev), len(space.ram)))
    job = np.zeros((len(dev), len(space.ram)))
    hosted = np.zeros((len(dev), len(space.ram)))
    every = bool(active.all())
    for g in range(space.n_placement):
        d, on = dev[:, g], active[:, g]
        at = (rows, d) if every else (rows[on], d[on])  # the deployed copies of gene g
        new = on.copy()
        for h in space.copies[g]:
            new &= ~(active[:, h] & (dev[:, h] == d))
        weights[at if every and not space.copies[g] else (rows[new], d[new])] += space.weights[g]
        job[at] = np.maximum(job[at], space.job_memory[g])
        hosted[at] += 1.0
    return weights, job, hosted


# ---- deploying a mix of exit choices (the TC'23 baseline's) ------------------------------------
def service_genes(space: Any, s: int, alternative: int = 0) -> list[int]:
    """The indices (among `space.exit_genes`) of the threshold genes of service `s` (of its
    `alternative`, for a mixed service)."""
    return [
        i for i, e in enumerate(space.exit_genes) if e.service == s and e.alternative == alternative
    ]


def same_alternatives(space: Any, c: np.ndarray, only: int | None = None) -> np.ndarray:
    """`c` with every alternative of a mixed service (of service `only`, if given) deployed as
    its first (placement and exit choice copied; a device holds the copies' weights once), so
    the service runs one policy whatever its shares."""
    out = c.copy()
    for g, (s, _) in enumerate(space.fragments):
        if space.alternative[g] > 0 and only in (None, s):
            out[g] = out[space.copies[g][0]]
    for s in range(len(space.problem.services)) if only is None else [only]:
        first = service_genes(space, s)
        for a in range(1, space.problem.services[s].alternatives):
            for i, j in zip(first, service_genes(space, s, a)):
                out[space.n_placement + j] = out[space.n_placement + i]
    return out


def deploy_mix(
    space: Any, c: np.ndarray, s: int, options: list[dict[int, int]], weights: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, float]]] | None:
    """`c` with service `s` running the LP's mix `weights` of its exit choices `options` as
    alternatives (all placed as its first), where it has a share gene with room for them: the
    weights rounded to the service's share grid by largest remainders (`round_to_grid`), the
    choices rounded to 0 dropped, the others its alternatives, the largest share first; with
    the chosen (option, share) pairs. None where that leaves one choice, or the service has
    fewer alternatives than the mix has choices, or fixed shares."""
    sv = space.problem.services[s]
    gene = next((i for i, g in enumerate(space.share_genes) if g.service == s), None)
    support = np.flatnonzero(weights > 1e-9)
    if gene is None or sv.shares or not 2 <= len(support) <= sv.alternatives:
        return None
    rounded = round_to_grid(weights[support] / weights[support].sum(), sv.share_step)
    order = sorted(
        (i for i in range(len(support)) if rounded[i] > 0), key=lambda i: (-rounded[i], i)
    )
    if len(order) < 2:
        return None
    vector = np.zeros(sv.alternatives)
    vector[: len(order)] = rounded[order]
    grid = space.share_genes[gene].shares
    row = int(np.flatnonzero(np.all(np.isclose(grid, vector, atol=1e-9), axis=1))[0])
    out = same_alternatives(space, c, s)
    first = service_genes(space, s)
    for a, i in enumerate(order):
        for g0, g in zip(first, service_genes(space, s, a)):
            out[space.n_placement + g] = options[support[i]][g0]
    out[space.n_decisions + gene] = row
    return out, [(int(support[i]), float(rounded[i])) for i in order]


# ---- the QoS of a service from the QoS of its route chains -------------------------------------
def by_service(
    arrays: dict[str, np.ndarray], group: np.ndarray, rate: np.ndarray, n: int
) -> dict[str, np.ndarray]:
    """`arrays` (one entry per chain, of arrival rate `rate`) reduced per group (0..n-1: the
    chains of one service) by the rules of `AGGREGATE` (the bounds of a quantity, and its
    half-width `_hw`, as the quantity: a weighted mean's half-width is at most the weighted mean
    of the half-widths); a group of one chain keeps its values exactly."""
    count = np.bincount(group, minlength=n)
    first = np.full(n, -1)
    first[group[::-1]] = np.arange(len(group))[::-1]
    single = count == 1
    served = np.asarray(arrays["throughput"], float)

    def mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        ok = np.isfinite(x) & (w > 0)
        num = np.bincount(group, np.where(ok, w * np.where(ok, x, 0.0), 0.0), n)
        den = np.bincount(group, np.where(ok, w, 0.0), n)
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), math.nan)

    out = {}
    for key, x in arrays.items():
        base = key.removesuffix("_lower").removesuffix("_upper").removesuffix("_hw")
        rule = AGGREGATE.get(base)
        if key == "out_of_range_why":
            why = [[] for _ in range(n)]
            for gr, text in zip(group, x):
                if text and text not in why[gr]:
                    why[gr].append(text)
            out[key] = np.array(["; ".join(t) or None for t in why], dtype=object)
            continue
        if rule is None:
            raise ValueError(f"service QoS: no rule to aggregate {key!r} over routes")
        x = np.asarray(x)
        if rule == "first":
            agg = x[first]
        elif rule == "sum":
            agg = np.bincount(group, x.astype(float), n)
        elif rule == "any":
            agg = np.where(np.bincount(group, np.nan_to_num(x.astype(float)), n) > 0, 1.0, 0.0)
            agg = np.where(np.isnan(x[first]), math.nan, agg)
        else:
            agg = mean(x.astype(float), rate if rule == "rate" else served)
        out[key] = np.where(single, x[first], agg)
    return out


def service_arrays(problem: Any, scenarios: list, arrays: dict[str, Any]) -> dict[str, Any]:
    """The surrogate's per-chain predictions of `scenarios` (deployments of `problem`) as one
    entry per service of every scenario (scenarios in order, services in order)."""
    index = {sv.name: s for s, sv in enumerate(problem.services)}
    n_s = len(index)
    group = np.array(
        [i * n_s + index[ch.service] for i, sc in enumerate(scenarios) for ch in sc.chains]
    )
    rate = np.array([ch.arrival_rate for sc in scenarios for ch in sc.chains], dtype=float)
    return by_service(arrays, group, rate, len(scenarios) * n_s)


def service_frame(problem: Any, chains: pd.DataFrame) -> pd.DataFrame:
    """A simulation's chain rows (`SimulationResult.chain_frame()`) as one row per service of
    `problem`, in order, its name in `chain` and `service`; the frame itself where every
    service is one chain."""
    if (chains["chain"] == chains["service"]).all():
        return chains
    names = [sv.name for sv in problem.services]
    index = {name: s for s, name in enumerate(names)}
    group = np.array([index[s] for s in chains["service"]])
    keys = [k for k in chains.columns if k.removesuffix("_hw") in AGGREGATE]
    arrays = {k: chains[k].to_numpy(float) for k in keys}
    out = by_service(arrays, group, chains["arrival_rate"].to_numpy(float), len(names))
    rates = [sv.arrival_rate for sv in problem.services]
    return pd.DataFrame({"chain": names, "service": names, "arrival_rate": rates, **out})
