"""The one featurizer: a scenario as a heterogeneous graph (SPEC section 5), used by training,
scoring and the optimizer alike.

Node types `chain`, `fragment` (a stage: a fragment placed on a device) and `device`; edges
chain-contains-fragment (with the hop position `hop`), fragment-next-fragment, fragment-placed_on-
device and device-hosts-fragment. Every feature is a ratio that does not depend on the time unit.

Two kinds of features:
- static ones, fixed by the scenario (1 / capacity, the service's scv, memory shares, position...);
- load features, which depend on how many jobs reach each stage. With finite capacity regions that
  depends on the losses upstream, which the model predicts; so the graph stores the ingredients
  (each fragment's `base_load` = chain rate x mean service time, its exit probability, its hop) and
  `load_features` computes the loads in torch for given per-stage pass probabilities. The model
  iterates it to a fixed point; pass probabilities of 1 give the nominal offered loads.

Per-chain targets: throughput ratio and response ratio; per fragment, where the data has stage
arrivals and drops: the pass probability (1 - drop ratio), NaN where unknown.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import HeteroData
from torch_geometric.utils import scatter

from chainnet.scenario import Scenario

FEATURE_VERSION = 1

FRAGMENT_STATIC = (
    "inv_capacity",  # 1 / capacity of the fragment's device
    "service_share",  # mean service time / the chain's total
    "scv",  # squared coefficient of variation of the service
    "memory_share",  # job memory / device memory (0 without a memory limit)
    "exit_prob",
    "position",  # hop / (chain length - 1)
    "is_last",
    "ps",  # the device serves by processor sharing
)
DEVICE_STATIC = (
    "inv_capacity",
    "fragments_per_capacity",  # fragments hosted / capacity (ChainNet's capacityRatio)
    "ps",
    "memory_limited",
    "in_region",  # the device belongs to a multi-device region
)
CHAIN_STATIC = (
    "inv_length",  # 1 / number of stages
    "min_inv_capacity",  # the tightest device along the chain
    "max_inv_capacity",
)
# Computed by `load_features` from pass probabilities (log1p of each, to tame heavy tails).
FRAGMENT_LOAD = ("stage_load", "device_load", "device_share", "reach")
DEVICE_LOAD = ("offered_load",)
CHAIN_LOAD = ("chain_load", "max_device_load")
TARGETS = ("throughput_ratio", "response_ratio")


def scenario_graph(scenario: Scenario) -> HeteroData:
    """The scenario's graph: static features, load ingredients and edges (no targets)."""
    devs, chains = scenario.devices, scenario.chains
    n_frag = sum(len(c.stages) for c in chains)
    hosted = np.zeros(len(devs))
    in_region = np.zeros(len(devs))
    for reg in scenario.regions:
        for name in reg.devices:
            in_region[scenario.device_id(name)] = 1.0
    frag_x = np.zeros((n_frag, len(FRAGMENT_STATIC)), dtype=np.float32)
    base_load = np.zeros(n_frag, dtype=np.float32)
    exit_prob = np.zeros(n_frag, dtype=np.float32)
    hop = np.zeros(n_frag, dtype=np.int64)
    frag_dev = np.zeros(n_frag, dtype=np.int64)
    frag_chain = np.zeros(n_frag, dtype=np.int64)
    chain_x = np.zeros((len(chains), len(CHAIN_STATIC)), dtype=np.float32)
    nxt_src, nxt_dst = [], []
    f = 0
    for c, ch in enumerate(chains):
        service = [scenario.mean_service_time(st) for st in ch.stages]
        total = sum(service)
        inv_caps = []
        for k, st in enumerate(ch.stages):
            d = scenario.device_id(st.device)
            dev = devs[d]
            hosted[d] += 1
            inv_caps.append(1.0 / dev.capacity)
            frag_x[f] = (
                1.0 / dev.capacity,
                service[k] / total,
                st.service_scv,
                st.job_memory / dev.memory if dev.memory else 0.0,
                st.exit_prob,
                k / max(len(ch.stages) - 1, 1),
                float(k == len(ch.stages) - 1),
                float(dev.discipline == "ps"),
            )
            base_load[f] = ch.arrival_rate * service[k]
            exit_prob[f] = st.exit_prob
            hop[f], frag_dev[f], frag_chain[f] = k, d, c
            if k:
                nxt_src.append(f - 1)
                nxt_dst.append(f)
            f += 1
        chain_x[c] = (1.0 / len(ch.stages), min(inv_caps), max(inv_caps))
    dev_x = np.array(
        [
            (
                1.0 / d.capacity,
                hosted[j] / d.capacity,
                float(d.discipline == "ps"),
                float(d.memory is not None),
                in_region[j],
            )
            for j, d in enumerate(devs)
        ],
        dtype=np.float32,
    )
    data = HeteroData()
    data["chain"].x = torch.from_numpy(chain_x)
    data["fragment"].x = torch.from_numpy(frag_x)
    data["fragment"].base_load = torch.from_numpy(base_load)
    data["fragment"].exit_prob = torch.from_numpy(exit_prob)
    data["fragment"].hop = torch.from_numpy(hop)
    data["device"].x = torch.from_numpy(dev_x)
    frag_ids = torch.arange(n_frag)
    data["chain", "contains", "fragment"].edge_index = torch.stack(
        [torch.from_numpy(frag_chain), frag_ids]
    )
    data["chain", "contains", "fragment"].hop = torch.from_numpy(hop)
    data["fragment", "next", "fragment"].edge_index = torch.tensor(
        [nxt_src, nxt_dst], dtype=torch.long
    ).reshape(2, -1)
    data["fragment", "placed_on", "device"].edge_index = torch.stack(
        [frag_ids, torch.from_numpy(frag_dev)]
    )
    data["device", "hosts", "fragment"].edge_index = torch.stack(
        [torch.from_numpy(frag_dev), frag_ids]
    )
    return data


def attach_targets(data: HeteroData, chains: dict, stages: dict | None = None) -> HeteroData:
    """Chain targets (throughput_ratio, response_ratio) and, if known, fragment pass probabilities.

    `chains` maps each target name to per-chain values; `stages` may hold per-fragment `arrivals`
    and `drops` (in fragment order).
    """
    data["chain"].y = torch.tensor(
        np.stack([np.asarray(chains[t], dtype=np.float32) for t in TARGETS], axis=1)
    )
    n_frag = data["fragment"].num_nodes
    y_pass = np.full(n_frag, np.nan, dtype=np.float32)
    if stages is not None:
        arrivals = np.asarray(stages["arrivals"], dtype=np.float64)
        drops = np.asarray(stages["drops"], dtype=np.float64)
        ok = arrivals > 0
        y_pass[ok] = 1.0 - drops[ok] / arrivals[ok]
    data["fragment"].y_pass = torch.from_numpy(y_pass)
    return data


def chain_of_fragments(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Per fragment: its chain (global index in the batch) and its hop position."""
    edge = data["chain", "contains", "fragment"]
    chain = torch.empty(data["fragment"].num_nodes, dtype=torch.long)
    chain[edge.edge_index[1]] = edge.edge_index[0]
    return chain, data["fragment"].hop


def padded_index(chain: torch.Tensor, hop: torch.Tensor, n_chain: int) -> torch.Tensor:
    """[n_chain, max_len] fragment indices of each chain in hop order; -1 past a chain's end."""
    length = int(hop.max()) + 1 if len(hop) else 0
    out = torch.full((n_chain, length), -1, dtype=torch.long, device=hop.device)
    out[chain, hop] = torch.arange(len(hop), device=hop.device)
    return out


def reach_probabilities(
    pass_prob: torch.Tensor, exit_prob: torch.Tensor, chain, hop, n_chain: int
) -> torch.Tensor:
    """Probability that a job of the chain reaches each fragment, given per-stage pass probs.

    reach_k = prod_{j<k} pass_j * (1 - exit_j): an exclusive cumulative product along each chain,
    for all chains at once on the padded [chain, hop] layout (exact, no cross-chain accumulation).
    """
    idx = padded_index(chain, hop, n_chain)
    step = torch.ones(idx.shape, dtype=pass_prob.dtype, device=pass_prob.device)
    valid = idx >= 0
    step[valid] = (pass_prob * (1.0 - exit_prob))[idx[valid]]
    before = torch.cumprod(torch.cat([torch.ones_like(step[:, :1]), step[:, :-1]], dim=1), dim=1)
    reach = torch.empty_like(pass_prob)
    reach[idx[valid]] = before[valid]
    return reach


def load_features(data, pass_prob: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Load features of fragments, devices and chains for the given per-fragment pass probs."""
    frag = data["fragment"]
    chain, hop = chain_of_fragments(data)
    if pass_prob is None:
        pass_prob = torch.ones_like(frag.base_load)
    n_chain = data["chain"].num_nodes
    reach = reach_probabilities(pass_prob, frag.exit_prob, chain, hop, n_chain)
    stage_load = frag.base_load * reach
    dev_of = data["fragment", "placed_on", "device"].edge_index[1]
    n_dev = data["device"].num_nodes
    device_load = scatter(stage_load, dev_of, 0, dim_size=n_dev, reduce="sum")
    share = stage_load / torch.clamp(device_load[dev_of], min=1e-12)
    chain_load = scatter(stage_load, chain, 0, dim_size=n_chain, reduce="sum")
    max_dev = scatter(device_load[dev_of], chain, 0, dim_size=n_chain, reduce="max")
    return {
        "fragment": torch.log1p(
            torch.stack([stage_load, device_load[dev_of], share, reach], dim=1)
        ),
        "device": torch.log1p(device_load).unsqueeze(1),
        "chain": torch.log1p(torch.stack([chain_load, max_dev], dim=1)),
    }


class Normalizer(torch.nn.Module):
    """Standardises static features with statistics of the training split; saved with a model."""

    def __init__(self, sizes: dict[str, int] | None = None):
        super().__init__()
        sizes = sizes or {
            "chain": len(CHAIN_STATIC),
            "fragment": len(FRAGMENT_STATIC),
            "device": len(DEVICE_STATIC),
        }
        for node, k in sizes.items():
            self.register_buffer(f"{node}_mean", torch.zeros(k))
            self.register_buffer(f"{node}_std", torch.ones(k))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, graphs) -> Normalizer:
        for node in ("chain", "fragment", "device"):
            x = torch.cat([g[node].x for g in graphs])
            std = x.std(0, unbiased=False)
            getattr(self, f"{node}_mean").copy_(x.mean(0))
            # A constant feature (std 0) is centred, not scaled.
            getattr(self, f"{node}_std").copy_(torch.where(std > 0, std, torch.ones_like(std)))
        self.fitted.fill_(True)
        return self

    def forward(self, node: str, x: torch.Tensor) -> torch.Tensor:
        return (x - getattr(self, f"{node}_mean")) / getattr(self, f"{node}_std")
