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

Queueing prior: from the same loads, `load_features` also solves each device as an M/M/1/K queue
(blocking probability, mean number, mean time in system, all in closed form and batched) and
combines them along every chain into a first estimate of the chain's throughput ratio and response
ratio. These estimates are features, and the models predict a correction to them (in logit space)
rather than the ratios from scratch: the network learns what the product-form approximation misses
(general service, shared regions, correlated losses), which generalises to larger systems better
than learning queueing from zero. The estimate is cheap (no iteration of its own).

Per-chain targets: throughput ratio and response ratio; per fragment, where the data has stage
arrivals and drops: the pass probability (1 - drop ratio), NaN where unknown.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch_geometric.data import HeteroData
from torch_geometric.utils import scatter

from chainnet.scenario import Scenario

FEATURE_VERSION = 3

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
# Computed by `load_features` from pass probabilities (loads as log1p, to tame heavy tails).
FRAGMENT_LOAD = (
    "stage_load",
    "device_load",
    "device_share",
    "reach",
    "device_blocking",  # M/M/1/K blocking probability of the fragment's device
    "log_sojourn",  # log(estimated time at this stage / its mean service time)
)
DEVICE_LOAD = ("offered_load", "blocking", "fill", "log_sojourn")  # fill: mean number / capacity
CHAIN_LOAD = (
    "chain_load",
    "max_device_load",
    "prior_throughput_ratio",
    "prior_response_share",  # prior response ratio / its largest possible value
    "log_response_cap",
)
TARGETS = ("throughput_ratio", "response_ratio")


def scenario_graph(scenario: Scenario) -> HeteroData:
    """The scenario's graph: static features, load ingredients and edges (no targets)."""
    return graph_batch([scenario], with_batch=False)


def graph_batch(scenarios: Sequence[Scenario], with_batch: bool = True) -> HeteroData:
    """Many scenarios as one disjoint graph, built directly (no per-graph objects to collate).

    The same graph as collating each `scenario_graph`, with `batch` vectors of chains, fragments
    and devices (which scenario each belongs to) unless `with_batch` is False. This is the fast
    path of scoring: one pass of Python over the stages, then a few array conversions.
    """
    frag_x: list[tuple] = []
    base_load: list[float] = []
    rate: list[float] = []
    exit_prob: list[float] = []
    accuracy: list[float] = []  # of the exit after the fragment (NaN: none given); not a feature
    hop: list[int] = []
    frag_dev: list[int] = []
    frag_chain: list[int] = []
    chain_x: list[tuple] = []
    dev_x: list[tuple] = []
    capacity: list[float] = []
    sizes = np.zeros((len(scenarios), 3), dtype=np.int64)  # chains, fragments, devices
    n_chain = n_dev = 0
    for i, scenario in enumerate(scenarios):
        devs = scenario.devices
        hosted = [0] * len(devs)
        in_region = [0.0] * len(devs)
        for reg in scenario.regions:
            for name in reg.devices:
                in_region[scenario.device_id(name)] = 1.0
        inv_cap = [1.0 / d.capacity for d in devs]
        ps = [float(d.discipline == "ps") for d in devs]
        n_frag_before = len(hop)
        for c, ch in enumerate(scenario.chains):
            ids = [scenario.device_id(st.device) for st in ch.stages]
            service = [st.work / devs[d].speed for st, d in zip(ch.stages, ids)]
            total = sum(service)
            last = len(ch.stages) - 1
            for k, (st, d) in enumerate(zip(ch.stages, ids)):
                hosted[d] += 1
                memory = devs[d].memory
                frag_x.append(
                    (
                        inv_cap[d],
                        service[k] / total,
                        st.service_scv,
                        st.job_memory / memory if memory else 0.0,
                        st.exit_prob,
                        k / max(last, 1),
                        float(k == last),
                        ps[d],
                    )
                )
                base_load.append(ch.arrival_rate * service[k])
                rate.append(ch.arrival_rate)
                exit_prob.append(st.exit_prob)
                accuracy.append(np.nan if st.exit_accuracy is None else st.exit_accuracy)
                hop.append(k)
                frag_dev.append(n_dev + d)
                frag_chain.append(n_chain + c)
            caps = [inv_cap[d] for d in ids]
            chain_x.append((1.0 / len(ch.stages), min(caps), max(caps)))
        for j, d in enumerate(devs):
            dev_x.append(
                (
                    inv_cap[j],
                    hosted[j] * inv_cap[j],
                    ps[j],
                    float(d.memory is not None),
                    in_region[j],
                )
            )
            capacity.append(float(d.capacity))
        sizes[i] = (len(scenario.chains), len(hop) - n_frag_before, len(devs))
        n_chain += len(scenario.chains)
        n_dev += len(devs)
    f32 = np.float32
    hop_t = torch.tensor(hop, dtype=torch.long)
    frag_ids = torch.arange(len(hop))
    data = HeteroData()
    data["chain"].x = torch.from_numpy(np.array(chain_x, dtype=f32).reshape(-1, len(CHAIN_STATIC)))
    data["fragment"].x = torch.from_numpy(
        np.array(frag_x, dtype=f32).reshape(-1, len(FRAGMENT_STATIC))
    )
    data["fragment"].base_load = torch.tensor(base_load, dtype=torch.float32)
    data["fragment"].rate = torch.tensor(rate, dtype=torch.float32)
    data["fragment"].exit_prob = torch.tensor(exit_prob, dtype=torch.float32)
    data["fragment"].accuracy = torch.tensor(accuracy, dtype=torch.float32)
    data["fragment"].hop = hop_t
    data["device"].x = torch.from_numpy(np.array(dev_x, dtype=f32).reshape(-1, len(DEVICE_STATIC)))
    data["device"].capacity = torch.tensor(capacity, dtype=torch.float32)
    chain_t = torch.tensor(frag_chain, dtype=torch.long)
    dev_t = torch.tensor(frag_dev, dtype=torch.long)
    data["chain", "contains", "fragment"].edge_index = torch.stack([chain_t, frag_ids])
    data["chain", "contains", "fragment"].hop = hop_t
    nxt = torch.nonzero(hop_t > 0).flatten()
    data["fragment", "next", "fragment"].edge_index = torch.stack([nxt - 1, nxt])
    data["fragment", "placed_on", "device"].edge_index = torch.stack([frag_ids, dev_t])
    data["device", "hosts", "fragment"].edge_index = torch.stack([dev_t, frag_ids])
    if with_batch:
        owner = torch.arange(len(scenarios))
        for col, node in enumerate(("chain", "fragment", "device")):
            data[node].batch = owner.repeat_interleave(torch.from_numpy(sizes[:, col]))
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


def is_last_stage(chain: torch.Tensor, hop: torch.Tensor, n_chain: int) -> torch.Tensor:
    """Per fragment: whether it is its chain's last stage."""
    return hop == scatter(hop, chain, 0, dim_size=n_chain, reduce="max")[chain]


def reach_probabilities(
    pass_prob: torch.Tensor,
    exit_prob: torch.Tensor,
    chain,
    hop,
    n_chain: int,
    idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """Probability that a job of the chain reaches each fragment, given per-stage pass probs.

    reach_k = prod_{j<k} pass_j * (1 - exit_j): an exclusive cumulative product along each chain,
    for all chains at once on the padded [chain, hop] layout (exact, no cross-chain accumulation).
    `idx` is that layout (`padded_index`), if the caller has it already.
    """
    if idx is None:
        idx = padded_index(chain, hop, n_chain)
    step = torch.ones(idx.shape, dtype=pass_prob.dtype, device=pass_prob.device)
    valid = idx >= 0
    step[valid] = (pass_prob * (1.0 - exit_prob))[idx[valid]]
    before = torch.cumprod(torch.cat([torch.ones_like(step[:, :1]), step[:, :-1]], dim=1), dim=1)
    reach = torch.empty_like(pass_prob)
    reach[idx[valid]] = before[valid]
    return reach


def mm1k(rho: torch.Tensor, capacity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """M/M/1/K blocking probability and mean number in system, elementwise, for any load.

    The number in system is a geometric law with ratio rho truncated to 0..K. Above rho = 1 it is
    computed as K minus a truncated geometric with ratio 1/rho (the empty places), so no power
    overflows; at rho = 1 the law is uniform.
    """
    rho, k = rho.double(), capacity.double()
    near = (rho - 1.0).abs() * (k + 1.0) < 1e-6  # uniform within ~1e-6; no cancellation
    q = torch.where(rho > 1.0, 1.0 / rho.clamp(min=1e-300), rho)
    q = torch.where(near, torch.full_like(q, 0.5), q)  # replaced below; avoids 0/0
    qk1 = q ** (k + 1.0)
    mean = q / (1.0 - q) - (k + 1.0) * qk1 / (1.0 - qk1)
    top = (1.0 - q) * q**k / (1.0 - qk1)  # P(n = K) of the law with ratio q
    bottom = (1.0 - q) / (1.0 - qk1)  # P(n = 0)
    blocking = torch.where(rho > 1.0, bottom, top)
    number = torch.where(rho > 1.0, k - mean, mean)
    blocking = torch.where(near, 1.0 / (k + 1.0), blocking)
    number = torch.where(near, k / 2.0, number)
    return blocking, number


def _segment_sum(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    return scatter(x, index, 0, dim_size=n, reduce="sum")


def load_features(
    data, pass_prob: torch.Tensor | None = None, layout: tuple | None = None
) -> dict[str, torch.Tensor]:
    """Load features of fragments, devices and chains for the given per-fragment pass probs.

    Also returns `prior` [n_chain, 2]: the queueing prior's throughput ratio and response ratio,
    and `cap` [n_chain]: the largest response ratio possible (sum of all stages' mean service
    times over the mean service time a completed job receives; 1 without early exits).
    `layout` = (chain, hop, padded index) of the fragments, if the caller has it already (the
    fixed point calls this once per run on the same graph).
    """
    frag = data["fragment"]
    n_chain = data["chain"].num_nodes
    if layout is None:
        chain, hop = chain_of_fragments(data)
        idx = padded_index(chain, hop, n_chain)
    else:
        chain, hop, idx = layout
    if pass_prob is None:
        pass_prob = torch.ones_like(frag.base_load)
    reach = reach_probabilities(pass_prob, frag.exit_prob, chain, hop, n_chain, idx)
    stage_load = frag.base_load * reach
    dev_of = data["fragment", "placed_on", "device"].edge_index[1]
    n_dev = data["device"].num_nodes
    device_load = _segment_sum(stage_load, dev_of, n_dev)
    share = stage_load / torch.clamp(device_load[dev_of], min=1e-12)
    chain_load = _segment_sum(stage_load, chain, n_chain)
    max_dev = scatter(device_load[dev_of], chain, 0, dim_size=n_chain, reduce="max")

    # The queueing prior, in float64: every device an M/M/1/K queue at its offered load, where
    # K is its capacity or, if smaller, the jobs its memory holds: floor(1 / the arrival-weighted
    # mean of its fragments' job memory shares), as the analytic baseline does.
    rho = device_load.double()
    stage_arrivals = (frag.rate * reach).double()
    arrivals = _segment_sum(stage_arrivals, dev_of, n_dev)
    share_col = FRAGMENT_STATIC.index("memory_share")  # raw features: the model normalises
    memory_share = _segment_sum(stage_arrivals * frag.x[:, share_col].double(), dev_of, n_dev)
    mean_share = memory_share / arrivals.clamp(min=1e-300)
    capacity = data["device"].capacity.double()
    by_memory = torch.floor(1.0 / mean_share.clamp(min=1e-12)).clamp(min=1.0)
    capacity = torch.where(mean_share > 0, torch.minimum(capacity, by_memory), capacity)
    blocking, number = mm1k(rho, capacity)
    served = (arrivals * (1.0 - blocking)).clamp(min=1e-300)
    mean_service = torch.where(arrivals > 0, rho / arrivals.clamp(min=1e-300), 0.0)
    sojourn = torch.where(arrivals > 0, number / served, mean_service)  # Little's law
    sojourn = torch.maximum(sojourn, mean_service)
    service = (frag.base_load / frag.rate).double()
    ps = data["device"].x[:, DEVICE_STATIC.index("ps")] > 0.5  # processor sharing
    wait = (sojourn - mean_service)[dev_of]  # FCFS: the same queueing delay for every class
    # PS: time proportional to the service (1 on an idle device)
    stretch = torch.where(mean_service > 0, sojourn / mean_service.clamp(min=1e-300), 1.0)[dev_of]
    at_stage = torch.where(ps[dev_of], service * stretch, service + wait)
    exit_prob = frag.exit_prob.double()
    ones = torch.ones_like(exit_prob)
    visit = reach_probabilities(ones, exit_prob, chain, hop, n_chain, idx)  # given completion
    passes = 1.0 - blocking[dev_of]
    reach_prior = reach_probabilities(passes, exit_prob, chain, hop, n_chain, idx)
    # where a passing job leaves the chain: by its exit, or after the last stage
    leaves = torch.where(is_last_stage(chain, hop, n_chain), ones, exit_prob)
    prior_tput = _segment_sum(reach_prior * passes * leaves, chain, n_chain)
    total = _segment_sum(service, chain, n_chain)
    cap = total / _segment_sum(visit * service, chain, n_chain).clamp(min=1e-300)
    prior_resp = total / _segment_sum(visit * at_stage, chain, n_chain).clamp(min=1e-300)
    prior_share = (prior_resp / cap).clamp(0.0, 1.0)
    f32 = torch.float32
    return {
        "fragment": torch.cat(
            [
                torch.log1p(torch.stack([stage_load, device_load[dev_of], share, reach], dim=1)),
                blocking[dev_of].unsqueeze(1).to(f32),
                torch.log(at_stage / service.clamp(min=1e-300)).clamp(max=30).unsqueeze(1).to(f32),
            ],
            dim=1,
        ),
        "device": torch.cat(
            [
                torch.log1p(device_load).unsqueeze(1),
                torch.stack(
                    [
                        blocking,
                        number / capacity,
                        torch.log(sojourn / mean_service.clamp(min=1e-300)).clamp(0.0, 30.0),
                    ],
                    dim=1,
                ).to(f32),
            ],
            dim=1,
        ),
        "chain": torch.cat(
            [
                torch.log1p(torch.stack([chain_load, max_dev], dim=1)),
                torch.stack([prior_tput, prior_share, torch.log(cap)], dim=1).to(f32),
            ],
            dim=1,
        ),
        "prior": torch.stack([prior_tput, prior_resp], dim=1).to(f32),
        "prior_pass": passes.to(f32),
        "cap": cap.to(f32),
    }


def _logit(p: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.logit(p.clamp(eps, 1.0 - eps))


def pass_outputs(z: torch.Tensor, loads: dict[str, torch.Tensor]) -> torch.Tensor:
    """Fragment pass probabilities from a network's corrections `z` to the prior's."""
    return torch.sigmoid(z + _logit(loads["prior_pass"]))


def chain_outputs(z: torch.Tensor, loads: dict[str, torch.Tensor]) -> torch.Tensor:
    """Chain ratios [n_chain, 2] from a network's corrections `z` [n_chain, 2] to the prior.

    Throughput ratio: sigmoid(z0 + logit(prior)), in (0, 1). Response ratio: cap x sigmoid(z1 +
    logit(prior / cap)), in (0, cap). A network that outputs zeros predicts the prior.
    """
    tput = torch.sigmoid(z[:, 0] + _logit(loads["prior"][:, 0]))
    resp = loads["cap"] * torch.sigmoid(z[:, 1] + _logit(loads["prior"][:, 1] / loads["cap"]))
    return torch.stack([tput, resp], dim=1)


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
