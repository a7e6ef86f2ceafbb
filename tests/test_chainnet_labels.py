"""Re-simulating published ChainNet samples reproduces their labels (SPEC section 2).

The labels were made with about 1.3e5 arrivals per sample; we cap our runs at a similar size so the
test stays fast, and compare medians over 40 samples (the experiment script runs 500 and more).
"""

from dataclasses import replace

import pytest
from tests_helpers import PUBLISHED

from chainnet.dataset.published import read_chainnet_split
from chainnet.dataset.replicate import compare_with_labels
from chainnet.sim import SimulatorSettings

pytestmark = pytest.mark.published


def test_resimulated_samples_match_published_labels():
    samples = read_chainnet_split(PUBLISHED, limit=40)
    df = compare_with_labels(samples, SimulatorSettings(max_arrivals=150_000), seed=0)
    assert len(df) == sum(len(s.scenario.chains) for s in samples)
    assert df["abs_err_throughput_ratio"].median() < 0.002
    assert df["rel_err_response_time"].median() < 0.01
    # Every chain, not just the median, is in the right neighbourhood.
    assert df["abs_err_throughput_ratio"].max() < 0.05
    assert df["rel_err_response_time"].quantile(0.9) < 0.05


def test_the_comparison_would_catch_other_semantics():
    """Exponential instead of deterministic service must visibly miss the labels."""
    exp = []
    for s in read_chainnet_split(PUBLISHED, limit=12):
        chains = [
            replace(c, stages=[replace(st, distribution="exp") for st in c.stages])
            for c in s.scenario.chains
        ]
        exp.append(replace(s, scenario=replace(s.scenario, chains=tuple(chains))))
    df = compare_with_labels(exp, SimulatorSettings(precision=0.03, max_arrivals=60_000))
    assert df["rel_err_response_time"].median() > 0.05
