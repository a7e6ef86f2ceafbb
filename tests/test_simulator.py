"""The simulator against exact queueing results, and the invariants every run must satisfy."""

import numpy as np
import pytest

from chainnet.queueing import exact as q
from chainnet.scenario import Device, Region, Scenario, ServiceChain, Stage
from chainnet.sim import LimitViolation, SimPyEngine, SimulatorSettings, simulate

K_HW = 3.0  # tolerance in half-widths


def within(sim: float, hw: float, exact: float, k: float = K_HW) -> bool:
    return abs(sim - exact) <= k * hw


def check_invariants(res, little: bool = True) -> None:
    """Conservation per chain (exact) and Little's law for the whole system (statistical).

    Little's law over a finite window needs sojourns much shorter than the window.
    """
    for c in res.chains:
        assert c["arrived"] == c["completed"] + c["dropped"] + c["in_system"], c
        assert c["throughput_ratio"] == pytest.approx(1.0 - c["loss_ratio"])
    if not little:
        return
    little = sum(c["departure_rate"] * c["mean_sojourn"] for c in res.chains if c["departure_rate"])
    assert little == pytest.approx(res.mean_jobs, rel=0.02, abs=1e-3)
    for d in res.devices:
        assert 0.0 <= d["utilisation"] <= 1.0 + 1e-12
        assert d["mean_jobs"] >= d["utilisation"] - 1e-12  # a busy server holds at least one job


def single(capacity, work, distribution="det", discipline="fcfs", rate=0.9, scv=None):
    return Scenario(
        [Device("d", capacity=capacity, discipline=discipline)],
        [ServiceChain("c", rate, [Stage("d", work, distribution, scv=scv)])],
    )


@pytest.mark.parametrize("engine", ["fast", "simpy"])
def test_mm1k_matches_closed_form(engine):
    exact = q.mm1k(0.9, 1.0, 10)
    assert exact.loss_ratio == pytest.approx(0.050814, abs=1e-6)
    res = simulate(single(10, 1.0, "exp"), seed=11, engine=engine)
    check_invariants(res)
    c = res.chains[0]
    assert res.stop_reason == "precision"
    assert within(c["loss_ratio"], c["loss_ratio_hw"], exact.loss_ratio)
    assert within(c["response_time"], c["response_time_hw"], exact.response_time)
    assert within(c["throughput"], c["throughput_hw"], exact.throughput)
    assert c["response_time_hw"] <= 0.01 * c["response_time"]
    assert res.devices[0]["utilisation"] == pytest.approx(exact.utilisation, rel=0.01)
    assert res.devices[0]["mean_jobs"] == pytest.approx(exact.mean_jobs, rel=0.02)


def test_md1k_matches_exact_numerical_solution():
    exact = q.md1k(1.2, 0.75, 5)  # rho 0.9 with deterministic service
    res = simulate(single(5, 0.75, "det", rate=1.2), seed=12)
    check_invariants(res)
    c = res.chains[0]
    assert within(c["loss_ratio"], c["loss_ratio_hw"], exact.loss_ratio)
    assert within(c["response_time"], c["response_time_hw"], exact.response_time)
    # The deterministic answer differs clearly from the exponential one: the test can tell.
    assert not within(c["loss_ratio"], c["loss_ratio_hw"], q.mm1k(1.2, 1 / 0.75, 5).loss_ratio)


def test_general_service_mg1k_matches_exact_solution():
    exact = q.mg1k_gamma(0.7, 1.0, 3.0, 8)
    res = simulate(single(8, 1.0, "general", rate=0.7, scv=3.0), seed=13)
    check_invariants(res)
    c = res.chains[0]
    assert within(c["loss_ratio"], c["loss_ratio_hw"], exact.loss_ratio)
    assert within(c["response_time"], c["response_time_hw"], exact.response_time)


@pytest.mark.parametrize("distribution", ["exp", "det"])
def test_processor_sharing_mm1_and_insensitivity(distribution):
    # M/G/1-PS mean response time is 1/(mu - lambda) whatever the service distribution.
    res = simulate(single(10_000, 1.0, distribution, "ps", rate=0.6), seed=14)
    check_invariants(res)
    c = res.chains[0]
    assert c["loss_ratio"] == 0.0
    assert within(c["response_time"], c["response_time_hw"], q.mm1_ps_response_time(0.6, 1.0))


def product_form_network(discipline: str) -> Scenario:
    """Three devices, two chains with exits; large capacities so nothing is ever dropped."""
    devices = [
        Device("a", capacity=10_000, speed=2.0, discipline=discipline),
        Device("b", capacity=10_000, discipline=discipline),
        Device("c", capacity=10_000, speed=0.5, discipline=discipline),
    ]
    if discipline == "fcfs":  # BCMP FCFS: exponential service with one mean per device
        st = lambda dev, work, **kw: Stage(dev, work, "exp", **kw)  # noqa: E731
    else:  # PS: any distribution, means may differ per chain
        st = lambda dev, work, **kw: Stage(dev, work * 1.3, "general", scv=4.0, **kw)  # noqa: E731
    chains = [
        ServiceChain("x", 0.5, [st("a", 1.0, exit_prob=0.3), st("b", 0.5), st("c", 0.2)]),
        ServiceChain("y", 0.3, [st("b", 0.5), st("a", 1.0), st("c", 0.2)]),
    ]
    return Scenario(devices, chains)


@pytest.mark.parametrize("discipline", ["fcfs", "ps"])
def test_open_product_form_network_matches_bcmp(discipline):
    sc = product_form_network(discipline)
    loads = sc.offered_loads()
    assert max(loads) < 0.8
    routes = [
        [
            (sc.device_id(st.device), sc.mean_service_time(st), v)
            for st, v in zip(ch.stages, sc.visit_probabilities(ch))
        ]
        for ch in sc.chains
    ]
    exact = q.jackson_chain_response_times(loads, routes)
    res = simulate(sc, seed=15)
    check_invariants(res)
    for c, w in zip(res.chains, exact):
        assert c["loss_ratio"] == 0.0
        assert within(c["response_time"], c["response_time_hw"], w), (c["chain"], w)
    for d, rho in zip(res.devices, loads):
        assert d["utilisation"] == pytest.approx(rho, rel=0.02)


def test_early_exit_fractions_match_exit_probabilities():
    sc = Scenario(
        [Device("a", capacity=1000), Device("b", capacity=1000)],
        [
            ServiceChain(
                "c",
                0.4,
                [
                    Stage("a", 0.5, "exp", exit_prob=0.3, exit_accuracy=0.6),
                    Stage("b", 0.5, "exp", exit_prob=0.5, exit_accuracy=0.8),
                    Stage("a", 0.5, "exp", exit_accuracy=0.95),
                ],
            )
        ],
    )
    res = simulate(sc, seed=16)
    check_invariants(res)
    c = res.chains[0]
    expected = [0.3, 0.7 * 0.5, 0.7 * 0.5]
    for k, (f, hw, e) in enumerate(zip(c["exit_fraction"], c["exit_fraction_hw"], expected)):
        assert within(f, hw, e), (k, f, hw, e)
    acc = 0.3 * 0.6 + 0.35 * 0.8 + 0.35 * 0.95
    assert within(c["accuracy"], c["accuracy_hw"], acc)


def test_accuracy_is_undefined_without_exit_accuracies():
    res = simulate(single(5, 1.0, rate=0.5), seed=1)
    assert np.isnan(res.chains[0]["accuracy"])


def memory_scenario() -> Scenario:
    """Memory binds before job counts: a device and a two-device region limited in memory."""
    return Scenario(
        [
            Device("a", capacity=50, memory=10.0),
            Device("b", capacity=50),
            Device("c", capacity=50, discipline="ps"),
        ],
        [
            ServiceChain("x", 1.5, [Stage("a", 0.5, "exp", job_memory=3.0), Stage("b", 0.8)]),
            ServiceChain("y", 1.0, [Stage("b", 0.4, job_memory=2.0), Stage("c", 0.6, "exp")]),
        ],
        regions=[Region("bc", ("b", "c"), memory=9.0)],
    )


def test_memory_limited_regions_never_exceed_their_limit():
    sc = memory_scenario()
    res = SimPyEngine(sc, seed=17, debug=True).run()  # debug asserts every limit after each admit
    check_invariants(res)
    drops = {s["device"]: s["drops"] for s in res.stages if s["stage"] == 0}
    assert drops["a"] > 0 and drops["b"] > 0  # the memory limits bind
    assert res.devices[0]["mean_jobs"] <= 3.0 + 1e-9  # at most 3 jobs of 3.0 fit in 10.0


def test_debug_mode_catches_an_admission_over_the_limit(monkeypatch):
    monkeypatch.setattr(SimPyEngine, "_fits", staticmethod(lambda dev, m: True))
    eng = SimPyEngine(memory_scenario(), seed=17, debug=True)
    with pytest.raises(LimitViolation, match="over its limits"):
        eng.run_until(500.0)


def test_same_seed_same_labels_other_seed_other_labels():
    sc = product_form_network("fcfs")
    fast = SimulatorSettings(precision=0.05)
    a, b = simulate(sc, seed=3, settings=fast), simulate(sc, seed=3, settings=fast)
    c = simulate(sc, seed=4, settings=fast)
    assert a.chains == b.chains and a.devices == b.devices
    assert a.chains[0]["response_time"] != c.chains[0]["response_time"]


def test_arrival_cap_stops_a_run_that_cannot_converge():
    settings = SimulatorSettings(precision=1e-4, max_arrivals=20_000)
    res = simulate(single(10, 1.0, "exp"), seed=5, settings=settings)
    assert res.stop_reason == "arrival_cap"
    assert 20_000 <= res.arrivals < 24_000
    check_invariants(res)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"precision": 0.0}, "precision"),
        ({"precision": 1.5}, "precision"),
        ({"max_arrivals": -1}, "max_arrivals"),
        ({"warmup_arrivals": 2.5}, "warmup_arrivals"),
        ({"min_batches": 1}, "min_batches"),
    ],
)
def test_bad_settings_are_named(kwargs, field):
    with pytest.raises(ValueError, match=f"simulator.{field}"):
        SimulatorSettings(**kwargs)


def test_a_slow_chain_is_not_converged_before_it_completes_anything():
    # A fast chain converges within the warm-up's arrivals; the slow one must still be measured.
    sc = Scenario(
        [Device("a", capacity=50), Device("b", capacity=1000)],
        [
            ServiceChain("fast", 100.0, [Stage("a", 0.0001)]),
            ServiceChain("slow", 5.0, [Stage("b", 150.0)]),
        ],
    )
    res = simulate(sc, 0, SimulatorSettings(max_arrivals=300_000))
    slow = res.chains[1]
    assert slow["completed"] > 0
    assert slow["throughput"] == pytest.approx(1 / 150, rel=0.1)
    assert slow["loss_ratio"] > 0.99
    check_invariants(res, little=False)  # sojourns of ~1.5e5 exceed the window


def test_a_seed_sequence_gives_the_same_run_every_time():
    ss = np.random.SeedSequence(3)
    fast = SimulatorSettings(precision=0.05)
    assert (
        simulate(single(5, 1.0, "exp"), ss, fast).chains
        == simulate(single(5, 1.0, "exp"), ss, fast).chains
    )
    with pytest.raises(ValueError, match="seed"):
        simulate(single(5, 1.0), -1)
