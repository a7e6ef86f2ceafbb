"""What an optimization leaves behind: the summary (result.json), the best deployment
(best_scenario.yaml), the confirmed candidates (candidates.csv), the search history (history.csv),
the convergence plot (convergence.png), and the text `python -m chainnet.optimize` prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from chainnet.optim.search import Optimization
from chainnet.optim.space import SearchSpace

OUTPUTS = ("result.json", "best_scenario.yaml", "candidates.csv", "history.csv", "convergence.png")
ESTIMATES = (
    "predicted_objective",
    "predicted_loss",
    "predicted_accuracy",
    "simulated_objective",
    "simulated_loss",
    "simulated_accuracy",
)


def json_safe(obj: Any) -> Any:
    """Plain JSON: NaN (an undefined accuracy) becomes null, numpy numbers become floats."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    return obj


def _records(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    return [] if df is None else json.loads(df.to_json(orient="records"))


def describe_space(space: SearchSpace, label: str) -> str:
    """One line: the size of the problem and of its search space."""
    problem = space.problem
    first = [e for e in space.exit_genes if e.alternative == 0]  # an alternative's copies: once
    tables = [e for e in first if e.fragment is not None]
    vectors = [e for e in first if e.fragment is None]
    exits = len(tables) + sum(len(e.labels[0]) for e in vectors)
    chosen = f" ({len(vectors)} services choose a threshold vector)" if vectors else ""
    if space.share_genes:
        mixed = [problem.services[g.service] for g in space.share_genes]
        chosen += "; jobs split between alternatives: " + ", ".join(
            f"{sv.name} ({sv.alternatives})" for sv in mixed
        )
    return (
        f"problem {label}: {len(problem.devices)} devices, "
        f"{sum(len(sv.fragments) for sv in problem.services)} fragments, {exits} exits{chosen}, "
        f"{space.size:.3g} candidates; objective {problem.objective.kind}"
    )


def alternative_lines(mixes: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per deployed alternative of each mixed service (`SearchSpace.describe`'s
    `alternatives`): its share, placement and exit choice."""
    lines = []
    for name, alternatives in mixes.items():
        lines.append(f"  {name}: its jobs split between the alternatives deployed")
        for alt in alternatives:
            choice = [f"placement {alt['placement']}"]
            choice += [f"{k} {alt[k]}" for k in ("thresholds", "vector") if alt.get(k)]
            lines.append(
                f"    alternative {alt['alternative']}, share {alt['share']:g}: "
                + "; ".join(choice)
            )
    return lines


def summary(run: Optimization) -> dict[str, Any]:
    """The contents of result.json: the settings, the decisions of the best candidate by
    simulation, its predicted and simulated objective, and its per-service QoS."""
    best, result = run.best, run.result
    return {
        "problem": run.space.problem.name,
        "scorer": run.scorer.name,
        "strategy": run.strategy,
        "budget_s": None if run.budget.seconds is None else float(run.budget.seconds),
        "budget_evals": run.budget.evals,
        "search_s": result.elapsed_s,
        "confirm_s": run.confirm_s,
        "scored": len(result.scored),
        "complete": result.complete,
        **run.space.describe(run.best_candidate),
        **{k: float(best[k]) for k in ESTIMATES},
        "predicted": _records(best["predicted_services"]),
        "simulated": _records(best["simulated_services"]),
        **({"hybrid": result.phases} if result.phases else {}),  # what each phase spent
    }


def phases_line(phases: dict[str, Any]) -> str:
    """What each phase of a hybrid search spent, in one line."""
    return (
        f"hybrid: the surrogate scored {phases['surrogate_scored']:,} candidates "
        f"({phases['surrogate_s']:.1f} s, stopped by {phases['surrogate_stopped_by']}); the "
        f"simulator {phases['screened']:,} by lower bound at level {phases['level']:g} "
        f"({phases['screen_s']:.1f} s) and {phases['local']:,} local moves "
        f"({phases['local_s']:.1f} s, {phases['local_predicted']:,} more predicted)"
    )


def plot_convergence(histories: dict[str, pd.DataFrame], path: str | Path, title: str) -> None:
    """The best objective found against time, one step line per search (label -> history)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for label, h in histories.items():
        if len(h):
            ax.step(h["elapsed_s"], h["best_objective"], where="post", label=label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("best objective found (scorer's estimate)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_outputs(run: Optimization, out: str | Path, title: str) -> dict[str, Any]:
    """Write `OUTPUTS` to the folder `out` (made if missing); returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    space, table = run.space, run.table
    result = summary(run)
    (out / "result.json").write_text(json.dumps(json_safe(result), indent=2))
    (out / "best_scenario.yaml").write_text(space.scenario(run.best_candidate).to_yaml())
    table.assign(
        candidate=[json.dumps(space.describe(np.asarray(c))) for c in table["candidate"]]
    ).drop(columns=["predicted_services", "simulated_services"]).to_csv(
        out / "candidates.csv", index=False
    )
    run.result.history.to_csv(out / "history.csv", index=False)
    plot_convergence(
        {f"{run.strategy} ({run.scorer.name})": run.result.history},
        out / "convergence.png",
        title,
    )
    return result


def report(run: Optimization) -> str:
    """The text printed at the end: what was scored, the best deployment, its QoS."""
    best, result = run.best, run.result
    lines = [
        f"\nscored {len(result.scored):,} candidates in {result.elapsed_s:.1f} s "
        f"({run.scorer.name})",
        f"best by simulation of the top {len(run.table)} (simulated afresh):",
    ]
    decisions = run.space.describe(run.best_candidate)
    mixes = decisions.pop("alternatives", {})
    lines += [f"  {key}: {value}" for key, value in decisions.items() if value]
    lines += alternative_lines(mixes)
    lines.append(
        f"  objective predicted {best['predicted_objective']:.4g}, "
        f"simulated {best['simulated_objective']:.4g}; loss predicted "
        f"{best['predicted_loss']:.4g}, simulated {best['simulated_loss']:.4g}"
    )
    merged = best["predicted_services"].merge(
        best["simulated_services"], on="service", suffixes=("_pred", "_sim")
    )
    lines.append(merged.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if result.phases:
        lines.append(phases_line(result.phases))
    return "\n".join(lines)
