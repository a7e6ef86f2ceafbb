"""The published policies as baselines: one deployment each, built without a search.

- `load_unaware_placement`: each fragment, in order, on the fastest device where it still fits
  (RAM: weights and one job), a gateway's fragment where the gateway fixes it: what a planner
  without a queueing model does. The `load_unaware` baseline adds the most accurate exit choice
  per service (accuracy is all such a planner sees).
- `exit_last`: no early exit (every exit's row, or every service's vector, with exit_prob 0).
- `fixed_threshold`: one confidence threshold for every exit (the row or vector nearest to it).
- `tc23_policy`: the queueing policy of TC'23 for one device. Per service and per exit choice
  (row or vector): the service time is the mixture, over the exit stages, of the processing time
  up to that stage; its blocking is the M/G/1/K loss of MacGregor Smith (as
  `chainnet.queueing.analytic`; the exact chain where that formula is undefined, M/M/1/K on a PS
  device). A linear program (`scipy.optimize.linprog`) picks the mix of choices that maximises
  accuracy under a loss-ratio limit. A service with `alternatives` (a mixed policy) at least as
  many as the mix's choices runs the mix: its weights rounded to the service's share grid by
  largest remainders (`chainnet.optim.mix.round_to_grid`; a choice rounded to 0 is dropped), each
  choice an alternative placed as the first. Otherwise the mix is rounded to the most accurate
  choice of its support that meets the limit alone (the LP's mix is reported). A service with
  alternatives runs its first alternative alone in the other baselines (every alternative a copy
  of the first). A service placed on several devices is modelled on its
  bottleneck device (where the model loses most of its jobs), and each service alone (the other
  services' load on a shared device is not counted), as the one-device model does.

All four use the load-unaware placement. Baselines read every measured vector of a profile
service (`load_problem`): the front is the optimizer's own reduction and lacks, for one, the
vector without early exits.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linprog

from chainnet.documents import load_document
from chainnet.optim.mix import deploy_mix, same_alternatives, service_genes
from chainnet.optim.problem import Problem
from chainnet.optim.space import SearchSpace
from chainnet.queueing import exact as q

BASELINES = ("exit_last", "fixed_threshold", "tc23", "load_unaware")
DEFAULT_MAX_LOSS = 0.05  # tc23's loss-ratio limit where the problem sets none
OPTION_LIMIT = 100_000  # the most exit choices (combinations of a service's exit rows) tc23 weighs


@dataclass(frozen=True)
class BaselineSettings:
    """`threshold`: fixed_threshold's confidence threshold, in (0, 1]; `max_loss`: tc23's
    loss-ratio limit, in [0, 1) (None: the problem's max_loss, else `DEFAULT_MAX_LOSS`)."""

    threshold: float = 0.8
    max_loss: float | None = None

    def __post_init__(self) -> None:
        t, m = self.threshold, self.max_loss
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < t <= 1.0:
            raise ValueError(f"baseline.threshold: got {t!r}; a number in (0, 1]")
        if m is not None and (
            isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m < 1.0
        ):
            raise ValueError(f"baseline.max_loss: got {m!r}; a number in [0, 1), or null")


@dataclass
class Plan:
    """A baseline's deployment, and what it says about it (printed and kept in result.json)."""

    policy: str
    candidate: np.ndarray
    notes: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


def load_problem(path: str | Path) -> Problem:
    """The problem file at `path`, every profile service with all its measured vectors."""
    doc = with_all_vectors(load_document(path))
    return Problem.from_dict(doc, where=f"problem {path}", base=Path(path).parent)


def with_all_vectors(doc: Any) -> Any:
    """A copy of the problem document `doc` whose profile services read every measured vector,
    as the baselines do (anything not a problem mapping is returned as is, for the reader to
    refuse)."""
    out = copy.deepcopy(doc)
    services = out.get("services") if isinstance(out, dict) else None
    for sv in services if isinstance(services, list) else []:
        if isinstance(sv, dict) and isinstance(sv.get("profile"), dict):
            sv["profile"]["vectors"] = "all"
    return out


def load_unaware_placement(space: SearchSpace) -> np.ndarray:
    """A candidate: fragments in gene order, each on the fastest device (ties: the first) whose
    RAM still holds its weights, those placed before and one job; threshold genes 0."""
    speed = np.array([d.speed for d in space.problem.devices])
    order = np.argsort(-speed, kind="stable")
    c = np.zeros(len(space.domains), dtype=np.int64)
    placed = space.fixed.copy()  # a gateway's fragment is where the gateway is
    for g in range(space.n_placement):
        if placed[g] or space.alternative[g] > 0:  # other alternatives: copies of the first
            continue
        placed[g] = True
        for d in order:
            c[g] = d
            if fits(space, c, placed, int(d)):
                break
        else:
            s, f = space.fragments[g]
            sv = space.problem.services[s]
            raise ValueError(
                f"strategy=load_unaware: fragment {sv.name}/{sv.fragments[f].name} fits no device "
                "beside the fragments placed before it"
            )
    return same_alternatives(space, c)


def fits(space: SearchSpace, c: np.ndarray, placed: np.ndarray, d: int) -> bool:
    """Device `d` holds the weights of the `placed` fragments `c` puts there, and one job of
    each (as `SearchSpace.overfull` counts them)."""
    on = placed & (space.device_of(c) == d)
    weights = float(space.weights[on].sum())
    job = float(space.job_memory[on].max()) if on.any() else 0.0
    ram = float(space.ram[d])
    return weights <= ram and not (job > 0 and ram - weights < job)


# ---- exit choices: a service's combinations of rows of its exit genes --------------------------
def no_exit_genes(space: SearchSpace, policy: str) -> None:
    if not space.exit_genes:
        raise ValueError(
            f"strategy={policy}: problem {space.problem.name or ''} has no early exit to set"
        )


def with_rows(space: SearchSpace, c: np.ndarray, rows: dict[int, int]) -> np.ndarray:
    """`c` with threshold gene i (of `space.exit_genes`) set to row `rows[i]`."""
    out = c.copy()
    for i, r in rows.items():
        out[space.n_placement + i] = r
    return out


def exit_last(space: SearchSpace, c: np.ndarray) -> np.ndarray:
    """`c` with every exit choice one where no job leaves early (exit_prob 0 everywhere)."""
    no_exit_genes(space, "exit_last")
    rows = {}
    for i, e in enumerate(space.exit_genes):
        zero = [r for r in range(len(e.labels)) if not np.any(e.exit_prob[r] > 0)]
        if not zero:
            sv = space.problem.services[e.service]
            where = sv.name if e.fragment is None else f"{sv.name}/{sv.fragments[e.fragment].name}"
            raise ValueError(
                f"strategy=exit_last: {where} has no exit choice without early exits "
                "(a row or vector with exit_prob 0 everywhere)"
            )
        rows[i] = max(zero, key=lambda r: e.labels[r])  # the highest thresholds among them
    return with_rows(space, c, rows)


def fixed_threshold(space: SearchSpace, c: np.ndarray, threshold: float) -> np.ndarray:
    """`c` with every exit at `threshold`: the row with that threshold, or the vector with it
    for every exit; where none has it, the nearest (largest gap, then total gap; ties: the
    higher thresholds)."""
    no_exit_genes(space, "fixed_threshold")
    rows = {}
    for i, e in enumerate(space.exit_genes):
        gaps = [np.abs(np.atleast_1d(np.asarray(lab, float)) - threshold) for lab in e.labels]
        rows[i] = min(
            range(len(e.labels)),
            key=lambda r: (gaps[r].max(), gaps[r].sum(), -np.sum(e.labels[r])),
        )
    return with_rows(space, c, rows)


def service_options(space: SearchSpace, s: int) -> list[dict[int, int]]:
    """Every exit choice of service `s`: one row per threshold gene of it."""
    genes = service_genes(space, s)
    sizes = [len(space.exit_genes[i].labels) for i in genes]
    if math.prod(sizes) > OPTION_LIMIT:
        raise ValueError(
            f"service {space.problem.services[s].name}: {math.prod(sizes)} exit choices, over "
            f"the limit of {OPTION_LIMIT:,} a baseline weighs"
        )
    return [dict(zip(genes, rows)) for rows in itertools.product(*(range(n) for n in sizes))]


def exit_mixture(space: SearchSpace, c: np.ndarray, s: int) -> tuple[np.ndarray, float]:
    """For service `s` under `c`: the share of its jobs leaving at each of its fragments (in
    order), and their accuracy (of all jobs, as the profile counts it)."""
    exit_prob, accuracy = space.exits_of(c)
    g = [k for k, (sv, _) in enumerate(space.fragments) if sv == s and space.alternative[k] == 0]
    p, a = exit_prob[g].copy(), accuracy[g]
    p[-1] = 1.0  # every job that reaches the last fragment leaves there
    reach = np.concatenate([[1.0], np.cumprod(1.0 - p[:-1])])
    share = reach * p
    acc = float(np.sum(np.where(share > 0, share * np.nan_to_num(a), 0.0)))
    return share, acc


def most_accurate(space: SearchSpace, c: np.ndarray) -> np.ndarray:
    """`c` with each service's most accurate exit choice (what a load-unaware planner picks)."""
    out = c.copy()
    for s in range(len(space.problem.services)):
        options = service_options(space, s)
        accs = [exit_mixture(space, with_rows(space, out, o), s)[1] for o in options]
        out = with_rows(space, out, options[int(np.argmax(accs))])
    return out


# ---- TC'23: the one-device queueing model and the linear program -------------------------------
def blocking(lam: float, mean: float, scv: float, K: int, ps: bool = False) -> float:
    """The M/G/1/K blocking probability: MacGregor Smith's formula, the exact chain (gamma or
    deterministic service) where it is undefined; a PS device is insensitive (M/M/1/K)."""
    if lam <= 0.0:
        return 0.0
    scv = 1.0 if ps else scv
    try:
        return q.macgregor_smith_loss(lam * mean, K, scv)
    except ValueError:
        m = q.md1k(lam, mean, K) if scv < 1e-9 else q.mg1k_gamma(lam, mean, scv, K)
        return m.loss_ratio


def service_loss(space: SearchSpace, c: np.ndarray, s: int, share: np.ndarray) -> float:
    """The loss ratio TC'23's model predicts for service `s` placed by `c`, its jobs leaving at
    its fragments in the shares `share`. Per device it uses: one M/G/1/K queue fed by the jobs
    that reach it, each serving the time of its fragments there up to its exit (the mixture's
    mean and second moment), of the device's capacity, or fewer jobs where the device's memory
    holds fewer of the service's largest jobs there. The bottleneck, the device where that queue
    loses the most of the service's jobs, gives the loss (one device: TC'23's model)."""
    scenario, sv = space.scenario(c), space.problem.services[s]
    chain = next(ch for ch in scenario.chains if ch.service == sv.name)  # alternatives alike
    rate = sv.arrival_rate
    mean = np.array([scenario.mean_service_time(st) for st in chain.stages])
    var = np.array([st.service_scv for st in chain.stages]) * mean**2
    devs = np.array([scenario.device_id(st.device) for st in chain.stages])
    loss = 0.0
    for d in np.unique(devs):
        on = devs == d
        first = int(np.argmax(on))
        reach = float(share[first:].sum())
        if reach <= 0.0:
            continue
        w = share[first:] / reach  # where the jobs that reach device d leave
        m_k, v_k = np.cumsum(np.where(on, mean, 0.0)), np.cumsum(np.where(on, var, 0.0))
        m1 = float(w @ m_k[first:])
        m2 = float(w @ (v_k[first:] + m_k[first:] ** 2))
        dev = scenario.devices[int(d)]
        K, jobs = dev.capacity, max(st.job_memory for st, o in zip(chain.stages, on) if o)
        if dev.memory is not None and jobs > 0:
            K = max(1, min(K, int(math.floor(dev.memory / jobs))))
        scv = max(m2 / m1**2 - 1.0, 0.0)
        loss = max(loss, reach * blocking(rate * reach, m1, scv, K, dev.discipline == "ps"))
    return loss


def mix_lp(accuracy: np.ndarray, loss: np.ndarray, max_loss: float) -> np.ndarray | None:
    """The weights of the choices (>= 0, summing to 1) that maximise the mixed accuracy with
    the mixed loss at most `max_loss` (`scipy.optimize.linprog`); None if no mix meets it."""
    n = len(accuracy)
    res = linprog(
        -np.asarray(accuracy, float),
        A_ub=np.asarray(loss, float)[None, :],
        b_ub=[max_loss],
        A_eq=np.ones((1, n)),
        b_eq=[1.0],
        bounds=(0.0, None),
        method="highs",
    )
    return res.x if res.status == 0 else None


def tc23_service(
    space: SearchSpace, c: np.ndarray, s: int, max_loss: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """`c` with service `s`'s exit choice by TC'23's policy (its LP mix, where the service has
    alternatives enough: `deploy_mix`), and the record of its LP."""
    options = service_options(space, s)
    shares, accs, losses = [], [], []
    for o in options:
        choice = same_alternatives(space, with_rows(space, c, o), s)  # its alternatives alike
        share, acc = exit_mixture(space, choice, s)
        shares.append(share)
        accs.append(acc)
        losses.append(service_loss(space, choice, s, share))
    accs, losses = np.array(accs), np.array(losses)
    weights = mix_lp(accs, losses, max_loss)
    if weights is None:  # no mix meets the limit: the least loss
        pick, support = int(np.argmin(losses)), []
    else:
        support = [int(i) for i in np.flatnonzero(weights > 1e-9)]
        within = [i for i in support if losses[i] <= max_loss + 1e-12]
        pick = (
            max(within, key=lambda i: accs[i]) if within else max(support, key=weights.__getitem__)
        )
    record = {
        "lp_feasible": weights is not None,
        "mix": [
            {
                "choice": choice_label(space, options[i]),
                "weight": float(weights[i]),
                "predicted_loss": float(losses[i]),
                "accuracy": float(accs[i]),
            }
            for i in support
        ],  # fmt: skip
        "chosen": choice_label(space, options[pick]),
        "predicted_loss": float(losses[pick]),
        "accuracy": float(accs[pick]),
    }
    mixed = None if weights is None else deploy_mix(space, c, s, options, weights)
    if mixed is None:
        return same_alternatives(space, with_rows(space, c, options[pick]), s), record
    out, deployed = mixed
    record["deployed_mix"] = [
        {"choice": choice_label(space, options[i]), "share": p} for i, p in deployed
    ]
    return out, record


def choice_label(space: SearchSpace, rows: dict[int, int]) -> Any:
    """An exit choice by its thresholds: the label (threshold or vector) of each threshold gene;
    the label alone where the service has one gene."""
    labels = [space.exit_genes[i].labels[r] for i, r in rows.items()]
    labels = [list(lab) if isinstance(lab, tuple) else lab for lab in labels]
    return labels[0] if len(labels) == 1 else labels


def tc23_policy(
    space: SearchSpace, c: np.ndarray, max_loss: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """`c` with every service's exit choice by TC'23's policy; the record per service."""
    no_exit_genes(space, "tc23")
    out, records = c.copy(), {}
    for s, sv in enumerate(space.problem.services):
        out, records[sv.name] = tc23_service(space, out, s, max_loss)
    return out, records


def plan(space: SearchSpace, policy: str, settings: BaselineSettings | None = None) -> Plan:
    """The deployment of baseline `policy` (one of `BASELINES`) on `space`."""
    if policy not in BASELINES:
        raise ValueError(f"strategy: got {policy!r}; a baseline is one of {BASELINES}")
    settings = settings or BaselineSettings()
    c = load_unaware_placement(space)
    if policy == "load_unaware":
        c = same_alternatives(space, most_accurate(space, c))
        return Plan(policy, c, ["thresholds: the most accurate choice"])
    if policy == "exit_last":
        return Plan(policy, exit_last(space, c), ["no early exit"])
    if policy == "fixed_threshold":
        t = settings.threshold
        return Plan(policy, fixed_threshold(space, c, t), [f"every exit at threshold {t:g}"])
    objective = space.problem.objective
    max_loss = settings.max_loss
    if max_loss is None:
        max_loss = objective.max_loss if objective.max_loss is not None else DEFAULT_MAX_LOSS
    candidate, records = tc23_policy(space, c, float(max_loss))
    notes = [f"loss-ratio limit {max_loss:g}"]
    for name, r in records.items():
        mix = ", ".join(f"{m['choice']} x {m['weight']:.3f}" for m in r["mix"]) or "none meets it"
        if "deployed_mix" in r:
            shares = ", ".join(f"{m['choice']} x {m['share']:g}" for m in r["deployed_mix"])
            notes.append(f"{name}: LP mix {mix}; deployed as alternatives {shares}")
            continue
        notes.append(
            f"{name}: LP mix {mix}; deployed {r['chosen']} (predicted loss "
            f"{r['predicted_loss']:.4g}, accuracy {r['accuracy']:.4g})"
        )
    if any("deployed_mix" not in r and len(r["mix"]) > 1 for r in records.values()):
        notes.append(
            "a service with fewer alternatives than its LP mix has choices runs one choice"
        )
    return Plan(policy, candidate, notes, {"max_loss": float(max_loss), "services": records})
