"""The one featurizer: a scenario as a heterogeneous graph (SPEC section 5), used by training,
scoring and the optimizer alike.

Node types `chain`, `fragment` (a stage: a fragment placed on a device), `device` and `region` (a
multi-device finite capacity region: its limits only); edges chain-contains-fragment (with the hop
position `hop`), fragment-placed_on-device (the models derive every other relation from these two)
and device-in-region (read by the load features). Every feature is a ratio that does not depend
on the time unit.

Two kinds of features:
- static ones, fixed by the scenario (1 / capacity, the service's scv, memory shares, position...);
- load features, which depend on how many jobs reach each stage. With finite capacity regions that
  depends on the losses upstream, which the model predicts; so the graph stores the ingredients
  (each fragment's `base_load` = chain rate x mean service time, its exit probability, its hop) and
  `chainnet.learn.prior.load_features` computes the loads in torch for given per-stage pass
  probabilities. The model iterates it to a fixed point; pass probabilities of 1 give the nominal
  offered loads.

Per-chain targets: throughput ratio and response ratio; per fragment, where the data has stage
arrivals and drops: the pass probability (1 - drop ratio), NaN where unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch_geometric.data import HeteroData

from chainnet.scenario import Scenario

# The features a checkpoint was trained on: a new version makes old checkpoints refuse to load.
FEATURE_VERSION = 8
# The layout of stored graphs (edge types, attributes): a new one re-processes cached datasets and
# leaves checkpoints valid.
GRAPH_VERSION = 3

FRAGMENT_STATIC = (
    "inv_capacity",  # 1 / capacity of the fragment's device
    "service_share",  # mean service time / the chain's total
    "scv",  # squared coefficient of variation of the service
    "memory_share",  # job memory / device memory (0 without a memory limit)
    "exit_prob",
    "position",  # hop / (chain length - 1)
    "is_last",
    "ps",  # the device serves by processor sharing
    "region_share",  # share of a multi-device region one job takes (see `_region_terms`)
)
DEVICE_STATIC = (
    "inv_capacity",
    "fragments_per_capacity",  # fragments hosted / capacity (ChainNet's capacityRatio)
    "ps",
    "memory_limited",
    "in_region",  # the device belongs to a multi-device region
    "memory_load",  # how full the device's memory would be at nominal loads, u / (1 + u)
    "region_load",  # the same for the fullest multi-device region it belongs to
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
    "blocking",  # the probability its device refuses a job of this stage (the prior's)
    "log_sojourn",  # log(estimated time at this stage / its mean service time)
    "region_fill",  # its device's
    "squeeze",  # job memory / (it + the memory its device and regions leave free), the largest
)
# Appended to them for a model with `routing` (`chainnet.learn.routing`): how a stage's jobs come
# from its previous device.
FRAGMENT_ROUTING = (
    "corouted",  # share of its device's arrivals that other stages bring from its previous device
    "burst",  # log1p(jobs of its chain reaching its previous device during one job of the others)
)
DEVICE_LOAD = (
    "offered_load",
    "blocking",
    "fill",  # mean number / capacity
    "log_sojourn",
    "memory_fill",  # `fullness` of the memory the mean number of jobs holds (0: no memory)
    "region_fill",  # the same for the fullest multi-device region the device belongs to
)
CHAIN_LOAD = (
    "chain_load",
    "max_device_load",
    "prior_throughput_ratio",
    "prior_response_share",  # prior response ratio / its largest possible value
    "log_response_cap",
)
TARGETS = ("throughput_ratio", "response_ratio")
# Node types of a graph; regions (multi-device finite capacity regions) have no features the
# models read: their limits (`REGION_X`) and device-in-region edges serve the load features.
NODES = ("chain", "fragment", "device", "region")
REGION_X = ("memory", "inv_capacity")  # 0: no such limit; in memory units, not normalised
# Graph tensors are float32. A scenario whose arrival rates or mean service times leave
# [TINY, HUGE] has its rates stored in another time unit (its largest rate becomes 1; features
# and predicted ratios do not depend on the unit), and loads, capacities and static features are
# clipped to finite values, so no NaN or infinity reaches a model. Any other scenario is stored
# exactly as it is.
TINY, HUGE = 1e-30, 1e30
STATIC_LIMIT = 1e6


def scenario_graph(scenario: Scenario) -> HeteroData:
    """The scenario's graph: static features, load ingredients and edges (no targets)."""
    return graph_batch([scenario], with_batch=False)


def graph_batch(scenarios: Sequence[Scenario], with_batch: bool = True) -> HeteroData:
    """Many scenarios as one disjoint graph, built directly (no per-graph objects to collate).

    The same graph as collating each `scenario_graph`, with `batch` vectors of chains, fragments
    and devices (which scenario each belongs to) unless `with_batch` is False. This is the fast
    path of scoring: one pass of Python over the stages, then a few array conversions.
    """
    rows = _Rows()
    for scenario in scenarios:
        rows.add(scenario)
    return rows.graph(with_batch)


@dataclass
class _Rows:
    """The rows of every node type of a disjoint graph, filled scenario by scenario."""

    frag_x: list[tuple] = field(default_factory=list)
    base_load: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    exit_prob: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)  # of the exit (NaN: none); no feature
    hop: list[int] = field(default_factory=list)
    frag_dev: list[int] = field(default_factory=list)
    frag_chain: list[int] = field(default_factory=list)
    chain_x: list[tuple] = field(default_factory=list)
    dev_x: list[tuple] = field(default_factory=list)
    capacity: list[float] = field(default_factory=list)
    job_memory: list[float] = field(default_factory=list)
    region_memory: list[float] = field(default_factory=list)  # 0: no memory limit
    region_inv_capacity: list[float] = field(default_factory=list)  # 0: no capacity limit
    member: list[tuple[int, int]] = field(default_factory=list)  # (device, region) pairs
    # chains, fragments, devices, regions
    sizes: list[tuple[int, int, int, int]] = field(default_factory=list)

    def add(self, scenario: Scenario) -> None:
        devs = scenario.devices
        n_chain, n_frag, n_dev = len(self.chain_x), len(self.hop), len(self.dev_x)
        hosted = [0] * len(devs)
        demand, jobs = _nominal_demand(scenario)
        region_limits, region_load = _region_terms(scenario, demand, jobs)
        in_region = [float(bool(limits)) for limits in region_limits]
        inv_cap = [1.0 / d.capacity for d in devs]
        ps = [float(d.discipline == "ps") for d in devs]
        extreme = False  # a rate or a service time outside [TINY, HUGE]
        for c, ch in enumerate(scenario.chains):
            ids = [scenario.device_id(st.device) for st in ch.stages]
            service = [st.work / devs[d].speed for st, d in zip(ch.stages, ids)]
            total = sum(service)
            extreme = extreme or not (TINY <= ch.arrival_rate <= HUGE)
            extreme = extreme or not (min(service) >= TINY and max(service) <= HUGE)
            last = len(ch.stages) - 1
            for k, (st, d) in enumerate(zip(ch.stages, ids)):
                hosted[d] += 1
                memory = devs[d].memory
                self.frag_x.append(
                    (
                        inv_cap[d],
                        service[k] / total,
                        st.service_scv,
                        st.job_memory / memory if memory else 0.0,
                        st.exit_prob,
                        k / max(last, 1),
                        float(k == last),
                        ps[d],
                        _share_of(st.job_memory, region_limits[d]),
                    )
                )
                self.base_load.append(min(ch.arrival_rate * service[k], HUGE))
                self.rate.append(ch.arrival_rate)
                self.exit_prob.append(st.exit_prob)
                self.accuracy.append(np.nan if st.exit_accuracy is None else st.exit_accuracy)
                self.job_memory.append(min(st.job_memory, HUGE))
                self.hop.append(k)
                self.frag_dev.append(n_dev + d)
                self.frag_chain.append(n_chain + c)
            caps = [inv_cap[d] for d in ids]
            self.chain_x.append((1.0 / len(ch.stages), min(caps), max(caps)))
        if extreme:
            scale = 1.0 / max(ch.arrival_rate for ch in scenario.chains)
            for i in range(n_frag, len(self.rate)):
                self.rate[i] = min(max(self.rate[i] * scale, TINY), HUGE)
        for j, d in enumerate(devs):
            memory_limited = float(d.memory is not None)
            fill = fullness(demand[j] / d.memory) if d.memory else 0.0
            self.dev_x.append(
                (
                    inv_cap[j],
                    hosted[j] * inv_cap[j],
                    ps[j],
                    memory_limited,
                    in_region[j],
                    fill,
                    region_load[j],
                )
            )
            self.capacity.append(min(float(d.capacity), HUGE))
        n_region = len(self.region_memory)
        for r, reg in enumerate(scenario.regions):
            self.region_memory.append(min(reg.memory or 0.0, HUGE))
            self.region_inv_capacity.append(1.0 / reg.capacity if reg.capacity else 0.0)
            self.member += [(n_dev + scenario.device_id(d), n_region + r) for d in reg.devices]
        counts = (len(scenario.chains), len(self.hop) - n_frag, len(devs), len(scenario.regions))
        self.sizes.append(counts)

    def graph(self, with_batch: bool) -> HeteroData:
        def table(rows: list[tuple], columns: tuple[str, ...]) -> torch.Tensor:
            x = np.clip(np.array(rows, dtype=np.float64), -STATIC_LIMIT, STATIC_LIMIT)
            return torch.from_numpy(x.astype(np.float32).reshape(-1, len(columns)))

        def floats(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32)

        hop = torch.tensor(self.hop, dtype=torch.long)
        frag_ids = torch.arange(len(self.hop))
        data = HeteroData()
        data["chain"].x = table(self.chain_x, CHAIN_STATIC)
        frag = data["fragment"]
        frag.x = table(self.frag_x, FRAGMENT_STATIC)
        frag.base_load, frag.rate = floats(self.base_load), floats(self.rate)
        frag.exit_prob, frag.accuracy = floats(self.exit_prob), floats(self.accuracy)
        frag.hop = hop
        frag.job_memory = floats(self.job_memory)
        data["device"].x = table(self.dev_x, DEVICE_STATIC)
        data["device"].capacity = floats(self.capacity)
        chain = torch.tensor(self.frag_chain, dtype=torch.long)
        dev = torch.tensor(self.frag_dev, dtype=torch.long)
        data["chain", "contains", "fragment"].edge_index = torch.stack([chain, frag_ids])
        data["chain", "contains", "fragment"].hop = hop
        data["fragment", "placed_on", "device"].edge_index = torch.stack([frag_ids, dev])
        limits = np.array([self.region_memory, self.region_inv_capacity], dtype=np.float64).T
        data["region"].x = torch.from_numpy(limits.astype(np.float32).reshape(-1, len(REGION_X)))
        member = torch.tensor(self.member, dtype=torch.long).reshape(-1, 2)
        data["device", "in", "region"].edge_index = member.t().contiguous()
        if with_batch:
            sizes = torch.tensor(self.sizes, dtype=torch.long).reshape(-1, len(NODES))
            owner = torch.arange(len(sizes))
            for col, node in enumerate(NODES):
                data[node].batch = owner.repeat_interleave(sizes[:, col])
        return data


def fullness(u: float) -> float:
    """u / (1 + u): a demand over a limit as a feature in [0, 1) (1/2 at the limit); divisions
    only, so the fast path of candidates computes the same bits."""
    return u / (1.0 + u)


def resident_memory(
    arrivals: np.ndarray,
    load: np.ndarray,
    memory_rate: np.ndarray,
    capacity: np.ndarray,
    memory: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Devices' (resident jobs, memory they hold) at their nominal offered loads, elementwise: the
    M/M/1 mean number rho / (1 - rho), or the capacity at rho >= 1 or where smaller, or the jobs
    the memory holds (NaN memory: no limit); times the arrival-weighted mean job memory
    (`memory_rate` / `arrivals`). Rational operations only, on arrays of any shape, so the fast
    path of candidates (`chainnet.optim.batch_graphs`) computes the same bits."""
    with np.errstate(divide="ignore", invalid="ignore"):
        number = np.where(load >= 1.0, capacity, np.minimum(capacity, load / (1.0 - load)))
        mean_job = np.where(arrivals > 0, memory_rate / arrivals, 0.0)
        # rates and job memories whose products overflow: no memory term, but finite features
        mean_job = np.where(np.isfinite(mean_job), mean_job, 0.0)
        by_memory = np.where(mean_job > 0, memory / mean_job, np.nan)
    number = np.where(np.isnan(by_memory), number, np.minimum(number, by_memory))
    return number, number * mean_job


def _nominal_demand(scenario: Scenario) -> tuple[list[float], list[float]]:
    """Per device, at nominal loads (every job passes; exits counted): `resident_memory`'s
    (jobs, memory held). Sums run over the chains and stages in order.

    They say what the per-device queueing prior cannot: which memory the jobs of a region
    compete for, so that a chain of large jobs beside many small ones is seen to starve."""
    devs = scenario.devices
    arrivals, load, memory_rate = ([0.0] * len(devs) for _ in range(3))
    for ch in scenario.chains:
        reach = 1.0
        for st in ch.stages:
            d = scenario.device_id(st.device)
            stream = ch.arrival_rate * reach
            arrivals[d] += stream
            load[d] += min(ch.arrival_rate * (st.work / devs[d].speed), HUGE) * reach
            memory_rate[d] += stream * st.job_memory
            reach = reach * (1.0 - st.exit_prob)
    capacity = np.array([float(d.capacity) for d in devs])
    memory = np.array([np.nan if d.memory is None else d.memory for d in devs])
    number, held = resident_memory(
        np.array(arrivals), np.array(load), np.array(memory_rate), capacity, memory
    )
    return held.tolist(), number.tolist()


def _region_terms(scenario: Scenario, demand: list[float], jobs: list[float]) -> tuple:
    """Per device, over the multi-device regions it belongs to: their limits (memory or None, 1 /
    capacity or 0), and the fullest region's `fullness` at nominal loads (the memory its devices'
    resident jobs hold over its memory, or those jobs over its capacity, whichever is larger)."""
    limits: list[list[tuple]] = [[] for _ in scenario.devices]
    load = [0.0] * len(scenario.devices)
    for reg in scenario.regions:
        ids = [scenario.device_id(name) for name in reg.devices]
        per_job = 1.0 / reg.capacity if reg.capacity else 0.0
        terms = [sum(jobs[d] for d in ids) * per_job]
        if reg.memory:
            terms.append(sum(demand[d] for d in ids) / reg.memory)
        fill = fullness(max(terms))
        for d in ids:
            limits[d].append((reg.memory, per_job))
            load[d] = max(load[d], fill)
    return limits, load


def _share_of(job_memory: float, limits: list[tuple]) -> float:
    """The largest share of a region one job takes: job memory / the region's memory, or 1 / its
    capacity (0 outside multi-device regions)."""
    return max((max(job_memory / m if m else 0.0, c) for m, c in limits), default=0.0)


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
