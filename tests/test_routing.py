"""The routing features: how each stage's jobs come from its previous device (`routing=true`)."""

import math

import pytest
import torch

from chainnet.learn.features import FRAGMENT_LOAD, FRAGMENT_ROUTING, FRAGMENT_STATIC, scenario_graph
from chainnet.learn.models.chainnet import ChainNet
from chainnet.learn.prior import load_features
from chainnet.scenario import Device, Scenario, ServiceChain, Stage


def crossing(long_service: str = "det") -> Scenario:
    """Chains "long" and "short" leave device a for device b together; "other" comes to b from c.
    Fragments in order: long@a, long@b, short@a, short@b, other@c, other@b."""
    return Scenario(
        [Device(name, capacity=10, speed=1.0) for name in ("a", "b", "c")],
        [
            ServiceChain("long", 0.5, [Stage("a", 1.0, long_service), Stage("b", 0.5, "det")]),
            ServiceChain("short", 2.0, [Stage("a", 0.1, "det"), Stage("b", 0.1, "det")]),
            ServiceChain("other", 1.0, [Stage("c", 0.2, "det"), Stage("b", 0.2, "det")]),
        ],
    )


def routing(scenario, pass_prob=None) -> torch.Tensor:
    width = len(FRAGMENT_LOAD)
    loads = load_features(scenario_graph(scenario), pass_prob, routing=True)["fragment"]
    assert loads.shape[1] == width + len(FRAGMENT_ROUTING)
    return loads[:, width:].double()


def test_stages_that_come_together_and_bursts_released_behind_long_jobs():
    corouted, burst = routing(crossing()).T
    # at b: 3.5 arrivals per time unit, 2.5 of them from a
    assert corouted.tolist() == pytest.approx([0, 2.0 / 3.5, 0, 0.5 / 3.5, 0, 0])
    # short's jobs reaching a during one long job (E[S^2] / E[S] = 1): 2; long's during one
    # short job: 0.05; other is alone on c; first stages have no previous device
    assert burst.tolist() == pytest.approx([0, math.log1p(0.05), 0, math.log1p(2.0), 0, 0])


def test_the_routing_features_follow_the_loads_and_the_service_variability():
    pass_prob = torch.tensor([0.5, 1.0, 1.0, 1.0, 1.0, 1.0])  # half of long's jobs lost at a
    corouted, burst = routing(crossing(), pass_prob).T
    assert float(corouted[3]) == pytest.approx(0.25 / 3.25)
    assert float(burst[3]) == pytest.approx(math.log1p(2.0))  # measured per long job
    # exponential long jobs: one in progress lasts twice its mean (E[S^2] / E[S] = 2)
    _, burst = routing(crossing("exp")).T
    assert float(burst[3]) == pytest.approx(math.log1p(4.0))


def test_without_routing_the_load_features_are_unchanged():
    g = scenario_graph(crossing())
    plain, routed = load_features(g), load_features(g, routing=True)
    assert torch.equal(routed["fragment"][:, : len(FRAGMENT_LOAD)], plain["fragment"])
    for key in ("device", "chain", "prior", "prior_pass", "cap"):
        assert torch.equal(routed[key], plain[key])


def test_chainnet_reads_the_routing_features_only_when_asked():
    width = len(FRAGMENT_STATIC) + len(FRAGMENT_LOAD)
    plain, routed = ChainNet(hidden=8, rounds=1), ChainNet(hidden=8, rounds=1, routing=True)
    assert plain.enc["fragment"][0].in_features == width  # checkpoints from before: no routing
    assert routed.enc["fragment"][0].in_features == width + len(FRAGMENT_ROUTING)
    out, pass_prob, _ = routed(scenario_graph(crossing()))
    assert out.shape == (3, 2) and pass_prob.shape == (6,)
    with pytest.raises(ValueError, match="model.net.routing"):
        ChainNet(routing="yes")
