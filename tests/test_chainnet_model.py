"""The ChainNet network: batched, bounded outputs, a reported fixed point, and it learns."""

import pytest
import torch
from torch_geometric.loader import DataLoader

from chainnet.learn.features import attach_targets, scenario_graph
from chainnet.learn.models.chainnet import ChainNet
from chainnet.scenario import Device, Scenario, ServiceChain, Stage


def graphs(n=24, seed=0, scale=1.0):
    rng = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        caps = torch.randint(1, 20, (3,), generator=rng).tolist()
        works = (torch.rand(4, generator=rng) * 1.5 + 0.1).tolist()
        rate = (0.3 + 0.05 * (i % 7)) * scale
        sc = Scenario(
            [Device(f"d{j}", capacity=c) for j, c in enumerate(caps)],
            [
                ServiceChain("a", rate, [Stage("d0", works[0]), Stage("d1", works[1])]),
                ServiceChain(
                    "b", 0.4 * scale, [Stage("d1", works[2]), Stage("d2", works[3], "exp")]
                ),
            ],
        )
        # A learnable target: throughput ratio falls with the nominal load of the busiest device.
        load = max(sc.offered_loads())
        tr = 1.0 / (1.0 + load)
        g = attach_targets(
            scenario_graph(sc), {"throughput_ratio": [tr, tr], "response_ratio": [0.5, 0.5]}
        )
        out.append(g)
    return out


@pytest.mark.parametrize("agg, gru", [("gin", True), ("gat", True), ("gin", False), ("gat", False)])
def test_outputs_are_bounded_and_the_fixed_point_is_reported(agg, gru):
    torch.manual_seed(0)
    model = ChainNet(hidden=16, rounds=2, device_agg=agg, chain_gru=gru, max_iter=4, tol=1e-9)
    batch = next(iter(DataLoader(graphs(8), batch_size=8)))
    out, pass_prob, iterations = model(batch)
    assert out.shape == (batch["chain"].num_nodes, 2)
    assert pass_prob.shape == (batch["fragment"].num_nodes,)
    assert ((out > 0) & (out < 1)).all() and ((pass_prob > 0) & (pass_prob < 1)).all()
    # an untrained model's pass probabilities keep moving by more than 1e-9 (on most scenarios)
    assert iterations.max() == 4 and (iterations >= 3).all() and len(iterations) == 8
    loose = ChainNet(hidden=16, rounds=2, device_agg=agg, chain_gru=gru, max_iter=4, tol=10.0)
    assert loose(batch)[2].tolist() == [2] * 8  # every change is under 10: one update each


def test_a_graph_gives_the_same_answer_alone_or_in_a_batch():
    torch.manual_seed(0)
    gs = graphs(6, scale=4.0)  # overloaded: pass probabilities move from run to run
    alone_batches = [next(iter(DataLoader([g], batch_size=1))) for g in gs]
    model = ChainNet(hidden=16, rounds=2, max_iter=6, tol=0.3).eval()
    with torch.no_grad():
        runs = [int(model(b)[2]) for b in alone_batches]
        # the graphs converge after different numbers of runs: a batch-wide stopping rule would
        # give a graph another answer beside its batch-mates (4e-6 apart here)
        assert len(set(runs)) > 1, runs
        together, _, iterations = model(next(iter(DataLoader(gs, batch_size=6))))
        alone = torch.cat([model(b)[0] for b in alone_batches])
    assert iterations.tolist() == runs  # reported per scenario
    assert torch.allclose(together, alone, rtol=0.0, atol=1e-6)


def test_the_chain_gru_reads_hops_in_order():
    torch.manual_seed(0)
    model = ChainNet(hidden=16, rounds=1, max_iter=1).eval()
    g = graphs(1)[0]
    swapped = g.clone()
    assert g["fragment"].hop.tolist() == [0, 1, 0, 1]
    swapped["fragment"].hop = torch.tensor([1, 0, 1, 0])  # each chain read backwards
    edge = swapped["chain", "contains", "fragment"]
    edge.hop = swapped["fragment"].hop
    with torch.no_grad():
        assert not torch.allclose(model(g)[0], model(swapped)[0])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="model.net.device_agg"):
        ChainNet(device_agg="sage")
    with pytest.raises(ValueError, match="model.net.rounds"):
        ChainNet(rounds=0)


def test_it_learns():
    torch.manual_seed(0)
    data = graphs(48)
    model = ChainNet(hidden=16, rounds=2, max_iter=2)
    model.normalizer.fit(data)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = DataLoader(data, batch_size=16, shuffle=True)

    def loss_now():
        with torch.no_grad():
            b = next(iter(DataLoader(data, batch_size=48)))
            return torch.nn.functional.l1_loss(model(b)[0][:, 0], b["chain"].y[:, 0]).item()

    before = loss_now()
    for _ in range(60):  # under 0.2 x its first loss at seeds 0-4 (0.5 after 30 epochs)
        for b in loader:
            loss = torch.nn.functional.l1_loss(model(b)[0], b["chain"].y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert loss_now() < 0.3 * before
