"""`python -m chainnet.optimize ckpt_path=model.ckpt problem=problem.yaml budget_s=60`

Searches the placements and exit thresholds of a deployment problem (`chainnet.problem`) with the
surrogate (`scorer=surrogate`, the default) or the simulator (`scorer=simulator`), then simulates
the best `top_k` candidates afresh and returns the best by simulation, with its predicted and
simulated QoS. Writes to the run folder: result.json (decisions, predicted and simulated QoS),
best_scenario.yaml (the deployment, ready for `python -m chainnet.simulate`), candidates.csv,
history.csv and convergence.png (best objective against time).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from chainnet.cli import CONF, settings_from, user_errors
from chainnet.problem import Problem
from chainnet.search import SCORERS, SimulatorScorer, SurrogateScorer, confirm, run_search
from chainnet.sim import SimulatorSettings


def make_scorer(cfg: DictConfig, problem: Problem, settings: SimulatorSettings, engine: str):
    if cfg.scorer == "surrogate":
        if not cfg.ckpt_path:
            raise ValueError("ckpt_path: scorer=surrogate needs a checkpoint of train.py")
        from chainnet.surrogate import Surrogate

        return SurrogateScorer(problem, Surrogate.load(cfg.ckpt_path))
    if cfg.scorer == "simulator":
        return SimulatorScorer(problem, settings, engine, int(cfg.seed))
    raise ValueError(f"scorer: got {cfg.scorer!r}; one of {SCORERS}")


def plot_convergence(histories: dict[str, pd.DataFrame], path: Path, title: str) -> None:
    from chainnet.evaluate import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, h in histories.items():
        if len(h):
            ax.step(h["elapsed_s"], h["best_objective"], where="post", label=label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("best objective found (scorer's estimate)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _no_nan(obj: Any) -> Any:
    """Plain JSON: NaN (an undefined accuracy) becomes null, numpy numbers become floats."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    return obj


def _services(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    return [] if df is None else json.loads(df.to_json(orient="records"))


def run(cfg: DictConfig) -> dict[str, Any]:
    problem = Problem.load(cfg.problem)
    settings, engine = settings_from(cfg.simulator)
    scorer = make_scorer(cfg, problem, settings, engine)
    print(
        f"problem {problem.name or cfg.problem}: {len(problem.devices)} devices, "
        f"{len(problem.fragments)} fragments, {len(problem.exits)} exits, "
        f"{problem.space_size():.3g} candidates; objective {problem.objective.kind}"
    )
    result = run_search(
        problem, scorer, cfg.strategy, float(cfg.budget_s), int(cfg.seed),
        cfg.batch_size, bool(cfg.progress),
    )  # fmt: skip
    t0 = time.perf_counter()
    table = confirm(problem, result, scorer, cfg.top_k, settings, engine, int(cfg.seed) + 1)
    confirm_s = time.perf_counter() - t0
    best = table.iloc[0]
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cand = np.asarray(best["candidate"])
    summary = {
        "problem": problem.name,
        "scorer": scorer.name,
        "strategy": cfg.strategy,
        "budget_s": float(cfg.budget_s),
        "search_s": result.elapsed_s,
        "confirm_s": confirm_s,
        "scored": len(result.scored),
        "complete": result.complete,
        **problem.describe(cand),
        **{
            k: float(best[k])
            for k in (
                "predicted_objective",
                "predicted_loss",
                "predicted_accuracy",
                "simulated_objective",
                "simulated_loss",
                "simulated_accuracy",
            )
        },  # fmt: skip
        "predicted": _services(best["predicted_services"]),
        "simulated": _services(best["simulated_services"]),
    }
    (out / "result.json").write_text(json.dumps(_no_nan(summary), indent=2))
    (out / "best_scenario.yaml").write_text(problem.scenario(cand).to_yaml())
    table.assign(
        candidate=[json.dumps(problem.describe(np.asarray(c))) for c in table["candidate"]]
    ).drop(columns=["predicted_services", "simulated_services"]).to_csv(
        out / "candidates.csv", index=False
    )
    result.history.to_csv(out / "history.csv", index=False)
    plot_convergence(
        {f"{cfg.strategy} ({scorer.name})": result.history},
        out / "convergence.png",
        problem.name or str(cfg.problem),
    )
    print(f"\nscored {len(result.scored):,} candidates in {result.elapsed_s:.1f} s ({scorer.name})")
    print("best by simulation of the top", len(table), "(simulated afresh):")
    for key, value in problem.describe(cand).items():
        print(f"  {key}: {value}")
    print(
        f"  objective predicted {best['predicted_objective']:.4g}, "
        f"simulated {best['simulated_objective']:.4g}; loss predicted "
        f"{best['predicted_loss']:.4g}, simulated {best['simulated_loss']:.4g}"
    )
    merged = best["predicted_services"].merge(
        best["simulated_services"], on="service", suffixes=("_pred", "_sim")
    )
    print(merged.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"outputs in {out}")
    return summary


@hydra.main(version_base="1.3", config_path=CONF, config_name="optimize")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()
