"""The MLP baseline: each chain predicted from its own features and summaries of its fragments.

Per chain: its static and load features, and the mean and the max over its fragments of theirs
(nominal loads: no fixed point), as a correction to the queueing prior. No message passing, no
per-stage output.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter

from chainnet.learn.features import (
    CHAIN_LOAD,
    CHAIN_STATIC,
    FRAGMENT_LOAD,
    FRAGMENT_STATIC,
    Normalizer,
)
from chainnet.learn.models.chainnet import at_least_one, graph_count
from chainnet.learn.prior import chain_of_fragments, chain_outputs, load_features


class ChainMLP(nn.Module):
    def __init__(self, hidden: int = 64, layers: int = 3):
        super().__init__()
        at_least_one(hidden=hidden, layers=layers)
        self.normalizer = Normalizer()
        frag = len(FRAGMENT_STATIC) + len(FRAGMENT_LOAD)
        width = len(CHAIN_STATIC) + len(CHAIN_LOAD) + 2 * frag
        blocks: list[nn.Module] = []
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*blocks, nn.Linear(width, 2))

    def forward(self, data, pass_prob: torch.Tensor | None = None):
        """Returns (chain outputs [n_chain, 2], None: no stage output, 1 run per scenario). The
        loads are always the nominal ones: `pass_prob` (given in training) is not used."""
        loads = load_features(data)
        frag = torch.cat([self.normalizer("fragment", data["fragment"].x), loads["fragment"]], 1)
        chain, _ = chain_of_fragments(data)
        n = data["chain"].num_nodes
        x = torch.cat(
            [
                self.normalizer("chain", data["chain"].x),
                loads["chain"],
                scatter(frag, chain, 0, dim_size=n, reduce="mean"),
                scatter(frag, chain, 0, dim_size=n, reduce="max"),
            ],
            dim=1,
        )
        runs = torch.ones(graph_count(data), dtype=torch.long, device=x.device)
        return chain_outputs(self.body(x), loads), None, runs
