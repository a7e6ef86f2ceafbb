"""Exact and closed-form results for single-server queues, used as ground truth.

The simulator tests compare against these values and the analytic baseline model builds on them.
Capacity `K` is the most jobs at the station, the one in service included: an arrival that finds
`K` jobs is lost. Arrivals are Poisson throughout, so by PASTA the loss ratio equals the
time-average probability `p_K` of a full station.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

ArrivalPmf = Callable[[np.ndarray], np.ndarray]
ArrivalTail = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class QueueMetrics:
    """Stationary performance of one finite-capacity single-server station."""

    loss_ratio: float
    throughput: float
    mean_jobs: float
    response_time: float
    utilisation: float
    # Excluded from ==: the scalars above already follow from it, and arrays have no truth value.
    probabilities: np.ndarray = field(compare=False, repr=False)


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _capacity(K: int) -> int:
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"K must be an integer >= 1, got {K!r}")
    return int(K)


def _metrics(lam: float, mean_service: float, probabilities: np.ndarray) -> QueueMetrics:
    probabilities = np.clip(probabilities, 0.0, None)
    probabilities = probabilities / probabilities.sum()
    probabilities.setflags(write=False)
    loss = float(probabilities[-1])
    throughput = lam * (1.0 - loss)
    mean_jobs = float(np.arange(probabilities.size) @ probabilities)
    return QueueMetrics(
        loss_ratio=loss,
        throughput=throughput,
        mean_jobs=mean_jobs,
        response_time=mean_jobs / throughput,
        # Equals 1 - p_0 but keeps its relative precision at very light load, where 1 - p_0 cancels.
        utilisation=lam * mean_service * (1.0 - loss),
        probabilities=probabilities,
    )


def mm1k(lam: float, mu: float, K: int) -> QueueMetrics:
    """M/M/1/K closed form: p_n proportional to rho**n for n = 0..K.

    The weights are taken relative to the largest state (rho**n when rho <= 1, (1/rho)**(K - n)
    otherwise) so that nothing overflows at high load or large K; rho == 1 gives equal weights,
    the uniform distribution, without a special case.
    """
    lam = _positive("lam", lam)
    mu = _positive("mu", mu)
    K = _capacity(K)
    rho = lam / mu
    n = np.arange(K + 1, dtype=float)
    weights = rho**n if rho <= 1.0 else (1.0 / rho) ** (K - n)
    return _metrics(lam, 1.0 / mu, weights / weights.sum())


def _arrival_terms(
    arrivals_during_service: ArrivalPmf | ArrayLike,
    arrivals_tail: ArrivalTail | None,
    K: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Return a_0..a_{K-1} and the tails T_m = P(A >= m) for m = 0..K-1."""
    k = np.arange(K)
    if callable(arrivals_during_service):
        pmf = np.asarray(arrivals_during_service(k), dtype=float)
        if pmf.shape != (K,):
            raise ValueError(
                f"arrivals_during_service must map {K} values of k to {K} probabilities, "
                f"got shape {pmf.shape}"
            )
        total = pmf.sum()
        beyond = np.zeros(K)
    else:
        given = np.asarray(arrivals_during_service, dtype=float)
        if given.ndim != 1 or given.size < K:
            raise ValueError(
                f"arrivals_during_service must hold at least K = {K} probabilities a_0..a_{K - 1}, "
                f"got shape {given.shape}"
            )
        pmf = given[:K]
        total = given.sum()
        beyond = np.full(K, given[K:].sum())
    if not np.all(np.isfinite(pmf)) or np.any(pmf < 0.0) or total > 1.0 + 1e-9:
        raise ValueError("arrivals_during_service must be a probability mass function")
    if pmf[0] <= 0.0:
        # Without a_0 > 0 the queue never moves down and the chain has no stationary distribution.
        raise ValueError(f"arrivals_during_service must give a_0 > 0, got {pmf[0]!r}")
    if arrivals_tail is not None:
        tails = np.asarray(arrivals_tail(k), dtype=float)
        if tails.shape != (K,) or np.any(tails < 0.0) or not np.all(np.isfinite(tails)):
            raise ValueError("arrivals_tail must map k to P(A >= k) for k = 0..K-1")
    else:
        # Summing from the top keeps small tails accurate where 1 - cumsum would cancel; the mass
        # missing from what was given lies beyond every index we use.
        suffix = np.cumsum(pmf[::-1])[::-1] + beyond
        tails = suffix + max(0.0, 1.0 - total)
    return pmf, tails


def mg1k(
    lam: float,
    mean_service: float,
    K: int,
    arrivals_during_service: ArrivalPmf | ArrayLike,
    arrivals_tail: ArrivalTail | None = None,
) -> QueueMetrics:
    """Exact M/G/1/K solution through the chain embedded at departure epochs.

    `arrivals_during_service` gives a_k = P(k Poisson arrivals during one service): either a
    function of an integer array k, or an array holding at least a_0..a_{K-1}. `arrivals_tail`,
    optional, gives P(A >= k); pass it when a survival function is at hand, it keeps minute tail
    probabilities exact. The a_k must come from the same service law as `mean_service`.

    A departure leaves i in {0..K-1} jobs behind; the chain only moves down one step at a time, so
    the balance of the cut between {0..j} and {j+1..} reads

        pi_{j+1} a_0 = pi_0 T_{j+1} + sum_{i=1..j} pi_i T_{j+2-i},   T_m = P(A >= m),

    a recursion with positive terms only: unlike the forward recursion on the balance equations,
    it cannot lose accuracy to cancellation, whatever rho. The time-average distribution follows
    from p_n = pi_n / (pi_0 + rho) for n < K and p_K = 1 - 1 / (pi_0 + rho). That last difference
    leaves p_K an absolute error of about 1e-16 when rho < 1: losses below ~1e-14 are noise or 0.
    """
    lam = _positive("lam", lam)
    mean_service = _positive("mean_service", mean_service)
    K = _capacity(K)
    rho = lam * mean_service
    a, tails = _arrival_terms(arrivals_during_service, arrivals_tail, K)

    departure = np.empty(K)
    departure[0] = 1.0
    for j in range(K - 1):
        upward = departure[0] * tails[j + 1] + departure[1 : j + 1] @ tails[j + 1 : 1 : -1]
        departure[j + 1] = upward / a[0]
        # Heavy load makes the weights grow geometrically; rescaling keeps them finite and costs
        # nothing, the states it pushes below the smallest double carry no probability anyway.
        if departure[j + 1] > 1e100:
            departure[: j + 2] /= departure[j + 1]
    departure /= departure.sum()

    scale = departure[0] + rho
    probabilities = np.empty(K + 1)
    probabilities[:K] = departure / scale
    # pi_0 + rho >= 1 (equality only for an infinite queue); rounding must not make p_K negative.
    probabilities[K] = max(0.0, 1.0 - 1.0 / scale)
    return _metrics(lam, mean_service, probabilities)


def md1k(lam: float, service_time: float, K: int) -> QueueMetrics:
    """M/D/1/K: arrivals during the constant service are Poisson with mean rho."""
    lam = _positive("lam", lam)
    service_time = _positive("service_time", service_time)
    rho = lam * service_time
    return mg1k(
        lam,
        service_time,
        K,
        lambda k: stats.poisson.pmf(k, rho),
        lambda k: stats.poisson.sf(k - 1, rho),
    )


def mg1k_gamma(lam: float, mean_service: float, scv: float, K: int) -> QueueMetrics:
    """M/G/1/K with gamma service of squared coefficient of variation `scv`.

    With S ~ Gamma(shape r = 1/scv, scale mean_service * scv), the Poisson count with mean lam*S
    is negative binomial: P(A = k) = C(k + r - 1, k) p**r (1 - p)**k with p = 1 / (1 + rho * scv),
    rho = lam * mean_service (integrate the Poisson pmf against the gamma density). Its mean
    r (1 - p) / p is rho, and scv = 1 gives the geometric law of M/M/1, as it must.
    """
    lam = _positive("lam", lam)
    mean_service = _positive("mean_service", mean_service)
    scv = _positive("scv", scv)
    rho = lam * mean_service
    shape = 1.0 / scv
    success = 1.0 / (1.0 + rho * scv)
    return mg1k(
        lam,
        mean_service,
        K,
        lambda k: stats.nbinom.pmf(k, shape, success),
        lambda k: stats.nbinom.sf(k - 1, shape, success),
    )


def macgregor_smith_loss(rho: float, K: int, scv: float) -> float:
    """MacGregor Smith's closed-form approximation of the M/G/1/K blocking probability.

    With x = sqrt(rho) * (scv - 1):

        p_K = rho**((x + 2K) / (2 + x)) * (rho - 1) / (rho**(2 (1 + x + K) / (2 + x)) - 1)

    Source: J. MacGregor Smith, "Optimal design and performance modelling of M/G/1/K queueing
    systems", Math. Comput. Modelling 39 (2004); the single-server case of his M/G/c/K models
    (Performance Evaluation 52, 2003). Transcribed from the form in the LINE solver
    (imperial-qore/line-solver, qsys_mg1k_loss_mgs). For scv = 1, x = 0 and it is exactly the
    M/M/1/K value rho**K (1 - rho) / (1 - rho**(K + 1)); at rho = 1 the limit is
    (1 + scv) / (2 (scv + K)).

    The exponents need 2 + x > 0, which fails only for scv < 1 at rho >= 4 / (1 - scv)**2
    (deterministic service: rho >= 4); there the formula means nothing and ValueError is raised.
    K = 1 is exact for any scv (M/G/1/1 is insensitive). Against the exact M/D/1/K loss (scv = 0)
    it is within about 20 % at rho >= 0.8 and K <= 10, but its relative error grows fast at light
    load and large K (rho = 0.5, K = 10: four times too high), where the loss itself is tiny.
    """
    rho = _positive("rho", rho)
    K = _capacity(K)
    scv = float(scv)
    if not (math.isfinite(scv) and scv >= 0.0):
        raise ValueError(f"scv must be a finite number >= 0, got {scv!r}")
    x = math.sqrt(rho) * (scv - 1.0)
    if 2.0 + x <= 0.0:
        raise ValueError(
            f"macgregor_smith_loss is undefined for rho = {rho!r} with scv = {scv!r}: "
            "it needs 2 + sqrt(rho) * (scv - 1) > 0"
        )
    if rho == 1.0:
        return (1.0 + scv) / (2.0 * (scv + K))
    head = (x + 2.0 * K) / (2.0 + x)
    tail = 2.0 * (1.0 + x + K) / (2.0 + x)
    log_rho = math.log(rho)
    if rho < 1.0:
        return math.exp(head * log_rho) * (rho - 1.0) / math.expm1(tail * log_rho)
    # Divided through by rho**tail, which would overflow at high load or large K.
    return math.exp((head - tail) * log_rho) * (rho - 1.0) / -math.expm1(-tail * log_rho)


def mm1_ps_response_time(lam: float, mu: float) -> float:
    """Mean response time of M/M/1 (FCFS or PS, both give 1 / (mu - lam))."""
    lam = _positive("lam", lam)
    mu = _positive("mu", mu)
    if lam >= mu:
        raise ValueError(f"lam must be < mu for a stable queue, got lam = {lam!r}, mu = {mu!r}")
    return 1.0 / (mu - lam)


def jackson_chain_response_times(
    loads: Sequence[float],
    chains: Sequence[Sequence[tuple[int, float, float]]],
) -> list[float]:
    """Mean response time of each chain in an open product-form network of single servers.

    `loads[d]` is the total utilisation of station d over all chains; each chain is a list of
    (station index, mean service time, visit probability) stages. A stage contributes
    v * s / (1 - rho_d): the BCMP value for FCFS with exponential service (one mean per station)
    or for PS with any service law.
    """
    rhos = [float(load) for load in loads]
    for d, rho in enumerate(rhos):
        if not (math.isfinite(rho) and 0.0 <= rho < 1.0):
            raise ValueError(f"loads[{d}] must be in [0, 1), got {rho!r}")
    times = []
    for c, chain in enumerate(chains):
        total = 0.0
        for station, service, visits in chain:
            if isinstance(station, bool) or not isinstance(station, (int, np.integer)):
                raise ValueError(f"chain {c}: station index must be an integer, got {station!r}")
            if not 0 <= station < len(rhos):
                raise ValueError(
                    f"chain {c}: station index must be in [0, {len(rhos)}), got {station!r}"
                )
            service = _positive(f"chain {c} service time", service)
            visits = float(visits)
            if not (math.isfinite(visits) and visits >= 0.0):
                raise ValueError(f"chain {c}: visit probability must be >= 0, got {visits!r}")
            total += visits * service / (1.0 - rhos[station])
        times.append(total)
    return times
