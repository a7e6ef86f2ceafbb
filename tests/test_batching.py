"""The fast data path: datasets processed in one batched pass, mini-batches gathered from the stored
tensors. Both must give exactly the graphs of the per-graph path (PyG's collation of
`scenario_graph` with `attach_targets`), or every model would train on other data."""

import pytest
import torch
from torch_geometric.loader import DataLoader

from chainnet.dataset.store import DatasetError, read_table
from chainnet.learn.batching import GraphBatcher, graph_loader
from chainnet.learn.data import QoSDataset, stored_split
from chainnet.learn.features import attach_targets, scenario_graph
from chainnet.scenario import Scenario


def assert_same_graph(expected, got):
    """Every attribute of every store of `expected` is in `got`, equal (NaN equal to NaN)."""
    for store in expected.stores:
        key = store._key
        other = got[key] if key is not None else got
        for name, value in store.items():
            assert name in other, (key, name)
            if isinstance(value, torch.Tensor):
                assert value.dtype == other[name].dtype, (key, name)
                assert torch.equal(value, other[name]) or torch.allclose(
                    value, other[name], equal_nan=True
                ), (key, name)


def per_graph(root, sample_id: int):
    """The graph of one sample built alone, as before the batched pass."""
    samples = read_table(root, "samples").set_index("sample")
    chains, stages = read_table(root, "chains"), read_table(root, "stages")
    g = scenario_graph(Scenario.from_json(samples.loc[sample_id, "scenario"]))
    ch, st = chains[chains["sample"] == sample_id], stages[stages["sample"] == sample_id]
    targets = {t: ch[t].to_numpy() for t in ("throughput_ratio", "response_ratio")}
    attach_targets(g, targets, {"arrivals": st["arrivals"], "drops": st["drops"]})
    g.sample = torch.tensor([sample_id])
    return g


def test_processed_graphs_equal_the_graphs_built_one_by_one(tiny):
    ds = QoSDataset(tiny, "train")
    assert len(ds) > 20
    for i in range(len(ds)):
        got = ds[i]
        assert_same_graph(per_graph(tiny, int(got.sample)), got)


@pytest.mark.parametrize("indices", [[0], [3, 0, 7, 1], list(range(12))[::-1]])
def test_gathered_batches_equal_pyg_collation(tiny, indices):
    ds = QoSDataset(tiny, "train")
    expected = next(iter(DataLoader(ds[indices], batch_size=len(indices))))
    got = GraphBatcher(ds)(indices)
    assert_same_graph(expected, got)
    assert got.num_graphs == len(indices)
    # a view of the dataset (what a split of a split is) maps its positions to the stored graphs
    view = ds[torch.tensor(indices)]
    assert_same_graph(expected, GraphBatcher(view)(list(range(len(indices)))))


def test_loader_covers_every_graph_once_per_epoch(tiny):
    ds = QoSDataset(tiny, "train")
    seen = [int(s) for b in graph_loader(ds, batch_size=7, shuffle=True) for s in b.sample]
    assert sorted(seen) == sorted(int(g.sample) for g in ds)
    assert seen != sorted(seen)  # shuffled


def test_a_label_row_missing_is_named(tiny):
    samples = read_table(tiny, "samples").iloc[:3]
    chains = read_table(tiny, "chains")
    stages = read_table(tiny, "stages")
    scenarios = [Scenario.from_json(t) for t in samples["scenario"]]
    ids = samples["sample"].to_numpy()
    data, slices = stored_split(scenarios, ids, chains, stages)
    assert slices["sample"].tolist() == [0, 1, 2, 3]
    gone = chains[~((chains["sample"] == ids[1]) & (chains["chain"] == 0))]
    with pytest.raises(DatasetError, match=rf"chains table has no row .*'sample': {ids[1]}"):
        stored_split(scenarios, ids, gone, stages)
