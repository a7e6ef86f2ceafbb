"""Surrogate-driven against simulator-driven deployment search, at equal wall-clock budgets.

On `--problems` problems drawn from held-out seeds (the first `--small` small enough for
exhaustive search), runs the same strategy for each budget with each scorer, confirms the top
candidates by fresh simulation (as `python -m chainnet.optimize` does), and judges what each
returns by one common evaluation: a simulation of the returned deployment with a seed and settings
no search used. Where the problem is small, the true optimum is found by simulating every feasible
candidate with that same evaluation, and the optimality gap is reported.

    python experiments/search_budget.py --ckpt edge_model.ckpt [--problems 10] [--budgets 10 60]

Saves search_budget.csv (one row per problem, budget and scorer), summary.csv (regret against
the best known deployment: median, mean, worst; wins), and search_budget.png under --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from chainnet.learn.surrogate import Surrogate
from chainnet.optim.generators import random_problem
from chainnet.optim.scorers import SimulatorScorer, SurrogateScorer
from chainnet.optim.search import confirm, run_search
from chainnet.optim.space import SearchSpace
from chainnet.sim import SimulatorSettings

EVAL_SEED = 777_777  # the common judge: no search uses this seed


def problems(n: int, small: int, seed: int) -> list[SearchSpace]:
    """The search spaces of `n` random problems, the first `small` small."""
    out = []
    for i, ss in enumerate(np.random.SeedSequence(seed).spawn(n)):
        rng = np.random.default_rng(ss)
        objective = "max_accuracy" if i % 2 else "min_loss"
        if i < small:  # two services of 2-3 fragments on 3 devices: at most a few hundred
            p = random_problem(rng, (3, 3), (2, 2), (2, 3), objective=objective, name=f"p{i}")
        else:
            p = random_problem(rng, (4, 6), (2, 3), (3, 4), objective=objective, name=f"p{i}")
        out.append(SearchSpace(p))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="a surrogate trained on edge-like scenarios")
    ap.add_argument("--problems", type=int, default=10)
    ap.add_argument("--small", type=int, default=3, help="of which small enough for exhaustive")
    ap.add_argument("--budgets", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument(
        "--budget-evals", type=int, default=None,
        help="also stop each search after this many candidates scored (whichever first)",
    )  # fmt: skip
    ap.add_argument("--strategy", default="anneal")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=424_242, help="held out: no dataset uses it")
    ap.add_argument("--out", default="experiments/results/search_budget")
    ap.add_argument(
        "--summarize-only", action="store_true",
        help="remake summary.csv and the plot from the saved search_budget.csv",
    )  # fmt: skip
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.summarize_only:
        summarize(pd.read_csv(out / "search_budget.csv"), out, args.budgets)
        return
    surrogate = Surrogate.load(args.ckpt)
    settings = SimulatorSettings(max_arrivals=300_000)  # as datagen and chainnet.optimize
    rows = []
    for p in problems(args.problems, args.small, args.seed):
        name = p.problem.name
        judge = SimulatorScorer(p, settings, seed=EVAL_SEED)
        optimum = np.nan
        if p.size <= 1000:
            t0 = time.perf_counter()
            every = list(p.enumerate_feasible())
            optimum = min(s.objective for s in judge.score(every))
            print(f"{name}: optimum {optimum:.4f} by simulating all {len(every)} candidates "
                  f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
        for budget in args.budgets:
            for scorer in (
                SurrogateScorer(p, surrogate),
                SimulatorScorer(p, settings, seed=1),
            ):
                res = run_search(
                    p, scorer, args.strategy, budget, budget_evals=args.budget_evals, seed=0
                )
                table = confirm(p, res, scorer, args.top_k, settings, seed=2)
                chosen = table.iloc[0]["candidate"]
                value = judge.score([chosen])[0]
                rows.append(
                    {
                        "problem": name,
                        "objective_kind": p.problem.objective.kind,
                        "space": p.size,
                        "budget_s": budget,
                        "scorer": scorer.name,
                        "scored": len(res.scored),
                        "objective": value.objective,
                        "loss": value.loss,
                        "accuracy": value.accuracy,
                        "optimum": optimum,
                        "gap": value.objective - optimum,
                        "predicted_objective": table.iloc[0]["predicted_objective"],
                    }
                )
                r = rows[-1]
                print(
                    f"{name} budget {budget:4.0f} s {scorer.name:9s}: scored {r['scored']:6d}, "
                    f"objective {r['objective']:.4f} (loss {r['loss']:.4f}), gap {r['gap']:.4f}"
                )
        pd.DataFrame(rows).to_csv(out / "search_budget.csv", index=False)  # kept as it grows
    summarize(pd.DataFrame(rows), out, args.budgets)


def summarize(df: pd.DataFrame, out: Path, budgets) -> None:
    """summary.csv and search_budget.png from the per-run table.

    Regret: a returned deployment's simulated objective minus the best known for its problem (the
    optimum where known, else the best any search returned). Dependability is the worst regret.
    """
    best = df.groupby("problem")["objective"].transform("min")
    df = df.assign(regret=df["objective"] - np.fmin(best, df["optimum"].fillna(np.inf)))
    wide = df.pivot_table(index=["problem", "budget_s"], columns="scorer", values="objective")
    wide["surrogate_better"] = wide["surrogate"] < wide["simulator"] - 1e-3
    wide["simulator_better"] = wide["simulator"] < wide["surrogate"] - 1e-3
    summary = (
        df.groupby(["budget_s", "scorer"])
        .agg(
            scored=("scored", "median"),
            median_regret=("regret", "median"),
            mean_regret=("regret", "mean"),
            worst_regret=("regret", "max"),
            best_known=("regret", lambda r: int((r <= 1e-3).sum())),
            mean_gap=("gap", "mean"),
        )
        .join(
            wide.groupby("budget_s")[["surrogate_better", "simulator_better"]].sum(),
            on="budget_s",
        )
    )
    summary.to_csv(out / "summary.csv")
    print(wide.to_string(float_format=lambda x: f"{x:.4f}"))
    print(summary.to_string(float_format=lambda x: f"{x:.4f}"))
    fig = Figure(figsize=(5 * len(budgets), 4))
    axes = np.atleast_1d(fig.subplots(1, len(budgets), sharey=True))
    for ax, budget in zip(axes, budgets):
        part = df[df["budget_s"] == budget].pivot_table(
            index="problem", columns="scorer", values="regret"
        )
        x = np.arange(len(part))
        ax.bar(x - 0.2, part["surrogate"], 0.4, label="surrogate-driven")
        ax.bar(x + 0.2, part["simulator"], 0.4, label="simulator-driven")
        ax.set_xticks(x, part.index, rotation=45)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(f"budget {budget:.0f} s")
        ax.set_ylabel("regret of the returned deployment (simulated; lower is better)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "search_budget.png", dpi=110)
    print(f"saved {out}/search_budget.csv, summary.csv, search_budget.png")


if __name__ == "__main__":
    main()
