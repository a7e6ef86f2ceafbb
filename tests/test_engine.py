"""The learning engine's fast paths compute what the plain ones did: the chain GRU stepped over hop
positions equals `nn.GRU` on packed sequences, and training at the simulated loads runs the
network once at exactly the loads of the labelled pass probabilities."""

import pytest
import torch
from test_chainnet_model import graphs
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch_geometric.loader import DataLoader

from chainnet.learn.models.chainnet import ChainNet
from chainnet.learn.module import QoSModule
from chainnet.learn.prior import chain_of_fragments, padded_index


def packed_gru(gru: torch.nn.GRU, inp, h0, idx):
    """The reference: nn.GRU over packed chains (what ChainNet ran before)."""
    valid = idx >= 0
    seq = inp.new_zeros(idx.shape + (inp.shape[1],))
    seq[valid] = inp[idx[valid]]
    lengths = valid.sum(1)
    packed = pack_padded_sequence(seq, lengths, batch_first=True, enforce_sorted=False)
    out, last = gru(packed, h0.unsqueeze(0))
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=idx.shape[1])
    per_fragment = inp.new_empty(inp.shape[0], gru.hidden_size)
    per_fragment[idx[valid]] = out[valid]
    return per_fragment, last.squeeze(0)


def test_chain_gru_over_hop_positions_equals_the_packed_gru():
    torch.manual_seed(0)
    model = ChainNet(hidden=16)
    batch = next(iter(DataLoader(graphs(10), batch_size=10)))
    chain, hop = chain_of_fragments(batch)
    idx = padded_index(chain, hop, batch["chain"].num_nodes)
    inp = torch.randn(len(hop), 32, requires_grad=True)
    h0 = torch.randn(batch["chain"].num_nodes, 16)
    hop_state, last = model._along_chains(inp, h0, (chain, hop, idx))
    ref_state, ref_last = packed_gru(model.path_gru, inp, h0, idx)
    assert torch.allclose(hop_state, ref_state, atol=1e-6)
    assert torch.allclose(last, ref_last, atol=1e-6)
    grad = torch.autograd.grad(hop_state.sum() + last.sum(), inp)[0]
    ref_grad = torch.autograd.grad(ref_state.sum() + ref_last.sum(), inp)[0]
    assert torch.allclose(grad, ref_grad, atol=1e-5)


def test_given_pass_probabilities_replace_the_fixed_point():
    torch.manual_seed(0)
    model = ChainNet(hidden=16, rounds=2, max_iter=5, tol=0.0).eval()
    batch = next(iter(DataLoader(graphs(6, scale=4.0), batch_size=6)))
    with torch.no_grad():
        fixed_out, fixed_pass, runs = model(batch)
        assert runs.tolist() == [5] * 6
        # at the fixed point's own pass probabilities, one run gives the same answer
        again = model(batch, fixed_pass)
        at_ones = model(batch, torch.ones_like(fixed_pass))
    assert again[2].tolist() == [1] * 6
    model.max_iter = 1  # nominal loads: every stage passes everything
    with torch.no_grad():
        nominal = model(batch)
    assert torch.equal(at_ones[0], nominal[0])
    assert not torch.allclose(again[0], at_ones[0])


def module(simulated_loads: bool) -> QoSModule:
    net = {"_target_": "chainnet.learn.models.chainnet.ChainNet", "hidden": 8, "rounds": 1}
    opt = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
    return QoSModule(net=net, optimizer=opt, simulated_loads=simulated_loads)


@pytest.mark.parametrize("simulated_loads", [True, False])
def test_training_runs_at_the_simulated_loads_and_validation_never(simulated_loads, monkeypatch):
    m = module(simulated_loads)
    batch = next(iter(DataLoader(graphs(4), batch_size=4)))
    labels = torch.rand(batch["fragment"].num_nodes)
    labels[0] = float("nan")  # a stage no job reached
    batch["fragment"].y_pass = labels
    seen = []
    real = m.net.forward
    monkeypatch.setattr(m.net, "forward", lambda data, p=None: seen.append(p) or real(data, p))
    monkeypatch.setattr(m, "log", lambda *a, **k: None)
    m._step(batch, "train")
    m._step(batch, "val")
    if simulated_loads:
        assert torch.equal(seen[0], torch.where(torch.isnan(labels), 1.0, labels))
    else:
        assert seen[0] is None
    assert seen[1] is None  # validation scores as the surrogate does: its own fixed point
    batch["fragment"].y_pass = torch.full_like(labels, float("nan"))  # no stage labels at all
    m._step(batch, "train")
    assert seen[2] is None


def test_simulated_loads_must_be_a_boolean():
    with pytest.raises(ValueError, match="model.simulated_loads: got 'yes'; true or false"):
        module("yes")
