"""The analytic baseline: exact where queueing theory is exact, a fixed point everywhere else."""

import numpy as np
import pandas as pd
import pytest
from tests_helpers import PUBLISHED

from chainnet.dataset.published import read_chainnet_split
from chainnet.learn.metrics import LOAD_BANDS, load_band, mae, mape, qos_metrics
from chainnet.queueing import analytic
from chainnet.queueing import exact as q
from chainnet.scenario import Device, Scenario, ServiceChain, Stage


def single(K, dist="exp", discipline="fcfs", rate=0.9, work=1.0):
    return Scenario(
        [Device("d", capacity=K, discipline=discipline)],
        [ServiceChain("c", rate, [Stage("d", work, dist)])],
    )


@pytest.mark.parametrize("loss", analytic.LOSS_MODELS)
def test_single_device_is_exact(loss):
    r = analytic.solve(single(10), loss)
    exact = q.mm1k(0.9, 1.0, 10)
    assert r.loss_ratio[0] == pytest.approx(exact.loss_ratio, rel=1e-9)
    assert r.response_time[0] == pytest.approx(exact.response_time, rel=1e-9)
    r = analytic.solve(single(5, "det", rate=1.2, work=0.75), "exact")
    assert r.loss_ratio[0] == pytest.approx(q.md1k(1.2, 0.75, 5).loss_ratio, rel=1e-9)


def test_product_form_network_without_loss():
    sc = Scenario(
        [Device("a", 10_000, speed=2.0), Device("b", 10_000)],
        [
            ServiceChain("x", 0.5, [Stage("a", 1.0, "exp", exit_prob=0.3), Stage("b", 0.5, "exp")]),
            ServiceChain("y", 0.3, [Stage("b", 0.5, "exp"), Stage("a", 1.0, "exp")]),
        ],
    )
    r = analytic.solve(sc, "exact")
    loads = sc.offered_loads()
    routes = [
        [(sc.device_id(s.device), sc.mean_service_time(s), v)
         for s, v in zip(ch.stages, sc.visit_probabilities(ch))]
        for ch in sc.chains
    ]  # fmt: skip
    assert r.loss_ratio == pytest.approx([0.0, 0.0], abs=1e-12)
    assert r.response_time == pytest.approx(q.jackson_chain_response_times(loads, routes), rel=1e-6)
    assert r.converged


def test_upstream_loss_thins_downstream_arrivals():
    sc = Scenario(
        [Device("a", 1), Device("b", 1)],
        [ServiceChain("c", 2.0, [Stage("a", 1.0, "exp"), Stage("b", 1.0, "exp")])],
    )
    r = analytic.solve(sc, "exact")
    p_a = q.mm1k(2.0, 1.0, 1).loss_ratio
    p_b = q.mm1k(2.0 * (1 - p_a), 1.0, 1).loss_ratio
    assert r.device_loss == pytest.approx([p_a, p_b], rel=1e-6)
    assert r.throughput_ratio[0] == pytest.approx((1 - p_a) * (1 - p_b), rel=1e-6)


def test_bad_loss_model_is_named():
    with pytest.raises(ValueError, match="analytic.loss"):
        analytic.solve(single(3), "guess")


def test_metrics_and_load_bands():
    assert mape([1.1, 2.0, 5.0], [1.0, 2.0, 0.0]) == pytest.approx(0.05)  # 0 is skipped
    assert mae([0.1, 0.3], [0.0, 0.1]) == pytest.approx(0.15)
    assert list(load_band([0.2, 0.5, 0.95, 3.0])) == ["<0.5", "0.5-0.9", "0.9-1.2", ">1.2"]
    true = pd.DataFrame({"throughput_ratio": [1.0, 0.5], "loss_ratio": [0.0, 0.5]})
    pred = pd.DataFrame({"throughput_ratio": [0.9, 0.5], "loss_ratio": [0.1, 0.5]})
    table = qos_metrics(pred, true, np.array([0.3, 1.5]))
    assert table.loc["all", "mape_throughput_ratio"] == pytest.approx(0.05)
    assert table.loc["<0.5", "mae_loss_ratio"] == pytest.approx(0.1)
    assert table.loc[">1.2", "chains"] == 1
    assert list(table.index) == ["all"] + [b for b, _, _ in LOAD_BANDS]


@pytest.mark.published
def test_analytic_is_a_reasonable_baseline_on_the_published_set():
    samples = read_chainnet_split(PUBLISHED, limit=300)
    pred = {"throughput_ratio": [], "response_ratio": []}
    for s in samples:
        r = analytic.solve(s.scenario)
        pred["throughput_ratio"] += list(r.throughput_ratio)
        pred["response_ratio"] += list(r.response_ratio)
    true = {k: np.concatenate([s.labels[k] for s in samples]) for k in pred}
    # Measured on 2,000 samples: 5.5 % and 7.4 %; the published ChainNet checkpoint: 2.5 %, 3.2 %.
    assert 0.02 < mape(pred["throughput_ratio"], true["throughput_ratio"]) < 0.09
    assert 0.03 < mape(pred["response_ratio"], true["response_ratio"]) < 0.12
