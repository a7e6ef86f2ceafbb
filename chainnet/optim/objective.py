"""The objective of a deployment, from the QoS of each of its services (lower is better).

- `min_loss`: the arrival-weighted loss ratio of all services;
- `max_accuracy`: minus the expected accuracy of served jobs (weighted by throughput), plus
  `penalty` x (loss - max_loss) where the loss exceeds `max_loss`.
"""

from __future__ import annotations

import numpy as np

from chainnet.optim.problem import Problem


def objective_values(
    problem: Problem, loss_ratio: np.ndarray, accuracy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(objectives, overall loss ratios, accuracies of served jobs) of many deployments at once:
    `loss_ratio` and `accuracy` are [deployments, services], a column per service of `problem`
    in order. Accuracy is NaN where no service with a known accuracy served a job."""
    loss_ratio = np.asarray(loss_ratio, dtype=np.float64)
    accuracy = np.asarray(accuracy, dtype=np.float64)
    rates = np.array([sv.arrival_rate for sv in problem.services])
    # a row's sum, not a matrix product: a deployment's value does not depend on its batch-mates
    loss = (loss_ratio * rates).sum(axis=1) / rates.sum()
    served = rates * (1.0 - loss_ratio)
    # Over the services that served jobs (one that completed nothing has no accuracy).
    counted = (served > 0) & np.isfinite(accuracy)
    weight = np.where(counted, served, 0.0)
    total = weight.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (weight * np.where(counted, accuracy, 0.0)).sum(axis=1) / total
    acc = np.where(counted.any(axis=1), acc, np.nan)
    objective = problem.objective
    if objective.kind == "min_loss":
        return loss, loss, acc
    over = np.maximum(0.0, loss - float(objective.max_loss))
    return np.where(np.isfinite(acc), -acc, 0.0) + objective.penalty * over, loss, acc


def objective_value(
    problem: Problem, loss_ratio: np.ndarray, accuracy: np.ndarray
) -> tuple[float, float, float]:
    """(objective, overall loss ratio, accuracy of served jobs) from per-service QoS, one entry
    per service of `problem` in order."""
    values = objective_values(
        problem, np.reshape(loss_ratio, (1, -1)), np.reshape(accuracy, (1, -1))
    )
    return tuple(float(v[0]) for v in values)
