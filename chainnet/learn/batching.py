"""Mini-batches of a `QoSDataset` gathered straight from its stored tensors.

PyG's loader rebuilds every graph of a batch as its own `HeteroData` and then collates them, which
on this CPU costs as much as the model's training step (about 1,600 graphs/s at batch 128). An
in-memory dataset already holds each attribute of all its graphs as one tensor with per-graph
slices, so a batch is a handful of index operations: the rows of the chosen graphs, their edges
shifted by the nodes before them, and the `batch` and `ptr` vectors. `GraphBatcher` does that for
any stored attribute (tens of thousands of graphs per second); the result equals PyG's collation
of the same graphs (a test checks it), so every model and metric reads it unchanged.

    loader = graph_loader(dataset, batch_size=128, shuffle=True)

`graph_loader` is a plain `torch.utils.data.DataLoader` over graph indices, so Lightning's
distributed sampler splits it across processes as it does any loader.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader
from torch_geometric.data import Batch, HeteroData
from torch_geometric.loader import DataLoader as PyGLoader

# Stored per graph, not per node: one row each.
GRAPH_ATTRS = ("sample",)


def _ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The concatenation of arange(start, start + count) for each pair, in order."""
    total = int(counts.sum())
    offsets = torch.cumsum(counts, 0) - counts  # where each range begins in the output
    return torch.arange(total) + torch.repeat_interleave(starts - offsets, counts)


class GraphBatcher:
    """Collates graphs of an in-memory dataset by their indices (a `collate_fn`)."""

    def __init__(self, dataset):
        self.data, self.slices = dataset._data, dataset.slices  # noqa: SLF001 (PyG's storage)
        # A dataset view (`dataset[idx]`) keeps the store and maps its positions to stored ones.
        self.positions = torch.as_tensor(dataset.indices(), dtype=torch.long)
        self.node_types, self.edge_types = self.data.metadata()

    def __call__(self, indices: Sequence[int] | torch.Tensor) -> Batch:
        graphs = self.positions[torch.as_tensor(indices, dtype=torch.long)]
        n = len(graphs)
        out = Batch(_base_cls=HeteroData)
        owner = torch.arange(n)
        offset = {}
        for node in self.node_types:
            bounds = self._bounds(node)
            counts = bounds[graphs + 1] - bounds[graphs]
            rows = _ranges(bounds[graphs], counts)
            store = out[node]
            for key, value in self.data[node].items():
                store[key] = value[rows]
            store.batch = torch.repeat_interleave(owner, counts)
            store.ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
            offset[node] = store.ptr[:-1]
        for edge in self.edge_types:
            bounds = self.slices[edge]["edge_index"]
            counts = bounds[graphs + 1] - bounds[graphs]
            rows = _ranges(bounds[graphs], counts)
            store = out[edge]
            for key, value in self.data[edge].items():
                if key == "edge_index":
                    shift = torch.stack([offset[edge[0]], offset[edge[2]]])
                    value = value[:, rows] + torch.repeat_interleave(shift, counts, dim=1)
                else:
                    value = value[rows]
                store[key] = value
        for key in GRAPH_ATTRS:
            if key in self.data:
                out[key] = self.data[key][graphs]
        out._num_graphs = n  # noqa: SLF001 (what Batch.num_graphs reads)
        return out

    def _bounds(self, node: str) -> torch.Tensor:
        """Per-graph row bounds of a node type (its first stored attribute's slices)."""
        return next(iter(self.slices[node].values()))


def graph_loader(
    dataset, batch_size: int, shuffle: bool = False, num_workers: int = 0, **kwargs
) -> DataLoader:
    """A loader of `dataset`'s graphs in batches of `batch_size`, collated by `GraphBatcher`
    (by PyG's loader when the dataset has a `transform`, which applies to single graphs)."""
    if getattr(dataset, "transform", None) is not None:
        return PyGLoader(dataset, batch_size, shuffle, num_workers=num_workers, **kwargs)
    return DataLoader(
        range(len(dataset)),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=GraphBatcher(dataset),
        **kwargs,
    )
