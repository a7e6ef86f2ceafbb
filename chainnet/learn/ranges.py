"""The ranges of the inputs a model was trained on, kept in its checkpoint, and the check that flags
a chain whose inputs lie outside them.

Per chain, the inputs are its own, its fragments' and the devices on its path: the static features
the network sees (`chainnet.learn.features`) and a few raw inputs (stages, chains and devices of
the scenario, device capacities and nominal offered loads, stage and chain loads; loads count the
exits but no losses). `TrainingRanges.fit` records the least and largest of each over the training
split, where the normaliser is fitted; they are buffers of the LightningModule, so a checkpoint
holds them and still loads with `torch.load(weights_only=True)`. A checkpoint made before they
were recorded loads with `fitted` False, and its flags are unknown (NaN).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch_geometric.utils import scatter

from chainnet.learn.features import CHAIN_STATIC, DEVICE_STATIC, FRAGMENT_STATIC
from chainnet.learn.prior import chain_of_fragments, nominal_loads
from chainnet.learn.recorded import Recorded

CHAIN_RAW = ("n_stages", "chain_load", "n_chains", "n_devices")
DEVICE_RAW = ("capacity", "offered_load")
FRAGMENT_RAW = ("stage_load",)
# Every input checked, in the order a flag names them (raw inputs first: they speak to a user).
RANGE_INPUTS = (
    CHAIN_RAW
    + DEVICE_RAW
    + FRAGMENT_RAW
    + tuple(f"chain.{name}" for name in CHAIN_STATIC)
    + tuple(f"device.{name}" for name in DEVICE_STATIC)
    + tuple(f"fragment.{name}" for name in FRAGMENT_STATIC)
)
# A value within this relative margin of a bound is in range (sums in another order, float32).
MARGIN = 1e-5
SHOWN = 3  # inputs named per flagged chain


def _owner(data, node: str) -> torch.Tensor:
    store = data[node]
    batch = getattr(store, "batch", None)
    return torch.zeros(store.num_nodes, dtype=torch.long) if batch is None else batch


def chain_extremes(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Per chain of a graph (one scenario or a batch): the least and the largest value of every
    input of `RANGE_INPUTS` over the chain, its fragments and the devices on its path
    ([n_chain, len(RANGE_INPUTS)] each, float64)."""
    frag, n_chain = data["fragment"], data["chain"].num_nodes
    chain, hop = chain_of_fragments(data)
    dev_of = data["fragment", "placed_on", "device"].edge_index[1]
    stage_load, device_load = nominal_loads(data, (chain, hop, None))
    owner = _owner(data, "chain")
    n_graph = int(owner.max()) + 1 if n_chain else 0
    per_graph = {
        node: torch.bincount(_owner(data, node), minlength=n_graph).double()
        for node in ("chain", "device")
    }
    chain_raw = torch.stack(
        [
            torch.bincount(chain, minlength=n_chain).double(),
            scatter(stage_load, chain, 0, dim_size=n_chain, reduce="sum"),
            per_graph["chain"][owner],
            per_graph["device"][owner],
        ],
        dim=1,
    )
    device_raw = torch.stack(
        [
            data["device"].capacity.double(),
            device_load,
        ],
        dim=1,
    )
    device = torch.cat([device_raw, data["device"].x.double()], dim=1)[dev_of]
    fragment = torch.cat([stage_load.unsqueeze(1), frag.x.double()], dim=1)
    lows, highs = [], []
    for values in (device, fragment):  # per fragment: reduced to its chain
        lows.append(scatter(values, chain, 0, dim_size=n_chain, reduce="min"))
        highs.append(scatter(values, chain, 0, dim_size=n_chain, reduce="max"))
    d_raw, f_raw = len(DEVICE_RAW), len(FRAGMENT_RAW)
    chain_x = data["chain"].x.double()

    def ordered(parts: list[torch.Tensor]) -> torch.Tensor:
        dev, fr = parts
        return torch.cat(
            [chain_raw, dev[:, :d_raw], fr[:, :f_raw], chain_x, dev[:, d_raw:], fr[:, f_raw:]],
            dim=1,
        )

    return ordered(lows), ordered(highs)


class TrainingRanges(Recorded):
    """The least and largest value of every input of `RANGE_INPUTS` over the training split."""

    RECORDED = ("low", "high", "fitted")  # a checkpoint made before them loads them unknown

    def __init__(self):
        super().__init__()
        k = len(RANGE_INPUTS)
        self.register_buffer("low", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("high", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, batches: Iterable) -> TrainingRanges:
        """Record the ranges over `batches` (graphs or batches of graphs of the training split,
        as the normaliser is fitted on)."""
        low = torch.full((len(RANGE_INPUTS),), torch.inf, dtype=torch.float64)
        high = torch.full((len(RANGE_INPUTS),), -torch.inf, dtype=torch.float64)
        seen = False
        for batch in batches:
            lo, hi = chain_extremes(batch)
            if len(lo):
                low = torch.minimum(low, lo.min(0).values)
                high = torch.maximum(high, hi.max(0).values)
                seen = True
        if seen:
            self.low.copy_(low)
            self.high.copy_(high)
            self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def check(self, data) -> tuple[np.ndarray, list[str]] | None:
        """Per chain of `data`: whether any input lies outside the ranges, and which (the first
        `SHOWN`, with the value and the bound it crosses; "" when none). None when unknown."""
        if not bool(self.fitted):
            return None
        lo, hi = (t.numpy() for t in chain_extremes(data))
        low, high = self.low.numpy(), self.high.numpy()
        margin = MARGIN * np.maximum(np.abs(low), np.abs(high))
        below, above = lo < low - margin, hi > high + margin
        out = (below | above).any(1)
        why = [""] * len(out)
        for c in np.flatnonzero(out):
            parts = [
                f"{RANGE_INPUTS[j]} {hi[c, j]:.3g} > {high[j]:.3g}"
                if above[c, j]
                else f"{RANGE_INPUTS[j]} {lo[c, j]:.3g} < {low[j]:.3g}"
                for j in np.flatnonzero(below[c] | above[c])
            ]
            more = f"; +{len(parts) - SHOWN} more" if len(parts) > SHOWN else ""
            why[c] = "; ".join(parts[:SHOWN]) + more
        return out, why
