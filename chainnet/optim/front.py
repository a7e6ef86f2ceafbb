"""The loss-accuracy front (`objective=front`): NSGA-II (pymoo) over a search space, two
objectives, the loss ratio (arrival-weighted, as `chainnet.optim.objective`) and minus the accuracy
of served jobs, under the search's budget; then every point of the front simulated afresh.

`front_search` runs NSGA-II by ask/tell over the genes a decision can change (integer sampling,
SBX crossover and polynomial mutation rounded to integers), every offspring repaired to a feasible
placement (`SearchSpace.repair`), every candidate scored once by the chosen scorer (the surrogate
or the simulator, in batches) while the budget lasts. The front is the non-dominated set of all
candidates scored, one per distinct (loss, accuracy) pair. `confirm_front` simulates each of its
points with a seed the search never used; `write_front` writes front.csv and front.png.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator
from pymoo.core.problem import Problem as PymooProblem
from pymoo.core.repair import Repair
from pymoo.core.termination import NoTermination
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.problems.static import StaticProblem

from chainnet.optim.problem import Problem
from chainnet.optim.scorers import Score
from chainnet.optim.search import Budget, confirm_candidates, progress_bar, score_new
from chainnet.optim.space import SearchSpace
from chainnet.sim import SimulatorSettings

POP_SIZE = 20  # NSGA-II's population
STALL_GENERATIONS = 50  # with no time limit: generations in a row without a new candidate
FRONT_OUTPUTS = ("result.json", "front.csv", "front.png")


def check_front_problem(problem: Problem) -> None:
    """A front trades loss against accuracy: the problem's objective must be `max_accuracy` (a
    `min_loss` problem says accuracy is not part of its goal) and some exit must have a
    threshold to choose. One ValueError naming the field otherwise."""
    name = problem.name or "problem"
    if problem.objective.kind != "max_accuracy":
        raise ValueError(
            f"objective=front: problem {name} has objective.kind {problem.objective.kind!r}; a "
            "front trades loss against accuracy: give the problem objective {kind: max_accuracy}"
        )
    if not any(len(e.exit) > 1 for sv in problem.services for e in sv.fragments) and not any(
        len(sv.exit_vectors) > 1 for sv in problem.services
    ):
        raise ValueError(
            f"objective=front: problem {name} has no exit with a threshold to choose (services: "
            "no fragment's exit table or exit_vectors has two rows); its accuracy is fixed"
        )


def check_front_settings(problem: Problem, scorer: str, pop_size: Any) -> None:
    """`check_front_problem`, a scorer that scores each candidate once (not `hybrid`) and a
    population of at least 4: one ValueError naming the setting otherwise."""
    check_front_problem(problem)
    if scorer == "hybrid":
        raise ValueError(
            "objective=front: scorer=hybrid is not supported; use surrogate or simulator"
        )
    if isinstance(pop_size, bool) or not isinstance(pop_size, int) or pop_size < 4:
        raise ValueError(f"front.pop_size: got {pop_size!r}; an integer >= 4")


class FeasibleRepair(Repair):
    """Rounds and clips the free genes, then repairs the candidate to a feasible placement (a
    random feasible candidate where repair is stuck)."""

    def __init__(self, space: SearchSpace, rng: np.random.Generator):
        super().__init__()
        self.space, self.rng = space, rng

    def _do(self, problem, X, **kwargs):
        space = self.space
        out = np.empty_like(X, dtype=np.int64)
        for i, x in enumerate(np.asarray(X)):
            c = full_candidate(space, x)
            if not space.feasible(c):
                fixed = space.repair(c, self.rng)
                c = fixed if fixed is not None else space.random_candidate(self.rng)
            out[i] = c[space.free]
        return out


def full_candidate(space: SearchSpace, free: np.ndarray) -> np.ndarray:
    """The whole gene vector from the values of the free genes (the others are 0)."""
    c = np.zeros(len(space.domains), dtype=np.int64)
    hi = space.domains[space.free] - 1
    c[space.free] = np.clip(np.rint(np.asarray(free, dtype=float)), 0, hi).astype(np.int64)
    return c


def objectives(score: Score) -> tuple[float, float]:
    """(loss ratio, minus accuracy): an undefined accuracy (nothing served) counts as 0."""
    acc = score.accuracy if np.isfinite(score.accuracy) else 0.0
    return float(score.loss), -float(acc)


def pareto(points: list[tuple[np.ndarray, Score]]) -> list[tuple[np.ndarray, Score]]:
    """The non-dominated points by (loss, -accuracy), lowest loss first, one per distinct pair."""
    ordered = sorted(points, key=lambda cs: objectives(cs[1]))
    front, best = [], math.inf
    for c, s in ordered:
        neg_acc = objectives(s)[1]
        if neg_acc < best:
            front.append((c, s))
            best = neg_acc
    return front


@dataclass
class FrontResult:
    """What `front_search` returns: every candidate scored, the front, the history (per
    generation: elapsed_s, scored, front size), what stopped it and the generations run."""

    scored: dict[bytes, tuple[np.ndarray, Score]]
    front: list[tuple[np.ndarray, Score]]
    history: pd.DataFrame
    elapsed_s: float
    stopped_by: str
    generations: int


def nsga2(space: SearchSpace, pop_size: int, seed: int) -> tuple[NSGA2, PymooProblem]:
    """NSGA-II over the free genes of `space`, integer operators, feasible offspring."""
    hi = (space.domains[space.free] - 1).astype(float)
    problem = PymooProblem(n_var=len(hi), n_obj=2, xl=np.zeros(len(hi)), xu=hi, vtype=int)
    algorithm = NSGA2(
        pop_size=pop_size,
        sampling=IntegerRandomSampling(),
        crossover=SBX(prob=0.9, eta=3.0, vtype=float, repair=RoundingRepair()),
        mutation=PM(eta=3.0, vtype=float, repair=RoundingRepair()),
        repair=FeasibleRepair(space, np.random.default_rng(seed)),
        eliminate_duplicates=True,
    )
    algorithm.setup(problem, termination=NoTermination(), seed=seed, verbose=False)
    return algorithm, problem


def front_search(
    space: SearchSpace,
    scorer: Any,
    budget_s: float | None = 60.0,
    *,
    budget_evals: int | None = None,
    seed: int = 0,
    pop_size: int = POP_SIZE,
    progress: bool = False,
) -> FrontResult:
    """NSGA-II on (loss, -accuracy) until `budget_s` seconds pass or `budget_evals` candidates
    are scored (whichever first), the space is used up, or (with no time limit)
    `STALL_GENERATIONS` generations in a row score nothing new; "stall" also when NSGA-II
    makes no new offspring at all."""
    check_front_settings(space.problem, scorer.name, pop_size)
    budget = Budget(budget_s, budget_evals)
    if not len(space.free):
        raise ValueError(f"objective=front: problem {space.problem.name} has no free gene")
    algorithm, problem = nsga2(space, pop_size, seed)
    scored: dict[bytes, tuple[np.ndarray, Score]] = {}
    rows, stop, idle, gen = [], None, 0, 0
    feasible = space.n_feasible
    t0 = time.perf_counter()
    bar = progress_bar(budget, f"NSGA-II front ({scorer.name})", progress)
    while stop is None:
        stop = budget.stop(time.perf_counter() - t0, len(scored))
        if stop is not None:
            break
        pop = algorithm.ask()
        if pop is None or not len(pop):  # NSGA-II made no new offspring: it has converged
            stop = "stall"
            break
        cands = [full_candidate(space, x) for x in pop.get("X")]
        before = len(scored)
        stop = score_new(cands, scored, scorer, budget, t0)
        if any(c.tobytes() not in scored for c in cands):
            break  # the budget ran out within the generation: it is not told
        F = np.array([objectives(scored[c.tobytes()][1]) for c in cands])
        Evaluator().eval(StaticProblem(problem, F=F), pop)
        algorithm.tell(infills=pop)
        gen += 1
        elapsed = time.perf_counter() - t0
        rows.append({"elapsed_s": elapsed, "scored": len(scored), "generation": gen})
        if feasible is not None and len(scored) >= feasible:
            stop = stop or "space"
        idle = idle + 1 if len(scored) == before else 0
        if stop is None and budget.seconds is None and idle >= STALL_GENERATIONS:
            stop = "stall"
        bar.n = round(min(elapsed, budget.seconds), 1) if budget.seconds else len(scored)
        bar.set_postfix_str(f"generation {gen}, {len(scored)} scored")
        bar.refresh()
    bar.close()
    front = pareto(list(scored.values()))
    history = pd.DataFrame(rows, columns=["elapsed_s", "scored", "generation"])
    return FrontResult(scored, front, history, time.perf_counter() - t0, stop, gen)


def confirm_front(
    space: SearchSpace,
    result: FrontResult,
    scorer: Any,
    settings: SimulatorSettings | None = None,
    engine: str = "fast",
    seed: int = 10_000,
) -> pd.DataFrame:
    """Every point of the front simulated afresh (seed `seed`), lowest predicted loss first: one
    row each with the predicted and simulated loss and accuracy, and its decisions."""
    if not result.front:
        raise ValueError("the search scored no candidate: raise budget_s or budget_evals")
    table = confirm_candidates(space, result.front, scorer, settings, engine, seed)
    table.insert(0, "point", range(len(table)))
    table["decisions"] = [json.dumps(space.describe(np.asarray(c))) for c in table["candidate"]]
    return table


def plot_front(table: pd.DataFrame, path: str | Path, title: str) -> None:
    """Predicted and simulated points (loss ratio, accuracy), a line joining each pair."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for _, row in table.iterrows():
        ax.plot(
            [row["predicted_loss"], row["simulated_loss"]],
            [row["predicted_accuracy"], row["simulated_accuracy"]],
            color="0.6",
            lw=0.8,
        )
    ax.plot(
        table["predicted_loss"], table["predicted_accuracy"], "o", mfc="none", label="predicted"
    )
    ax.plot(table["simulated_loss"], table["simulated_accuracy"], "x", label="simulated afresh")
    ax.set_xlabel("loss ratio")
    ax.set_ylabel("accuracy of served jobs")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_front(
    space: SearchSpace, result: FrontResult, table: pd.DataFrame, info: dict[str, Any], out: Path
) -> dict[str, Any]:
    """front.csv (one row per point), front.png and result.json (`info` and the points) in
    `out`; returns what result.json holds."""
    out.mkdir(parents=True, exist_ok=True)
    columns = ["point", "predicted_loss", "predicted_accuracy", "simulated_loss"]
    columns += ["simulated_accuracy", "decisions"]
    table[columns].to_csv(out / "front.csv", index=False)
    plot_front(table, out / "front.png", f"{space.problem.name}: loss-accuracy front")
    summary = {
        **info,
        "problem": space.problem.name,
        "search_s": result.elapsed_s,
        "scored": len(result.scored),
        "generations": result.generations,
        "stopped_by": result.stopped_by,
        "front": json.loads(table[columns].to_json(orient="records")),
    }
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    return summary


def front_report(result: FrontResult, table: pd.DataFrame, scorer_name: str) -> str:
    """The text printed at the end: what was scored and the front, predicted and simulated."""
    lines = [
        f"\nscored {len(result.scored):,} candidates in {result.elapsed_s:.1f} s "
        f"({scorer_name}, NSGA-II, {result.generations} generations, stopped by "
        f"{result.stopped_by})",
        f"front: {len(table)} points, each simulated afresh (loss ratio, accuracy):",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"  {r['point']:>3}  predicted {r['predicted_loss']:.4f}, "
            f"{r['predicted_accuracy']:.4f}; simulated {r['simulated_loss']:.4f}, "
            f"{r['simulated_accuracy']:.4f}"
        )
    return "\n".join(lines)
