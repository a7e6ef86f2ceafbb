"""Scorers: candidates of a search space -> objective, loss ratio and accuracy (`Score`).

`SurrogateScorer` scores a whole batch with one forward pass of the surrogate, building the batch's
graph straight from the gene matrix (`chainnet.optim.batch_graphs`: no scenario is decoded, the
same predictions as `Surrogate.predict_arrays` of the decoded scenarios); `SimulatorScorer` runs one
simulation per candidate (the baseline a surrogate must beat). Both have a `name` and a `chunk`
(how many candidates the search hands over at once: the budget is checked between chunks).

With a `level`, the surrogate scorer also gives every candidate the bounds of its objective
(`Score.lower`, `Score.upper`) from the surrogate's calibrated prediction intervals: the objective
of the loss ratios' lower and upper bounds, with the predicted accuracy (accuracy has no interval),
never on the wrong side of the predicted objective. `HybridScorer` holds a surrogate scorer with
a level and a simulator scorer for `scorer=hybrid` (the phases: `chainnet.optim.hybrid`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import chainnet
from chainnet.learn.tally import RangeTally
from chainnet.optim.mix import service_frame
from chainnet.optim.objective import objective_value, objective_values
from chainnet.optim.space import SearchSpace
from chainnet.sim import SimulatorSettings, make_engine

SCORERS = ("surrogate", "simulator", "hybrid")
QOS = ("throughput", "loss_ratio", "response_time", "accuracy")  # per service, kept at the end


@dataclass
class Score:
    objective: float
    loss: float
    accuracy: float
    services: pd.DataFrame | None = None  # per service QoS, kept for the final candidates
    lower: float = math.nan  # the objective's bounds (a surrogate scorer with a level)
    upper: float = math.nan


class SurrogateScorer:
    """Scores a whole batch with one forward pass of the surrogate, its graph built from the
    genes (`CandidateGraphs`, made once per search space); with a `level` (0.9: 90 %
    intervals), the bounds of every candidate's objective too."""

    name = "surrogate"
    chunk = 10**9  # the whole batch at once

    def __init__(self, space: SearchSpace, surrogate, level: float | None = None):
        # torch loads here, on first use (3 s): a search scored by the simulator never needs it
        from chainnet.optim.batch_graphs import CandidateGraphs, predict_candidates

        surrogate.check_level(level)  # one ValueError: a bad level, or no calibrated intervals
        self.space, self.surrogate, self.predict = space, surrogate, predict_candidates
        self.level = level
        self.graphs = CandidateGraphs(space)
        self.tally = RangeTally()  # candidates scored outside the checkpoint's training ranges
        self.timings: dict[str, float] = {}  # seconds: graph, surrogate (all calls)

    def arrays(self, candidates: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The surrogate's predictions per chain of `candidates` (with bounds at `level`)."""
        return self.predict(self.surrogate, self.graphs, candidates, self.timings, self.level)

    def score(
        self, candidates: list[np.ndarray], keep: bool = False, deadline: float | None = None
    ) -> list[Score | None]:
        if not len(candidates):
            return []
        problem = self.space.problem
        arrays = self.arrays(candidates)
        n = len(problem.services)  # one chain per service, in order
        if not keep:  # the final rescoring of the best is not counted twice
            self.tally.add(arrays["out_of_range"], arrays["out_of_range_why"], per_item=n)
        loss = arrays["loss_ratio"].reshape(len(candidates), n)
        acc = arrays["accuracy"].reshape(len(candidates), n)
        qos = {k: arrays[k].reshape(len(candidates), n) for k in QOS} if keep else {}
        obj, lo, ac = objective_values(problem, loss, acc)
        bounds = self.level is not None
        if bounds:  # accuracy has no interval: the loss ratios' bounds, the same accuracy
            at_lo = objective_values(problem, arrays["loss_ratio_lower"].reshape(loss.shape), acc)
            at_hi = objective_values(problem, arrays["loss_ratio_upper"].reshape(loss.shape), acc)
            lower, upper = np.minimum(obj, at_lo[0]), np.maximum(obj, at_hi[0])
        names = [s.name for s in problem.services]
        out = []
        for i in range(len(candidates)):
            services = (
                pd.DataFrame({"service": names, **{k: v[i] for k, v in qos.items()}})
                if keep
                else None
            )
            score = Score(float(obj[i]), float(lo[i]), float(ac[i]), services)
            if bounds:
                score.lower, score.upper = float(lower[i]), float(upper[i])
            out.append(score)
        return out


class SimulatorScorer:
    """Scores candidates one simulation each (the baseline a surrogate must beat)."""

    name = "simulator"
    chunk = 1  # the budget is checked between simulations

    def __init__(
        self,
        space: SearchSpace,
        settings: SimulatorSettings | None = None,
        engine: str = "fast",
        seed: int = 0,
    ):
        self.space, self.settings, self.engine, self.seed = space, settings, engine, seed

    def score(
        self, candidates: list[np.ndarray], keep: bool = False, deadline: float | None = None
    ) -> list[Score | None]:
        """One Score per candidate; None for one whose simulation `deadline` (a
        `time.perf_counter()` value: the search's time budget) cut short, which is not scored."""
        out: list[Score | None] = []
        for c in candidates:
            engine = make_engine(self.space.scenario(c), self.seed, self.settings, self.engine)
            res = engine.run(deadline=deadline)
            if res.stop_reason == "deadline":
                out.append(None)
                continue
            df = service_frame(self.space.problem, res.chain_frame())
            loss = df["loss_ratio"].to_numpy(float)
            acc = df["accuracy"].to_numpy(float)
            obj, lo, ac = objective_value(self.space.problem, loss, acc)
            services = pd.DataFrame({"service": df["chain"], **{k: df[k] for k in QOS}})
            out.append(Score(obj, lo, ac, services))  # kept always: it costs nothing here
        return out


class HybridScorer:
    """`scorer=hybrid`: a surrogate scorer with a `level` (it searches, and its bounds choose what
    to simulate) and a simulator scorer (it confirms); `score` simulates. The phases of the search
    are `chainnet.optim.hybrid.run_hybrid`."""

    name = "hybrid"
    chunk = 1  # as the simulator: what `score` runs

    def __init__(self, surrogate: SurrogateScorer, simulator: SimulatorScorer):
        if surrogate.level is None:
            raise ValueError("scorer=hybrid: the surrogate scorer needs a level (its intervals)")
        self.surrogate, self.simulator, self.space = surrogate, simulator, simulator.space

    @property
    def tally(self) -> RangeTally:
        """The surrogate's count of candidates scored outside its training ranges."""
        return self.surrogate.tally

    def score(
        self, candidates: list[np.ndarray], keep: bool = False, deadline: float | None = None
    ) -> list[Score | None]:
        return self.simulator.score(candidates, keep, deadline)


def make_scorer(
    kind: str,
    space: SearchSpace,
    ckpt_path: str | Path | None = None,
    settings: SimulatorSettings | None = None,
    engine: str = "fast",
    seed: int = 0,
    level: float = 0.9,
) -> SurrogateScorer | SimulatorScorer | HybridScorer:
    """The scorer `kind` (one of `SCORERS`): the surrogate of `ckpt_path`, the simulator, or both
    (`hybrid`, the surrogate's intervals at `level`)."""
    if kind not in SCORERS:
        raise ValueError(f"scorer: got {kind!r}; one of {SCORERS}")
    if kind == "simulator":
        return SimulatorScorer(space, settings, engine, seed)
    if not ckpt_path:
        raise ValueError(f"ckpt_path: scorer={kind} needs a checkpoint of train.py")
    # `chainnet.Surrogate` loads torch on first use (3 s): the simulator never needs it.
    surrogate = chainnet.Surrogate.load(ckpt_path, warn_ranges=False)  # the note: below
    if not surrogate.ranges_known:
        print(surrogate.ranges_note, file=sys.stderr)
    if kind == "surrogate":
        return SurrogateScorer(space, surrogate)
    try:
        scorer = SurrogateScorer(space, surrogate, level)
    except ValueError as exc:  # "level: ...": a bad level, or a checkpoint without intervals
        raise ValueError(f"scorer=hybrid: hybrid.{exc}") from None
    return HybridScorer(scorer, SimulatorScorer(space, settings, engine, seed))
