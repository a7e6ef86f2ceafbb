"""The analytic baseline: per-device M/G/1/K queues coupled by a fixed point on thinned arrivals.

Needs no training (SPEC section 5). Each device is an M/G/1/K queue. Its arrival rate is the sum
over the stages it hosts of the chain's rate times the probability that a job reaches the stage,
which depends on the losses upstream (and exits), so the losses are solved by fixed-point iteration.
- The service time of a device is the mixture of its stages' service times, weighted by their
  arrival rates (mean and squared coefficient of variation of the mixture).
- Loss: the MacGregor Smith closed form (`loss="macgregor_smith"`, the SPEC's choice), or the exact
  M/G/1/K embedded Markov chain with a gamma (or deterministic) service fit (`loss="exact"`). Where
  the MacGregor Smith formula is undefined (near-deterministic service at loads above about 4) the
  exact chain is used. A PS device is insensitive: M/M/1/K with the same mean.
- Response time at a stage: FCFS, the device's mean wait (Little's law on the exact chain's mean
  number present, less the mean service) plus the stage's own service time; PS, the device's mean
  response time scaled by the stage's share of the mean service time.
- A memory limit becomes a job limit: floor(memory / mean job memory), if smaller than capacity.
  Multi-device regions are not modelled (an approximation, like the independence of the devices).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from chainnet.queueing import exact as q
from chainnet.scenario import Scenario

LOSS_MODELS = ("macgregor_smith", "exact")


@dataclass(frozen=True)
class AnalyticResult:
    """Per chain: throughput, loss ratio, response time; per device: loss; and how it converged."""

    throughput: np.ndarray
    loss_ratio: np.ndarray
    throughput_ratio: np.ndarray
    response_time: np.ndarray
    response_ratio: np.ndarray
    device_loss: np.ndarray
    iterations: int
    converged: bool


def _device_queue(lam: float, mean: float, scv: float, K: int, ps: bool, loss: str):
    """(loss probability, mean response time) of one device."""
    if lam <= 0.0:
        return 0.0, mean
    if ps or abs(scv - 1.0) < 1e-12:
        m = q.mm1k(lam, 1.0 / mean, K)
    elif scv < 1e-9:
        m = q.md1k(lam, mean, K)
    else:
        m = q.mg1k_gamma(lam, mean, scv, K)
    p = m.loss_ratio
    if loss == "macgregor_smith" and not ps:
        # Outside the formula's domain (ValueError) the exact chain's value stands.
        with contextlib.suppress(ValueError):
            p = q.macgregor_smith_loss(lam * mean, K, scv)
    return p, m.response_time


def solve(
    scenario: Scenario,
    loss: str = "macgregor_smith",
    tol: float = 1e-8,
    max_iter: int = 500,
    damping: float = 0.5,
) -> AnalyticResult:
    """Solve the fixed point of device losses for `scenario`."""
    if loss not in LOSS_MODELS:
        raise ValueError(f"analytic.loss: got {loss!r}; one of {LOSS_MODELS}")
    devs = scenario.devices
    n = len(devs)
    stage_dev = [[scenario.device_id(st.device) for st in ch.stages] for ch in scenario.chains]
    svc = [[scenario.mean_service_time(st) for st in ch.stages] for ch in scenario.chains]
    scv = [[st.service_scv for st in ch.stages] for ch in scenario.chains]
    mem = [[st.job_memory for st in ch.stages] for ch in scenario.chains]
    p = np.zeros(n)
    w = np.zeros(n)  # mean response time at the device
    mean_at = np.ones(n)  # mean service time at the device
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        lam = np.zeros(n)
        s1 = np.zeros(n)  # sum of rate * mean
        s2 = np.zeros(n)  # sum of rate * second moment
        jm = np.zeros(n)  # sum of rate * job memory
        for c, ch in enumerate(scenario.chains):
            reach = ch.arrival_rate
            for k, st in enumerate(ch.stages):
                d = stage_dev[c][k]
                lam[d] += reach
                s1[d] += reach * svc[c][k]
                s2[d] += reach * svc[c][k] ** 2 * (1.0 + scv[c][k])
                jm[d] += reach * mem[c][k]
                reach *= (1.0 - p[d]) * (1.0 - st.exit_prob)
        new_p = np.zeros(n)
        for d, dev in enumerate(devs):
            if lam[d] <= 0.0:
                continue
            mean = mean_at[d] = s1[d] / lam[d]
            mix_scv = max(s2[d] / lam[d] / mean**2 - 1.0, 0.0)
            K = dev.capacity
            if dev.memory is not None and jm[d] > 0:
                K = max(1, min(K, int(math.floor(dev.memory / (jm[d] / lam[d])))))
            new_p[d], w[d] = _device_queue(lam[d], mean, mix_scv, K, dev.discipline == "ps", loss)
        change = float(np.max(np.abs(new_p - p))) if n else 0.0
        p = damping * p + (1.0 - damping) * new_p if it > 1 else new_p
        if change < tol:
            converged = True
            break
    m = len(scenario.chains)
    tput, rt, rr = np.zeros(m), np.zeros(m), np.zeros(m)
    for c, ch in enumerate(scenario.chains):
        reach, served, time_sum, elapsed = 1.0, 0.0, 0.0, 0.0
        for k, st in enumerate(ch.stages):
            d = stage_dev[c][k]
            admitted = reach * (1.0 - p[d])
            if devs[d].discipline == "ps":  # sojourn proportional to the job's own work
                elapsed += w[d] * svc[c][k] / mean_at[d]
            else:  # the device's mean wait, then the job's own service
                elapsed += w[d] - mean_at[d] + svc[c][k]
            leave = admitted * (st.exit_prob if k < len(ch.stages) - 1 else 1.0)
            served += leave
            time_sum += leave * elapsed
            reach = admitted - leave
        tput[c] = ch.arrival_rate * served
        rt[c] = time_sum / served if served > 0 else math.nan
        rr[c] = sum(svc[c]) / rt[c] if served > 0 else math.nan
    ratio = tput / np.array([ch.arrival_rate for ch in scenario.chains])
    return AnalyticResult(tput, 1.0 - ratio, ratio, rt, rr, p, it, converged)
