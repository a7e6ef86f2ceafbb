"""Early-exit deployments: the published policies against our optimizer, judged by one simulation.

On the digits problem (examples/problem_digits.yaml) scaled to each of `--loads` (the load of
`chainnet.optim.generators.system_load`: work without early exits over the devices' total speed),
and on `--random` problems built from the digits profile (`chainnet.optim.profile_problems`,
loads stratified from 0.3 to 1.6), runs every baseline (`chainnet.optim.baselines`: exit_last,
fixed_threshold, tc23, load_unaware; each reads every measured vector) and our optimizer (anneal;
`scorer=hybrid` with `--ckpt`, else `scorer=simulator`; `--budget` seconds, `--budget-evals`
simulations), then judges every returned deployment by one simulation with a seed no search used
(`study.judge`, `study.EVAL_SEED`): loss ratio, accuracy of served jobs, and their 95 %
half-widths (a weighted sum of the services' half-widths: see `study.judge`).

Our optimizer runs twice per problem:
- `ours`: objective max_accuracy at max_loss = (1 - `--target`) x the loss of the best baseline
  (the lowest loss of any baseline by its own confirmation simulation, seed `CONFIRM_SEED`, not
  the judge), with a penalty of `--penalty` (100) per unit of loss above it, ten times the
  problems' default, so that the loss limit nearly binds: the most accurate deployment whose
  loss meets the target's reduction. This is the policy the targets are evaluated on;
- `ours_min_loss`: objective min_loss (the least loss, whatever the accuracy), for reference.

Targets (`evaluate_targets`), per problem: the best baseline is the one with the lowest judged
loss (ties: the higher accuracy). A problem is overloaded when its load is >= 1 or the best
baseline loses more than `--overload-loss`. On an overloaded problem the reduction target is met
when our accuracy is at least the best baseline's, within the judge's half-width of the
difference, sqrt(hw_ours^2 + hw_best^2) ("equal accuracy"), and our judged loss at most
(1 - `--target`) times its judged loss (point estimates: the reduction must show). Everywhere,
ours must never lose more than any baseline by more than the half-width of the difference.
The judge simulates `--judge-arrivals` arrivals (1,000,000: the simulator's default cap), the
searches `--max-arrivals` (300,000, as `python -m chainnet.optimize`).

    python experiments/early_exit.py [--ckpt model.ckpt] [--budget 60] [--random 8]
    python experiments/early_exit.py --budget 0 --budget-evals 200   # reproducible anywhere
    python experiments/early_exit.py --summarize-only

Resumable (`study.Rows`): each (problem, policy) row is appended to early_exit.csv (one line,
flushed and fsynced) as soon as it is done, and a rerun skips the rows done (not those that failed
or were contended, nor `ours` where a baseline was redone: its loss target comes from them); the
summary reads the last row of each (problem, policy). A rerun into an --out saved with other
settings is refused. Quiet machine (`study.timed`): before each timed run (our optimizer's, with
`--budget` > 0) it waits, at most `--max-wait` seconds, until the CPU time other processes use
(from /proc/stat over `--probe-s` seconds, in CPUs busy) is at most `--max-load`; the run is
flagged contended when it gave up waiting or others used more than `--max-load` CPUs during it
(`load_during`). Saves early_exit.csv, summary.csv, summary.md and early_exit.png under --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from study import LoadMeter, Rows, add_quiet_options, final_rows, judge, latest, timed

from chainnet.optim.baselines import BASELINES, BaselineSettings, with_all_vectors
from chainnet.optim.hybrid import optimize_hybrid
from chainnet.optim.problem import Objective, Problem
from chainnet.optim.profile_problems import (
    at_load,
    load_doc,
    problem_of,
    profile_problems,
    stratified_loads,
    with_alternatives,
)
from chainnet.optim.scorers import SimulatorScorer, make_scorer
from chainnet.optim.search import Optimization, optimize
from chainnet.optim.space import SearchSpace
from chainnet.parsing import ScenarioError
from chainnet.sim import SimulatorSettings

SEARCH_SEED, CONFIRM_SEED = 1, 2  # the searches' simulations and their confirmation
DIGITS = Path(__file__).resolve().parents[1] / "examples" / "problem_digits.yaml"
LOADS = (0.5, 0.75, 1.0, 1.25, 1.5)
OURS = ("ours", "ours_min_loss")
POLICIES = (*BASELINES, *OURS)
KEY = ["problem", "policy"]
COLUMNS = [
    *KEY, "kind", "load", "status", "objective", "scorer", "loss", "loss_hw", "accuracy",
    "accuracy_hw", "own_loss", "own_accuracy", "scored", "search_s", "candidate", "wall_s",
    "load_before", "load_during", "contended", "alternatives",
]  # fmt: skip
JUDGED = ("loss", "loss_hw", "accuracy", "accuracy_hw")  # what a row keeps of `study.judge`
# what a saved study depends on: a rerun into the same --out must use the same values
SETTINGS = (
    "loads", "random", "seed", "budget", "budget_evals", "ckpt", "max_arrivals", "judge_arrivals",
    "alternatives", "target", "penalty", "threshold", "tc23_max_loss",
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One problem of the study: its name, kind (digits or random), load and problem dict."""

    name: str
    kind: str
    load: float
    doc: dict[str, Any]


def cases(args: argparse.Namespace) -> list[Case]:
    """The digits problem at each load, then the random profile problems."""
    digits = load_doc(DIGITS)
    read = problem_of(digits)  # read once: the load is linear in the rates
    out = [Case(f"digits_{x:.2f}", "digits", x, at_load(digits, x, read)) for x in args.loads]
    if args.random:
        loads = stratified_loads(args.random, args.seed)  # as profile_problems draws them
        for doc, x in zip(profile_problems(args.random, args.seed), loads):
            out.append(Case(doc["name"], "random", float(x), doc))
    return [Case(c.name, c.kind, c.load, with_alternatives(c.doc, args.alternatives)) for c in out]


# ---- the runs ----------------------------------------------------------------------------------
class CaseProblems:
    """The problems of one case, each read once (reading a profile takes a moment): every
    measured vector for the baselines (as `chainnet.optim.baselines.load_problem`), the vectors
    as given for our optimizer. A problem that fails to read fails every row that needs it."""

    def __init__(self, case: Case):
        self.case = case

    @cached_property
    def baselines(self) -> SearchSpace:
        doc = with_all_vectors(self.case.doc)
        return SearchSpace(problem_of(doc, f"problem {self.case.name}"))

    @cached_property
    def ours(self) -> Problem:
        return problem_of(self.case.doc, f"problem {self.case.name}")


def run_baseline(problems: CaseProblems, policy: str, args, settings) -> dict:
    """Baseline `policy` (every measured vector), confirmed by its own simulation."""
    space = problems.baselines
    scorer = SimulatorScorer(space, settings, seed=SEARCH_SEED)
    run = optimize(
        space, scorer, policy, None, budget_evals=1, top_k=1, settings=settings,
        confirm_seed=CONFIRM_SEED, baseline=BaselineSettings(args.threshold, args.tc23_max_loss),
    )  # fmt: skip
    return outcome(space, run, args) | {"objective": "baseline", "scorer": "simulator"}


def ours_objective(policy: str, reference: float, target: float, penalty: float) -> dict:
    """The objective of our optimizer's `policy`: max_accuracy at (1 - target) x the best
    baseline's loss `reference`, `penalty` per unit of loss above (`ours`), or min_loss
    (`ours_min_loss`)."""
    if policy == "ours_min_loss":
        return {"kind": "min_loss"}
    if not math.isfinite(reference):
        raise ValueError("ours: no baseline ran on this problem, so it has no loss target")
    return {"kind": "max_accuracy", "max_loss": (1.0 - target) * reference, "penalty": penalty}


def run_ours(problems: CaseProblems, policy: str, reference: float, args, settings) -> dict:
    """Our optimizer with the objective of `policy` (see `ours_objective`)."""
    objective = ours_objective(policy, reference, args.target, args.penalty)
    space = SearchSpace(replace(problems.ours, objective=Objective(**objective)))
    budget = args.budget if args.budget > 0 else None
    common = {"budget_evals": args.budget_evals, "top_k": 5, "confirm_seed": CONFIRM_SEED}
    if args.ckpt:
        scorer = make_scorer("hybrid", space, args.ckpt, settings, seed=SEARCH_SEED)
        run = optimize_hybrid(space, scorer, "anneal", budget, settings=settings, **common)
    else:
        scorer = SimulatorScorer(space, settings, seed=SEARCH_SEED)
        run = optimize(space, scorer, "anneal", budget, settings=settings, **common)
    label = json.dumps(objective, sort_keys=True)
    return outcome(space, run, args) | {"objective": label, "scorer": scorer.name}


def outcome(space: SearchSpace, run: Optimization, args) -> dict:
    """A run's row: the judge's verdict on its deployment (`--judge-arrivals`), and what the run
    saw."""
    best = run.best
    verdict = judge(space, run.best_candidate, SimulatorSettings(max_arrivals=args.judge_arrivals))
    return {k: verdict[k] for k in JUDGED} | {
        "own_loss": float(best["simulated_loss"]),
        "own_accuracy": float(best["simulated_accuracy"]),
        "scored": len(run.result.scored),
        "search_s": run.result.elapsed_s,
        "candidate": json.dumps([int(g) for g in run.best_candidate]),
    }


# ---- the record of each run, and the study ------------------------------------------------------
def timed_row(case: Case, policy: str, job, is_timed: bool, args, meter: LoadMeter) -> dict:
    """Run `job()` (a row's results) and add the record (`study.timed`: on a quiet machine when
    `is_timed`); a failure to read or run the problem is the row's status."""

    def attempt() -> tuple[dict, str]:
        try:
            return job(), "ok"
        except (ValueError, ScenarioError) as exc:
            return {}, f"error: {exc}"

    (row, status), record = timed(attempt, meter, args.max_load, args.max_wait, wait=is_timed)
    return {
        "problem": case.name, "kind": case.kind, "load": case.load, "policy": policy,
        "status": status, **row, **record, "alternatives": args.alternatives,
    }  # fmt: skip


def rows_of(out: Path) -> Rows:
    """The study's rows (early_exit.csv under `out`)."""
    return Rows(out / "early_exit.csv", COLUMNS, KEY)


def check_settings(out: Path, args: argparse.Namespace) -> None:
    """Refuse to resume a study saved with other settings; record them for the next run."""
    mine = {k: getattr(args, k) for k in SETTINGS}
    mine["loads"] = list(mine["loads"])
    path = out / "settings.json"
    if path.exists():
        saved = json.loads(path.read_text())
        for k in SETTINGS:
            if saved.get(k) != mine[k]:
                raise ValueError(
                    f"--out {out}: it holds a study run with {k}={saved.get(k)!r}, not "
                    f"{mine[k]!r}; use another --out, or delete it to start again"
                )
    path.write_text(json.dumps(mine, indent=2))


def run_study(args: argparse.Namespace, out: Path) -> pd.DataFrame:
    """Every (problem, policy) row not done yet, each saved as soon as it is done; the last row
    of every (problem, policy)."""
    settings = SimulatorSettings(max_arrivals=args.max_arrivals)
    rows, meter = rows_of(out), LoadMeter(args.probe_s)
    df = rows.read()
    done = rows.done(df)
    for case in cases(args):
        print(f"{case.name} (load {case.load:.2f})", flush=True)
        problems, baseline_ran = CaseProblems(case), False
        for policy in POLICIES:
            # `ours` takes its loss target from the baselines: redone after any of them is
            if (case.name, policy) in done and not (policy == "ours" and baseline_ran):
                continue
            baseline_ran |= policy in BASELINES
            if policy in BASELINES:
                job = partial(run_baseline, problems, policy, args, settings)
            else:
                ref = reference_loss(df, case.name)
                job = partial(run_ours, problems, policy, ref, args, settings)
            is_timed = policy in OURS and args.budget > 0
            row = timed_row(case, policy, job, is_timed, args, meter)
            rows.append(row)
            df = rows.read()
            shown = (
                f"loss {row['loss']:.4f}, accuracy {row['accuracy']:.4f}" if "loss" in row else ""
            )
            flag = " (contended: rerun to redo)" if row["contended"] else ""
            print(f"  {policy:16s} {row['status'][:80]:6s} {shown}{flag}", flush=True)
    return latest(df, KEY)


def reference_loss(df: pd.DataFrame, problem: str) -> float:
    """The best baseline's loss on `problem` by its own confirmation (not the judge): the loss
    target of `ours` is a share of it."""
    rows = final_rows(df, KEY)
    rows = rows[(rows["problem"] == problem) & rows["policy"].isin(BASELINES)]
    return float(rows["own_loss"].min()) if len(rows) else math.nan


# ---- the summary -------------------------------------------------------------------------------
def half_width(a: float, b: float) -> float:
    """The half-width of the difference of two judged estimates (NaN counts as 0: strict)."""
    return math.hypot(*np.nan_to_num([a, b], nan=0.0, posinf=0.0))


def evaluate_targets(
    df: pd.DataFrame, target: float = 0.5, overload_loss: float = 0.05, policy: str = "ours"
) -> pd.DataFrame:
    """Per problem, `policy` against the baselines (the rows of `df` with status ok): the best
    baseline (lowest judged loss; ties: higher accuracy), the loss reduction against it, whether
    the problem is overloaded (load >= 1, or the best baseline's loss > `overload_loss`), and the
    targets (see the module's docstring): `met_reduction` (None where not overloaded),
    `never_worse`, `met` (both that apply) and what missed them (`missed`)."""
    ok = df[df["status"] == "ok"]
    rows = []
    for _, part in ok.groupby("problem", sort=False):
        base = part[part["policy"].isin(BASELINES)]
        ours = part[part["policy"] == policy]
        if not (base.empty or ours.empty):
            rows.append(verdict(ours.iloc[0], base, target, overload_loss))
    return pd.DataFrame(rows)


def verdict(o: pd.Series, base: pd.DataFrame, target: float, overload_loss: float) -> dict:
    """The targets of one problem: our row `o` against the baselines' rows `base`."""
    best = base.sort_values(["loss", "accuracy"], ascending=[True, False]).iloc[0]
    overloaded = bool(o["load"] >= 1.0 or best["loss"] > overload_loss)
    missed = []
    if overloaded:
        if o["accuracy"] < best["accuracy"] - half_width(o["accuracy_hw"], best["accuracy_hw"]):
            missed.append(f"accuracy below {best['policy']}'s")
        if o["loss"] > (1.0 - target) * best["loss"]:
            missed.append(f"loss not {target:.0%} below {best['policy']}'s")
    met_reduction = not missed if overloaded else None
    worse = [
        b["policy"]
        for _, b in base.iterrows()
        if o["loss"] > b["loss"] + half_width(o["loss_hw"], b["loss_hw"])
    ]
    missed += [f"loss above {b}'s" for b in worse]
    return {
        "problem": o["problem"], "kind": o["kind"], "load": o["load"], "policy": o["policy"],
        "loss": o["loss"], "accuracy": o["accuracy"],
        "best_baseline": best["policy"], "best_loss": best["loss"],
        "best_accuracy": best["accuracy"],
        "reduction": 1.0 - o["loss"] / best["loss"] if best["loss"] > 0 else math.nan,
        "overloaded": overloaded, "met_reduction": met_reduction, "never_worse": not worse,
        "met": not missed, "missed": "; ".join(missed),
    }  # fmt: skip


def markdown(df: pd.DataFrame, targets: pd.DataFrame) -> str:
    """The README table: per problem, each policy's judged loss / accuracy, then the targets."""
    ok = df[df["status"] == "ok"]
    policies = [p for p in POLICIES if p in set(ok["policy"])]
    head = ["problem", "load", *policies, "best baseline", "reduction", "overloaded", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, t in targets.iterrows():
        part = ok[ok["problem"] == t["problem"]].set_index("policy")
        cells = [
            f"{part.loc[p, 'loss']:.4f} / {part.loc[p, 'accuracy']:.4f}" if p in part.index else ""
            for p in policies
        ]
        reduction = "—" if math.isnan(t["reduction"]) else f"{t['reduction']:.0%}"
        verdict = "met" if t["met"] else f"missed: {t['missed']}"
        lines.append(
            f"| {t['problem']} | {t['load']:.2f} | " + " | ".join(cells)
            + f" | {t['best_baseline']} | {reduction} | {'yes' if t['overloaded'] else 'no'} | "
            + f"{verdict} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(df: pd.DataFrame, path: Path) -> None:
    """Loss ratio against accuracy per policy: one panel per digits load, one for the random
    problems; bars: the judge's half-widths."""
    ok = df[df["status"] == "ok"]
    panels = [(f"digits, load {x:.2f}", ok[(ok["kind"] == "digits") & (ok["load"] == x)])
              for x in sorted(ok.loc[ok["kind"] == "digits", "load"].unique())]  # fmt: skip
    if (ok["kind"] == "random").any():
        panels.append(("random profile problems", ok[ok["kind"] == "random"]))
    fig = Figure(figsize=(4 * max(1, len(panels)), 3.8))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(panels)), sharey=False))
    markers = dict(zip(POLICIES, "osD^vP*"))
    for ax, (title, part) in zip(axes, panels):
        for policy in POLICIES:
            p = part[part["policy"] == policy]
            if len(p):
                ax.errorbar(
                    p["accuracy"], p["loss"], xerr=p["accuracy_hw"], yerr=p["loss_hw"],
                    fmt=markers[policy], label=policy, alpha=0.8,
                )  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("accuracy of served jobs (judged)")
        ax.set_ylabel("loss ratio (judged)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summarize(df: pd.DataFrame, out: Path, target: float, overload_loss: float) -> pd.DataFrame:
    """summary.csv, summary.md and early_exit.png from the per-run table; the targets printed."""
    tables = [evaluate_targets(df, target, overload_loss, p) for p in OURS]
    summary = (
        pd.concat([t for t in tables if len(t)], ignore_index=True)
        if any(len(t) for t in tables)
        else pd.DataFrame()
    )
    summary.to_csv(out / "summary.csv", index=False)
    if summary.empty:
        print("no problem has both a baseline and our optimizer done yet")
        return summary
    ours = summary[summary["policy"] == "ours"]
    (out / "summary.md").write_text(markdown(df, ours))
    plot(df, out / "early_exit.png")
    print(summary.drop(columns=["kind"]).to_string(float_format=lambda x: f"{x:.4f}"))
    for policy, part in summary.groupby("policy", sort=False):
        over = part[part["overloaded"]]
        print(
            f"{policy}: reduction target ({target:.0%} lower loss at equal or higher accuracy) met "
            f"on {int(over['met_reduction'].astype(bool).sum())} of {len(over)} overloaded "
            "problems; "
            f"never worse than a baseline on {int(part['never_worse'].sum())} of {len(part)}"
        )
    print(f"saved {out}/early_exit.csv, summary.csv, summary.md, early_exit.png")
    return summary


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", type=float, nargs="*", default=list(LOADS))
    ap.add_argument("--random", type=int, default=8, help="random profile problems")
    ap.add_argument("--seed", type=int, default=515_151, help="of the random problems")
    ap.add_argument("--ckpt", default=None, help="scorer=hybrid with this checkpoint")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per search; 0: none")
    ap.add_argument("--budget-evals", type=int, default=None, help="simulations per search")
    ap.add_argument("--max-arrivals", type=int, default=300_000, help="per search simulation")
    ap.add_argument("--judge-arrivals", type=int, default=1_000_000, help="per judge simulation")
    ap.add_argument("--alternatives", type=int, default=1, help="set on every service if > 1")
    ap.add_argument("--target", type=float, default=0.5, help="the loss reduction targeted")
    ap.add_argument("--penalty", type=float, default=100.0, help="ours: per unit of excess loss")
    ap.add_argument("--overload-loss", type=float, default=0.05)
    ap.add_argument("--threshold", type=float, default=0.8, help="fixed_threshold's")
    ap.add_argument("--tc23-max-loss", type=float, default=None, help="null: the problem's")
    add_quiet_options(ap)
    ap.add_argument("--max-wait", type=float, default=1800.0, help="seconds to wait for quiet")
    ap.add_argument("--out", default="experiments/results/early_exit")
    ap.add_argument("--summarize-only", action="store_true")
    args = ap.parse_args(argv)
    checks = (
        ("--random", args.random, args.random >= 0),
        ("--budget", args.budget, args.budget >= 0),
        ("--budget-evals", args.budget_evals, args.budget_evals is None or args.budget_evals >= 1),
        ("--alternatives", args.alternatives, args.alternatives >= 1),
        ("--target", args.target, 0.0 < args.target < 1.0),
        ("--penalty", args.penalty, args.penalty >= 0),
        ("--loads", args.loads, all(x > 0 for x in args.loads)),
    )
    for name, value, good in checks:
        if not good:
            ap.error(f"{name}: got {value!r}; see --help for the allowed values")
    if args.budget == 0 and args.budget_evals is None:
        ap.error("--budget 0 needs --budget-evals (a search needs a budget)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if not args.summarize_only:
            torch.set_num_threads(1)  # one CPU, for the surrogate as for the simulator
            check_settings(out, args)
            run_study(args, out)
        df = latest(rows_of(out).read(), KEY)
    except (ValueError, ScenarioError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    summarize(df, out, args.target, args.overload_loss)


if __name__ == "__main__":
    main()
