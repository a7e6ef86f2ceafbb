"""`python -m chainnet.optimize ckpt_path=model.ckpt problem=problem.yaml budget_s=60`

Searches the placements and exit thresholds of a deployment problem (`chainnet.optim`) with the
surrogate (`scorer=surrogate`, the default), the simulator (`scorer=simulator`) or both
(`scorer=hybrid`: the surrogate searches, the simulator confirms; `chainnet.optim.hybrid`), under
a budget of seconds (`budget_s`), candidates scored (`budget_evals`; simulations under
`scorer=hybrid`) or both, then simulates the best `top_k` candidates afresh and returns the best
by simulation, with its predicted and simulated QoS. Writes to the run folder: result.json
(decisions, predicted and simulated QoS; with `scorer=hybrid`, what each phase spent),
best_scenario.yaml (the deployment, ready for `python -m chainnet.simulate`), candidates.csv,
history.csv and convergence.png (best objective against time). A baseline strategy (`exit_last`,
`fixed_threshold`, `tc23`, `load_unaware`; `chainnet.optim.baselines`, settings `baseline.*`)
proposes its one deployment, confirmed the same way; what it says is printed and kept in
result.json under `baseline`. `objective=front` searches the Pareto front of loss ratio against
accuracy instead (NSGA-II, `chainnet.optim.front`), simulates every point of it afresh, and writes
result.json, front.csv and front.png.

A checkpoint trained on scenarios of another preset than the problem's gives one warning line
naming both (`chainnet.optim.presets`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from chainnet.cli.common import command
from chainnet.configs import settings_from
from chainnet.optim.baselines import BASELINES, BaselineSettings, load_problem
from chainnet.optim.front import (
    check_front_settings,
    confirm_front,
    front_report,
    front_search,
    write_front,
)
from chainnet.optim.hybrid import HybridSplit, optimize_hybrid
from chainnet.optim.presets import warn_preset
from chainnet.optim.problem import Problem
from chainnet.optim.report import describe_space, json_safe, report, write_outputs
from chainnet.optim.scorers import make_scorer
from chainnet.optim.search import Budget, Optimization, optimize
from chainnet.optim.space import SearchSpace


def search(cfg: DictConfig, space: SearchSpace) -> Optimization:
    """The search and confirmation `cfg` asks for."""
    hybrid = cfg.scorer == "hybrid"
    h = cfg.hybrid
    # checked before the checkpoint loads: one line naming the setting
    Budget(cfg.budget_s, cfg.budget_evals)
    baseline = BaselineSettings(cfg.baseline.threshold, cfg.baseline.max_loss)
    baseline = baseline if cfg.strategy in BASELINES else None
    if hybrid and cfg.strategy in BASELINES:
        raise ValueError(
            f"strategy={cfg.strategy} is a baseline (one deployment, no search): use "
            "scorer=simulator or scorer=surrogate, not hybrid"
        )
    split = HybridSplit(h.surrogate_share, h.screen_share, h.surrogate_evals) if hybrid else None
    settings, engine = settings_from(cfg.simulator)
    scorer = make_scorer(
        cfg.scorer, space, cfg.ckpt_path, settings, engine, int(cfg.seed), level=h.level
    )
    warn_preset(scorer, space.problem, str(cfg.problem))
    run = optimize_hybrid if hybrid else optimize
    options = {"split": split} if hybrid else {"baseline": baseline}
    return run(
        space, scorer, cfg.strategy,
        cfg.budget_s,
        budget_evals=cfg.budget_evals, seed=int(cfg.seed), batch_size=cfg.batch_size,
        top_k=cfg.top_k, settings=settings, engine=engine, progress=bool(cfg.progress),
        **options,
    )  # fmt: skip


OBJECTIVES = ("problem", "front")


def run_front(cfg: DictConfig, space: SearchSpace) -> dict[str, Any]:
    """`objective=front`: NSGA-II on loss and accuracy, each point of the front simulated."""
    front_search_checks(cfg, space)
    settings, engine = settings_from(cfg.simulator)
    scorer = make_scorer(cfg.scorer, space, cfg.ckpt_path, settings, engine, int(cfg.seed))
    warn_preset(scorer, space.problem, str(cfg.problem))
    result = front_search(
        space, scorer, cfg.budget_s, budget_evals=cfg.budget_evals, seed=int(cfg.seed),
        pop_size=cfg.front.pop_size, progress=bool(cfg.progress),
    )  # fmt: skip
    table = confirm_front(space, result, scorer, settings, engine, int(cfg.seed) + 1)
    info = {
        "objective": "front",
        "scorer": scorer.name,
        "budget_s": cfg.budget_s,
        "budget_evals": cfg.budget_evals,
        "pop_size": cfg.front.pop_size,
    }
    summary = write_front(space, result, table, info, Path(cfg.paths.output_dir))
    print(front_report(result, table, scorer.name))
    print(f"outputs in {Path(cfg.paths.output_dir)}")
    return summary


def front_search_checks(cfg: DictConfig, space: SearchSpace) -> None:
    """What `objective=front` refuses before a checkpoint loads, one line each."""
    Budget(cfg.budget_s, cfg.budget_evals)
    check_front_settings(space.problem, cfg.scorer, cfg.front.pop_size)


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"objective: got {cfg.objective!r}; one of {OBJECTIVES}")
    # a baseline reads every measured vector of a profile (chainnet.optim.baselines)
    load = load_problem if cfg.strategy in BASELINES else Problem.load
    space = SearchSpace(load(cfg.problem))
    label = space.problem.name or str(cfg.problem)
    print(describe_space(space, label))
    if cfg.objective == "front":
        return run_front(cfg, space)
    outcome = search(cfg, space)
    summary = write_outputs(outcome, cfg.paths.output_dir, label)
    print(report(outcome))
    plan = outcome.result.plan
    if plan is not None:
        print("\n".join([f"baseline {plan.policy}: load-unaware placement", *plan.notes]))
        summary["baseline"] = {"policy": plan.policy, "notes": plan.notes, **plan.record}
        out = Path(cfg.paths.output_dir) / "result.json"
        out.write_text(json.dumps(json_safe(summary), indent=2))
    tally = getattr(outcome.scorer, "tally", None)  # the surrogate's out-of-range count
    warning = tally and tally.warning(
        "candidates scored",
        "the surrogate extrapolates there; the best were confirmed by simulation",
    )
    if warning:
        print(warning, file=sys.stderr)
    print(f"outputs in {Path(cfg.paths.output_dir)}")
    return summary


@command("optimize")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
