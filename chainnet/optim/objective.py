"""The objective of a deployment, from the QoS of each of its services (lower is better).

- `min_loss`: the arrival-weighted loss ratio of all services;
- `max_accuracy`: minus the expected accuracy of served jobs (weighted by throughput), plus
  `penalty` x (loss - max_loss) where the loss exceeds `max_loss`.
"""

from __future__ import annotations

import math

import numpy as np

from chainnet.optim.problem import Problem


def objective_value(
    problem: Problem, loss_ratio: np.ndarray, accuracy: np.ndarray
) -> tuple[float, float, float]:
    """(objective, overall loss ratio, accuracy of served jobs) from per-service QoS, one entry
    per service of `problem` in order."""
    rates = np.array([sv.arrival_rate for sv in problem.services])
    loss = float(np.sum(rates * loss_ratio) / rates.sum())
    served = rates * (1.0 - loss_ratio)
    # Over the services that served jobs (one that completed nothing has no accuracy).
    counted = (served > 0) & np.isfinite(accuracy)
    acc = (
        float(np.sum(served[counted] * accuracy[counted]) / served[counted].sum())
        if counted.any()
        else math.nan
    )
    objective = problem.objective
    if objective.kind == "min_loss":
        return loss, loss, acc
    over = max(0.0, loss - float(objective.max_loss))
    return (-acc if np.isfinite(acc) else 0.0) + objective.penalty * over, loss, acc
