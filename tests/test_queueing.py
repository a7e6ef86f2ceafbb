import math

import numpy as np
import pytest
from scipy import stats

from chainnet.queueing.exact import (
    QueueMetrics,
    jackson_chain_response_times,
    macgregor_smith_loss,
    md1k,
    mg1k,
    mg1k_gamma,
    mm1_ps_response_time,
    mm1k,
)


def pollaczek_khinchine_response(rho: float, service: float, scv: float) -> float:
    """M/G/1 mean sojourn: s + rho * s * (1 + scv) / (2 (1 - rho))."""
    return service + rho * service * (1.0 + scv) / (2.0 * (1.0 - rho))


def mg12_regenerative(rho: float, a0: float) -> tuple[float, float]:
    """(p_0, loss) of M/G/1/2 from a regeneration argument, independent of the embedded chain.

    A cycle is an idle period (mean 1/lam) then services; a service is followed by another exactly
    when someone arrived during it, so a busy period holds 1/a_0 services on average. Hence
    p_0 = (1/lam) / (1/lam + s/a_0) and loss = 1 - served / offered = 1 - 1 / (a_0 + rho).
    """
    return a0 / (a0 + rho), 1.0 - 1.0 / (a0 + rho)


def assert_distribution(m: QueueMetrics, K: int) -> None:
    p = m.probabilities
    assert p.shape == (K + 1,)
    assert np.all(p >= 0.0)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert m.loss_ratio == p[-1]
    assert m.utilisation == pytest.approx(1.0 - p[0], abs=1e-12)
    assert m.mean_jobs == pytest.approx(m.throughput * m.response_time, rel=1e-12)


# --- M/M/1/K -------------------------------------------------------------------------------------


def test_mm1k_reference_values():
    m = mm1k(0.9, 1.0, 10)
    assert m.loss_ratio == pytest.approx(0.050814, rel=1e-4)
    assert m.response_time == pytest.approx(4.6466, rel=1e-4)
    assert m.throughput == pytest.approx(0.9 * (1 - 0.050814), rel=1e-4)
    assert_distribution(m, 10)


def test_mm1k_rho_one_is_uniform():
    m = mm1k(2.0, 2.0, 7)
    np.testing.assert_allclose(m.probabilities, np.full(8, 1 / 8), rtol=1e-14)
    assert m.mean_jobs == pytest.approx(3.5, rel=1e-14)


def test_mm1k_heavy_load_large_capacity_does_not_overflow():
    m = mm1k(50.0, 1.0, 500)
    assert_distribution(m, 500)
    # Full almost always: one departure per mean service lets one job in.
    assert m.loss_ratio == pytest.approx(1 - 1 / 50, rel=1e-12)


# --- M/D/1/K -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [0.05, 0.7, 1.0, 3.0])
def test_md1k_one_place_is_erlang_loss(rho):
    m = md1k(rho / 2.0, 2.0, 1)
    assert m.loss_ratio == pytest.approx(rho / (1 + rho), rel=1e-12)
    assert m.response_time == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("rho", [0.3, 1.0, 2.5])
def test_md1k_two_places_matches_regeneration(rho):
    p0, loss = mg12_regenerative(rho, math.exp(-rho))
    m = md1k(rho, 1.0, 2)
    assert m.probabilities[0] == pytest.approx(p0, rel=1e-12)
    assert m.loss_ratio == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1k_large_capacity_approaches_pollaczek_khinchine(rho):
    m = md1k(rho / 3.0, 3.0, 200)
    assert m.loss_ratio < 1e-12
    assert m.response_time == pytest.approx(pollaczek_khinchine_response(rho, 3.0, 0.0), rel=1e-9)


def test_md1k_overload_large_capacity_serves_at_full_rate():
    m = md1k(2.0, 1.0, 100)
    assert m.throughput == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("rho", [0.01, 0.9, 1.0, 20.0])
@pytest.mark.parametrize("K", [1, 3, 40, 200])
def test_distributions_are_proper(rho, K):
    for m in (md1k(rho, 1.0, K), mg1k_gamma(rho, 1.0, 4.0, K), mg1k_gamma(rho, 1.0, 0.1, K)):
        assert_distribution(m, K)
        assert all(math.isfinite(v) for v in (m.mean_jobs, m.response_time))


def test_mg1k_accepts_an_array_of_arrival_probabilities():
    rho, K = 1.3, 12
    a = stats.poisson.pmf(np.arange(60), rho)
    from_array = mg1k(rho, 1.0, K, a)
    reference = md1k(rho, 1.0, K)
    np.testing.assert_allclose(from_array.probabilities, reference.probabilities, rtol=1e-10)


def test_service_variability_orders_loss_and_delay():
    det, exp, hyper = md1k(0.9, 1.0, 8), mm1k(0.9, 1.0, 8), mg1k_gamma(0.9, 1.0, 3.0, 8)
    assert det.loss_ratio < exp.loss_ratio < hyper.loss_ratio
    assert det.response_time < exp.response_time < hyper.response_time


# --- gamma service -------------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [0.3, 1.0, 1.7, 8.0])
@pytest.mark.parametrize("K", [1, 2, 7, 50])
def test_gamma_with_unit_scv_is_mm1k(rho, K):
    gamma, exact = mg1k_gamma(rho * 0.5, 2.0, 1.0, K), mm1k(rho * 0.5, 0.5, K)
    np.testing.assert_allclose(gamma.probabilities, exact.probabilities, rtol=1e-10, atol=1e-14)
    assert gamma.loss_ratio == pytest.approx(exact.loss_ratio, rel=1e-10, abs=1e-14)
    assert gamma.response_time == pytest.approx(exact.response_time, rel=1e-10)


@pytest.mark.parametrize("scv", [0.25, 2.0, 5.0])
def test_gamma_two_places_matches_regeneration(scv):
    rho = 0.8
    p0, loss = mg12_regenerative(rho, (1 + rho * scv) ** (-1 / scv))
    m = mg1k_gamma(rho, 1.0, scv, 2)
    assert m.probabilities[0] == pytest.approx(p0, rel=1e-12)
    assert m.loss_ratio == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("scv", [0.5, 2.0])
def test_gamma_large_capacity_approaches_pollaczek_khinchine(scv):
    m = mg1k_gamma(0.25, 2.0, scv, 200)
    assert m.response_time == pytest.approx(pollaczek_khinchine_response(0.5, 2.0, scv), rel=1e-9)


def test_gamma_with_tiny_scv_approaches_deterministic():
    near, det = mg1k_gamma(0.9, 1.0, 1e-5, 6), md1k(0.9, 1.0, 6)
    assert near.loss_ratio == pytest.approx(det.loss_ratio, rel=1e-3)


# --- MacGregor Smith approximation ---------------------------------------------------------------


@pytest.mark.parametrize("rho", [0.2, 0.75, 0.999, 1.0, 1.001, 1.6, 12.0])
@pytest.mark.parametrize("K", [1, 2, 5, 30])
def test_macgregor_smith_is_exact_for_exponential_service(rho, K):
    assert macgregor_smith_loss(rho, K, 1.0) == pytest.approx(
        mm1k(rho, 1.0, K).loss_ratio, rel=1e-9
    )


@pytest.mark.parametrize("scv", [0.0, 0.5, 3.0])
def test_macgregor_smith_one_place_is_exact(scv):
    assert macgregor_smith_loss(1.5, 1, scv) == pytest.approx(1.5 / 2.5, rel=1e-12)


@pytest.mark.parametrize("scv", [0.0, 2.0])
def test_macgregor_smith_is_continuous_at_rho_one(scv):
    at_one = macgregor_smith_loss(1.0, 6, scv)
    assert at_one == pytest.approx((1 + scv) / (2 * (scv + 6)), rel=1e-14)
    assert macgregor_smith_loss(1.0 - 1e-7, 6, scv) == pytest.approx(at_one, rel=1e-6)
    assert macgregor_smith_loss(1.0 + 1e-7, 6, scv) == pytest.approx(at_one, rel=1e-6)


def test_macgregor_smith_heavy_load_does_not_overflow():
    assert macgregor_smith_loss(200.0, 400, 2.0) == pytest.approx(1 - 1 / 200, rel=1e-9)


# Measured ratio approx / exact over this grid: 0.93 .. 1.18 (worst rho 0.8, K 10). At light load
# with large K the approximation is much worse (rho 0.5, K 10: x4), so the grid stops there.
@pytest.mark.parametrize("rho", [0.8, 0.9, 1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("K", [2, 3, 5, 10])
def test_macgregor_smith_deterministic_within_25_percent_at_moderate_load(rho, K):
    exact = md1k(rho, 1.0, K).loss_ratio
    assert macgregor_smith_loss(rho, K, 0.0) == pytest.approx(exact, rel=0.25)


def test_macgregor_smith_rejects_its_undefined_region():
    with pytest.raises(ValueError, match="2 \\+ sqrt"):
        macgregor_smith_loss(4.0, 5, 0.0)


# --- product form --------------------------------------------------------------------------------


def test_mm1_ps_response_time():
    assert mm1_ps_response_time(1.0, 3.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="lam"):
        mm1_ps_response_time(3.0, 3.0)


def test_jackson_hand_computed_example():
    loads = [0.5, 0.8]
    chains = [
        [(0, 1.0, 1.0), (1, 0.5, 0.4)],  # 1 / 0.5 + 0.4 * 0.5 / 0.2 = 2 + 1
        [(1, 2.0, 1.0)],  # 2 / 0.2
        [],
    ]
    assert jackson_chain_response_times(loads, chains) == pytest.approx([3.0, 10.0, 0.0])


def test_jackson_single_station_is_mm1():
    lam, mu = 0.7, 1.0
    (t,) = jackson_chain_response_times([lam / mu], [[(0, 1 / mu, 1.0)]])
    assert t == pytest.approx(mm1_ps_response_time(lam, mu), rel=1e-14)


# --- argument checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: mm1k(0.0, 1.0, 3), "lam"),
        (lambda: mm1k(-1.0, 1.0, 3), "lam"),
        (lambda: mm1k(float("nan"), 1.0, 3), "lam"),
        (lambda: mm1k(1.0, 0.0, 3), "mu"),
        (lambda: mm1k(1.0, 1.0, 0), "K"),
        (lambda: mm1k(1.0, 1.0, 2.5), "K"),
        (lambda: md1k(1.0, -2.0, 3), "service_time"),
        (lambda: md1k(1.0, 1.0, -1), "K"),
        (lambda: mg1k_gamma(1.0, 1.0, 0.0, 3), "scv"),
        (lambda: mg1k_gamma(1.0, 1.0, float("nan"), 3), "scv"),
        (lambda: mg1k_gamma(1.0, float("inf"), 1.0, 3), "mean_service"),
        (lambda: mg1k(1.0, 1.0, 3, [0.0, 0.5, 0.5]), "a_0"),
        (lambda: mg1k(1.0, 1.0, 3, [0.5, 0.5]), "at least K"),
        (lambda: mg1k(1.0, 1.0, 3, [0.5, 0.6, 0.1]), "probability mass"),
        (lambda: macgregor_smith_loss(0.0, 3, 1.0), "rho"),
        (lambda: macgregor_smith_loss(1.0, 0, 1.0), "K"),
        (lambda: macgregor_smith_loss(1.0, 3, -0.1), "scv"),
        (lambda: mm1_ps_response_time(1.0, float("nan")), "mu"),
        (lambda: jackson_chain_response_times([0.5, 1.0], [[(0, 1.0, 1.0)]]), "loads\\[1\\]"),
        (lambda: jackson_chain_response_times([0.5], [[(1, 1.0, 1.0)]]), "station index"),
        (lambda: jackson_chain_response_times([0.5], [[(0, 0.0, 1.0)]]), "service time"),
        (lambda: jackson_chain_response_times([0.5], [[(0, 1.0, -1.0)]]), "visit"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()
