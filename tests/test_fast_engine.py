"""The compiled fast path gives the SimPy engine's answers: per job, per label, bit for bit."""

import numpy as np
import pytest
from tests_helpers import KINDS, random_scenario

from chainnet.sim import SimPyEngine, SimulatorSettings, make_engine, simulate
from chainnet.sim.fast import FastEngine
from chainnet.sim.stats import BatchMeans


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(3))
def test_same_outcome_for_every_job(kind, seed):
    sc = random_scenario(kind, seed)
    horizon = 6000.0 / sum(c.arrival_rate for c in sc.chains)  # several buffer refills
    ours = sorted(FastEngine(sc, seed, trace=True).run_until(horizon))
    reference = sorted(SimPyEngine(sc, seed, trace=True).run_until(horizon))
    assert len(ours) == len(reference) > 4000
    assert ours == reference


@pytest.mark.parametrize("kind", KINDS)
def test_same_labels_bit_for_bit(kind):
    sc = random_scenario(kind, 11)
    settings = SimulatorSettings(precision=0.03)
    fast, ref = (
        simulate(sc, 11, settings, engine="fast"),
        simulate(sc, 11, settings, engine="simpy"),
    )
    assert fast.chains == ref.chains
    assert fast.stages == ref.stages and fast.devices == ref.devices
    assert (fast.stop_reason, fast.arrivals, fast.events) == (
        ref.stop_reason,
        ref.arrivals,
        ref.events,
    )


def test_engine_choice_and_debug():
    sc = random_scenario("dsn24", 1)
    assert isinstance(make_engine(sc, engine="fast"), FastEngine)
    assert isinstance(make_engine(sc, engine="fast", debug=True), SimPyEngine)
    with pytest.raises(ValueError, match="simulator.engine"):
        make_engine(sc, engine="warp")


def _per_chain_rule(b: BatchMeans, target: float) -> bool:
    for c in range(len(b.stage_counts)):
        est = b.chain_estimates(c)
        t, r, loss = est["throughput"], est["response_time"], est["loss_ratio"]
        if t.mean == 0.0 and loss.mean >= 0.9:  # lost everything: no response time to estimate
            continue
        if not (t.half_width <= target * abs(t.mean) and r.half_width <= target * abs(r.mean)):
            return False
    return True


def test_vectorised_stopping_rule_equals_the_per_chain_estimates():
    decisions = set()
    for kind in KINDS:
        sc = random_scenario(kind, 2)
        rate = sum(c.arrival_rate for c in sc.chains)
        eng = FastEngine(sc, 2)
        eng.start()
        eng.advance(500 / rate)
        bm = BatchMeans([len(c.stages) for c in sc.chains], [c.arrival_rate for c in sc.chains], 8)
        bm.add(eng.now, eng.counts_row())
        for _ in range(40):
            eng.advance(eng.now + 100 / rate)
            bm.add(eng.now, eng.counts_row())
            for target in (0.005, 0.02, 0.1):
                fast = bm.converged(target)
                assert fast == (bm.n_batches >= 8 and _per_chain_rule(bm, target))
                decisions.add(fast)
    assert decisions == {True, False}


def test_a_stage_that_can_never_admit_is_all_loss():
    from chainnet.parsing import ScenarioWarning
    from chainnet.scenario import Device, Scenario, ServiceChain, Stage

    with pytest.warns(ScenarioWarning, match="no job is ever admitted"):
        sc = Scenario(
            [Device("a", capacity=5, memory=1.0)],
            [ServiceChain("c", 1.0, [Stage("a", 0.5, job_memory=2.0)])],
        )
    res = simulate(sc, 0, SimulatorSettings(max_arrivals=50_000))
    assert res.chains[0]["loss_ratio"] == 1.0 and res.stop_reason == "precision"
    assert np.isnan(res.chains[0]["response_time"])
