"""Hybrid, surrogate-driven and simulator-driven deployment search at equal wall-clock budgets.

The study of issue 11. Problems come from held-out seeds of `problem_family` (`--per-family` of
each of `--families`: small, medium, large; objectives alternate min_loss / max_accuracy). For
each budget (`--budgets`, seconds) four strategies search each problem with the same search
strategy (`--search`) and confirm their `--top-k` best by simulation, as
`python -m chainnet.optimize` does:

- `hybrid`: `scorer=hybrid` (`chainnet.optim.hybrid.optimize_hybrid`, 90 % intervals);
- `surrogate`: scored by the surrogate alone;
- `simulator`: scored by simulation at the default precision (1 % relative half-width);
- `simulator_coarse`: scored by simulation at a coarse precision (`--coarse-precision`, 5 %):
  more, shorter simulations, so that the simulator baseline is as strong as it can be.

Every returned deployment is judged by ONE common simulation no search used (`study.judge`:
seed `study.EVAL_SEED`, the default precision, `--max-arrivals`); the judge's 95 % half-width of
the objective is kept with it (the objective at the corners of the chains' loss-ratio and accuracy
half-widths). A small problem's exhaustive optimum is the best judged objective over all its
feasible candidates.

Resuming (`study.Rows`): every row (problem, budget, strategy) is appended to search_budget.csv
as soon as it is done (one line, flushed and fsynced), and a rerun skips the rows already there;
the exhaustive optima are kept in optima.csv the same way.

Quiet machine (`study.timed`): a run is never timed while another job shares the machine. Before
each timed row the script waits until the CPU time that other processes use (measured from
/proc/stat over `--probe-s` seconds, in CPUs busy) is at most `--max-load` (default 0.7), saying
once that it waits. During the row it measures again: the busy CPUs of the whole machine minus
this process's own CPU time, over the row's wall clock (`load_during`). A row with `load_during`
above `--max-load` is written with contended=True, is redone at once (up to `--retries` times),
and a rerun redoes any key whose last row is contended. Summaries use uncontended rows only.

Regret: a row's judged objective minus the best known for its problem (the exhaustive optimum for
small problems, else the best any strategy returned at any budget). Targets (printed, and in
summary.md): (1) at each budget, on at least 80 % of problems, hybrid is at least as good as the
best simulator-only strategy within the judge's half-width (hybrid <= best + the larger of the
two half-widths); (2) at the largest budget, hybrid is strictly better (beyond that half-width)
on at least 6 of 8 (75 %) large problems; (3) on every small problem and budget, hybrid is within
1 % of the optimum: judged objective <= optimum + 0.01 (one percentage point of loss ratio or of
accuracy: an absolute tolerance, since a loss-ratio optimum is often near 0, where a relative one
means nothing).

    python experiments/search_budget.py --ckpt edge_model.ckpt [--per-family 8] [--budgets 10 60]
    python experiments/search_budget.py --summarize-only

Saves under --out: search_budget.csv, optima.csv, summary.csv, summary.md (tables for the README)
and search_budget.png (regret by family and budget, one box per strategy).
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from study import LoadMeter, Rows, add_quiet_options, final_rows, judge, timed

from chainnet.learn.surrogate import Surrogate
from chainnet.optim.generators import FAMILIES, problem_family
from chainnet.optim.hybrid import optimize_hybrid
from chainnet.optim.scorers import HybridScorer, SimulatorScorer, SurrogateScorer
from chainnet.optim.search import optimize
from chainnet.optim.space import SearchSpace
from chainnet.sim import SimulatorSettings, make_engine

MAX_ARRIVALS = 300_000  # every simulation's cap, as datagen and chainnet.optimize
COARSE = 0.05  # simulator_coarse: relative 95 % half-width (the default precision is 0.01)
STRATEGIES = ("hybrid", "surrogate", "simulator", "simulator_coarse")
SIMULATORS = ("simulator", "simulator_coarse")
LEVEL = 0.9  # the hybrid's prediction intervals
SMALL_TOLERANCE = 0.01  # target 3: within one percentage point of the exhaustive optimum
SHARE_AS_GOOD = 0.8  # target 1
SHARE_LARGE_BETTER = 0.75  # target 2: 6 of 8
KEY = ["problem", "budget_s", "strategy"]
COLUMNS = [
    *KEY, "family", "objective_kind", "log10_space", "budget_evals", "search", "objective",
    "loss", "accuracy", "judge_hw", "predicted_objective", "scored", "simulations", "search_s",
    "wall_s", "stopped_by", "load_before", "load_during", "contended", "candidate", "finished",
]  # fmt: skip
OPTIMA = ["problem", "optimum", "optimum_hw", "candidates", "seconds", "candidate"]


# ---- the problems and the resume bookkeeping (no search runs here) ----------------------------
def study_problems(families, per_family: int, seed: int) -> list[tuple[str, SearchSpace]]:
    """(family, search space) of every problem: seeds `seed`, `seed + 1`, ... per family, the
    objective alternating min_loss (even) and max_accuracy (odd)."""
    out = []
    for family in families:
        for i in range(per_family):
            objective = "max_accuracy" if i % 2 else "min_loss"
            out.append((family, SearchSpace(problem_family(family, seed + i, objective))))
    return out


def rows_of(out: Path) -> Rows:
    """The study's rows (search_budget.csv under `out`)."""
    return Rows(out / "search_budget.csv", COLUMNS, KEY)


def optima_of(out: Path) -> Rows:
    """The small problems' exhaustive optima (optima.csv under `out`), one row per problem."""
    return Rows(out / "optima.csv", OPTIMA, ["problem"])


# ---- the exhaustive optima and the strategies ----------------------------------------------
def exhaustive(space: SearchSpace, settings: SimulatorSettings) -> dict:
    """The best judged objective over every feasible candidate of a small problem."""
    t0 = time.perf_counter()
    best, n = None, 0
    for c in space.enumerate_feasible():
        n += 1
        j = judge(space, c, settings)
        if best is None or j["objective"] < best[0]["objective"]:
            best = (j, c)
    j, c = best
    return {
        "problem": space.problem.name, "optimum": j["objective"], "optimum_hw": j["judge_hw"],
        "candidates": n, "seconds": time.perf_counter() - t0, "candidate": genes(c),
    }  # fmt: skip


def ensure_optimum(space: SearchSpace, args, optima: Rows) -> None:
    """The exhaustive optimum of a small problem, computed and appended unless already there."""
    name = space.problem.name
    if not optima.pending([(name,)], optima.read()):
        return
    opt = exhaustive(space, settings_of(args))
    optima.append(opt)
    print(f"{name}: optimum {opt['optimum']:.4f} over {opt['candidates']} candidates "
          f"({opt['seconds']:.0f} s)")  # fmt: skip


def genes(candidate) -> str:
    return " ".join(str(int(g)) for g in candidate)


def run_strategy(space, strategy: str, budget: float, args, surrogate) -> dict:
    """One timed search and its confirmation: the chosen candidate and what it spent."""
    judge_settings = settings_of(args)
    common = {
        "budget_evals": args.budget_evals, "seed": 0, "top_k": args.top_k,
        "settings": judge_settings, "confirm_seed": 2,
    }  # fmt: skip
    if strategy == "hybrid":
        scorer = HybridScorer(
            SurrogateScorer(space, surrogate, LEVEL), SimulatorScorer(space, judge_settings, seed=1)
        )
        out = optimize_hybrid(space, scorer, args.search, budget, **common)
        ph = out.result.phases
        scored, sims = ph["surrogate_scored"] + ph["local_predicted"], ph["simulated"]
    else:
        if strategy == "surrogate":
            scorer = SurrogateScorer(space, surrogate)
        else:
            coarse = strategy == "simulator_coarse"
            scorer = SimulatorScorer(space, settings_of(args, coarse), seed=1)
        out = optimize(space, scorer, args.search, budget, **common)
        scored = len(out.result.scored)
        sims = 0 if strategy == "surrogate" else scored
    return {
        "candidate": np.asarray(out.best["candidate"]),
        "predicted_objective": float(out.best["predicted_objective"]),
        "scored": scored,
        "simulations": sims + len(out.table),  # the confirmation's too
        "search_s": out.result.elapsed_s,
        "stopped_by": out.result.stopped_by,
    }


def settings_of(args, coarse: bool = False) -> SimulatorSettings:
    """The simulator's settings: the default precision (the judge's, the confirmation's and
    `simulator`'s), or `--coarse-precision` (`simulator_coarse`)."""
    extra = {"precision": args.coarse_precision} if coarse else {}
    return SimulatorSettings(max_arrivals=args.max_arrivals, **extra)


def warm_up(space: SearchSpace, surrogate) -> None:
    """Compile the simulator and load the network before anything is timed."""
    c = space.random_candidate(np.random.default_rng(0))
    make_engine(space.scenario(c), 0, SimulatorSettings(max_arrivals=2000)).run()
    if surrogate is not None:
        SurrogateScorer(space, surrogate).score([c])


def run_row(family, space, budget, strategy, args, surrogate, meter) -> dict:
    """One row: wait for a quiet machine, search (timed), judge; with the load around it."""
    job = partial(run_strategy, space, strategy, budget, args, surrogate)
    found, record = timed(job, meter, args.max_load)
    p = space.problem
    return {
        "problem": p.name, "budget_s": budget, "strategy": strategy, "family": family,
        "objective_kind": p.objective.kind, "log10_space": math.log10(space.size),
        "budget_evals": args.budget_evals, "search": args.search,
        **judge(space, found["candidate"], settings_of(args)),
        **{k: v for k, v in found.items() if k != "candidate"},
        "candidate": genes(found["candidate"]), **record,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }  # fmt: skip


def run_study(args, out: Path) -> None:
    """Every pending row, appended as it is done (see the module's docstring)."""
    rows, optima = rows_of(out), optima_of(out)
    surrogate = Surrogate.load(args.ckpt, warn_ranges=False)
    surrogate.check_level(LEVEL)  # the hybrid needs calibrated intervals
    meter = LoadMeter(args.probe_s)
    warmed = False
    for family, space in study_problems(args.families, args.per_family, args.seed):
        name = space.problem.name
        if family == "small":
            ensure_optimum(space, args, optima)
        keys = [(name, b, s) for b in args.budgets for s in STRATEGIES]
        for _, budget, strategy in rows.pending(keys, rows.read()):
            if not warmed:
                warm_up(space, surrogate)
                warmed = True
            for _ in range(args.retries + 1):
                row = run_row(family, space, budget, strategy, args, surrogate, meter)
                rows.append(row)
                print(f"{name} {budget:4.0f} s {strategy:16s}: objective {row['objective']:.4f} "
                      f"± {row['judge_hw']:.4f}, scored {row['scored']}, simulations "
                      f"{row['simulations']}, others' load {row['load_during']:.2f}"
                      + (" CONTENDED" if row["contended"] else ""))  # fmt: skip
                if not row["contended"]:
                    break


# ---- regret, targets and the summary ---------------------------------------------------------
def with_regret(rows: pd.DataFrame, optima: pd.DataFrame) -> pd.DataFrame:
    """The final rows (the last row of each key, where uncontended) with `reference` (the optimum
    where known, else the best any strategy returned for the problem) and `regret` (objective -
    reference)."""
    df = final_rows(rows, KEY)
    best = df.groupby("problem")["objective"].transform("min")
    known = optima.drop_duplicates("problem", keep="last").set_index("problem")["optimum"]
    opt = df["problem"].map(known) if len(optima) else np.nan
    reference = pd.Series(opt, index=df.index, dtype=float).fillna(best)
    return df.assign(reference=reference, regret=df["objective"] - reference)


def head_to_head(df: pd.DataFrame) -> pd.DataFrame:
    """Per problem and budget: hybrid against the best simulator-only strategy, with the larger
    of their judge half-widths (`hw`), `as_good` (hybrid <= best + hw), `better` (hybrid <
    best - hw)."""
    h = df[df["strategy"] == "hybrid"].set_index(["problem", "budget_s"])
    sims = df[df["strategy"].isin(SIMULATORS)].sort_values("objective")
    s = sims.drop_duplicates(["problem", "budget_s"]).set_index(["problem", "budget_s"])
    sim = s[["objective", "judge_hw", "strategy"]].add_suffix("_sim")
    both = h[["family", "objective", "judge_hw"]].join(sim, how="inner")
    hw = np.fmax(both["judge_hw"], both["judge_hw_sim"])
    return both.assign(
        hw=hw,
        as_good=both["objective"] <= both["objective_sim"] + hw,
        better=both["objective"] < both["objective_sim"] - hw,
    ).reset_index()


def evaluate_targets(df: pd.DataFrame) -> list[dict]:
    """The issue's three targets on the regret table `df` (`with_regret`): one dict each with
    `key` ("1 at 10 s", "2", "3"), `target`, `met` and `detail`."""
    out = []
    duel = head_to_head(df)
    for budget, part in duel.groupby("budget_s"):
        share = float(part["as_good"].mean())
        out.append({
            "key": f"1 at {budget:g} s",
            "target": f"1: hybrid as good as the best simulator (half-width), {budget:g} s",
            "met": share >= SHARE_AS_GOOD,
            "detail": f"{int(part['as_good'].sum())} of {len(part)} problems ({share:.0%}; "
                      f"target {SHARE_AS_GOOD:.0%})",
        })  # fmt: skip
    large = duel[duel["family"] == "large"]
    if len(large):
        top = large["budget_s"].max()
        part = large[large["budget_s"] == top]
        need = math.ceil(SHARE_LARGE_BETTER * len(part))
        out.append({
            "key": "2",
            "target": f"2: hybrid strictly better on large problems, {top:g} s",
            "met": int(part["better"].sum()) >= need,
            "detail": f"{int(part['better'].sum())} of {len(part)} (target {need})",
        })  # fmt: skip
    small = df[(df["family"] == "small") & (df["strategy"] == "hybrid")]
    if len(small):
        worst = float(small["regret"].max())
        out.append({
            "key": "3",
            "target": f"3: hybrid within {SMALL_TOLERANCE} of the exhaustive optimum, every small",
            "met": worst <= SMALL_TOLERANCE + 1e-12,
            "detail": f"{int((small['regret'] <= SMALL_TOLERANCE + 1e-12).sum())} of "
                      f"{len(small)} runs; worst regret {worst:.4f}",
        })  # fmt: skip
    return out


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per family, budget and strategy: problems, median and worst regret, candidates scored and
    simulations spent (medians), the judge's median half-width."""
    return (
        df.groupby(["family", "budget_s", "strategy"])
        .agg(
            problems=("problem", "nunique"),
            median_regret=("regret", "median"),
            worst_regret=("regret", "max"),
            scored=("scored", "median"),
            simulations=("simulations", "median"),
            judge_hw=("judge_hw", "median"),
        )
        .reset_index()
    )


COUNTS = ("problems", "scored", "simulations")  # medians of counts: whole numbers in the table


def cell(v, column: str = "") -> str:
    """A table cell: counts as whole numbers with thousands separators, other floats with 4
    decimals (whole ones without)."""
    if isinstance(v, (float, np.floating, int, np.integer)) and column in COUNTS:
        return f"{round(float(v)):,}"
    if isinstance(v, (float, np.floating)):
        return f"{v:g}" if float(v).is_integer() else f"{v:.4f}"
    return str(v)


def markdown(table: pd.DataFrame) -> str:
    """`table` as a markdown table."""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join(cell(v, c) for v, c in zip(r, table.columns)) + " |"
        for r in table.itertuples(index=False)
    ]
    return "\n".join(lines)


def summarize(out: Path) -> list[dict]:
    """summary.csv, summary.md and search_budget.png from the saved rows; the targets."""
    rows = rows_of(out).read()
    if not len(rows):
        print(f"no rows in {out / 'search_budget.csv'} yet: nothing to summarize")
        return []
    df = with_regret(rows, optima_of(out).read())
    table = summary_table(df)
    targets = evaluate_targets(df)
    table.to_csv(out / "summary.csv", index=False)
    verdicts = pd.DataFrame(
        [{"target": t["target"], "met": "yes" if t["met"] else "NO", "detail": t["detail"]}
         for t in targets]
    )  # fmt: skip
    (out / "summary.md").write_text(markdown(table) + "\n\n" + markdown(verdicts) + "\n")
    print(markdown(table), "", markdown(verdicts), sep="\n")
    plot(df, out / "search_budget.png")
    print(f"saved {out}/summary.csv, summary.md, search_budget.png")
    return targets


def plot(df: pd.DataFrame, path: Path) -> None:
    """Regret by family (a panel each) and budget (a group each), one box per strategy."""
    families = [f for f in FAMILIES if f in set(df["family"])]
    budgets = sorted(df["budget_s"].unique())
    fig = Figure(figsize=(4.5 * max(1, len(families)), 4))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(families)), sharey=True))
    width = 0.8 / len(STRATEGIES)
    for ax, family in zip(axes, families):
        part = df[df["family"] == family]
        for k, strategy in enumerate(STRATEGIES):
            data = [part[(part["budget_s"] == b) & (part["strategy"] == strategy)]["regret"]
                    for b in budgets]  # fmt: skip
            pos = np.arange(len(budgets)) + (k - (len(STRATEGIES) - 1) / 2) * width
            box = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True)
            for patch in box["boxes"]:
                patch.set_facecolor(f"C{k}")
            ax.plot([], [], "s", color=f"C{k}", label=strategy)
        ax.set_xticks(np.arange(len(budgets)), [f"{b:g} s" for b in budgets])
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(f"{family} problems")
    axes[0].set_ylabel("regret of the returned deployment (judged; lower is better)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", help="a surrogate trained on edge-like scenarios (with intervals)")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--per-family", type=int, default=8)
    ap.add_argument("--budgets", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument(
        "--budget-evals", type=int, default=None,
        help="also stop each search after this many evaluations (simulations for hybrid)",
    )  # fmt: skip
    ap.add_argument("--search", default="anneal", help="the search strategy of every scorer")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=424_242, help="held out: no dataset uses it")
    add_quiet_options(ap)
    ap.add_argument("--retries", type=int, default=1, help="redos of a contended row at once")
    ap.add_argument("--max-arrivals", type=int, default=MAX_ARRIVALS, help="per simulation")
    ap.add_argument("--coarse-precision", type=float, default=COARSE)
    ap.add_argument("--out", default="experiments/results/search_budget")
    ap.add_argument("--summarize-only", action="store_true", help="remake the summary and plot")
    ap.add_argument(
        "--optima-only", action="store_true",
        help="only the small problems' exhaustive optima (untimed: may share the machine)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if not (args.summarize_only or args.optima_only) and not args.ckpt:
        ap.error("--ckpt: required for the hybrid and surrogate strategies")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    torch.set_num_threads(1)  # one CPU: the simulator baseline runs on one too
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.optima_only:
            for family, space in study_problems(args.families, args.per_family, args.seed):
                if family == "small":
                    ensure_optimum(space, args, optima_of(out))
            return
        if not args.summarize_only:
            run_study(args, out)
        summarize(out)
    except (ValueError, FileNotFoundError) as exc:  # a bad checkpoint or table: one line
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
