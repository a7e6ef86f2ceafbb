"""The queueing prior and the load features: what the models iterate and correct.

Load features depend on how many jobs reach each stage, which depends on the losses upstream, which
the model predicts: `load_features` computes them in torch for given per-stage pass probabilities
(the graph stores the ingredients: each fragment's `base_load`, exit probability and hop).

From the same loads, `load_features` also solves each device as a single-server queue with
finite room (`chainnet.learn.stations`: M/M/1/K where every job meets the same limit; a
birth-death chain of memory admission where jobs of different sizes share a device's memory; on
FCFS devices, the service mix's variability by MacGregor Smith's M/G/1/K approximation), which
gives each stage's blocking probability and each device's mean number and time in system,
and combines them along every chain into a first estimate of the chain's throughput ratio and
response ratio. These estimates are features, and the models predict a correction to them (in
logit space) rather than the ratios from scratch: the network learns what the product-form
approximation misses (general service, shared regions, correlated losses), which generalises to
larger systems better than learning queueing from zero. The estimate is cheap (no iteration of
its own).
"""

from __future__ import annotations

import torch
from torch_geometric.utils import scatter

from chainnet.learn.features import DEVICE_STATIC, FRAGMENT_STATIC, HUGE, REGION_X, fullness
from chainnet.learn.routing import routing_features
from chainnet.learn.stations import memory_admission, mm1k, service_stretch, stretched


def chain_of_fragments(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Per fragment: its chain (global index in the batch) and its hop position."""
    edge = data["chain", "contains", "fragment"]
    chain = torch.empty(data["fragment"].num_nodes, dtype=torch.long, device=edge.edge_index.device)
    chain[edge.edge_index[1]] = edge.edge_index[0]
    return chain, data["fragment"].hop


def padded_index(chain: torch.Tensor, hop: torch.Tensor, n_chain: int) -> torch.Tensor:
    """[n_chain, max_len] fragment indices of each chain in hop order; -1 past a chain's end."""
    length = int(hop.max()) + 1 if len(hop) else 0
    out = torch.full((n_chain, length), -1, dtype=torch.long, device=hop.device)
    out[chain, hop] = torch.arange(len(hop), device=hop.device)
    return out


def fragment_layout(data) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chain, hop, `padded_index`) of the fragments: the layout the prior's functions share."""
    chain, hop = chain_of_fragments(data)
    return chain, hop, padded_index(chain, hop, data["chain"].num_nodes)


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
    per_stage = pass_prob * (1.0 - exit_prob)
    # gathers and `where` only: no boolean indexing, whose output size needs a host sync
    step = torch.where(idx >= 0, per_stage[idx.clamp(min=0)], 1.0)
    before = torch.cumprod(torch.cat([torch.ones_like(step[:, :1]), step[:, :-1]], dim=1), dim=1)
    return before[chain, hop]


def nominal_loads(data, layout: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(per fragment, per device) offered loads when every stage passes every job: rate x
    probability of reaching the stage (exits counted) x mean service time, summed per device;
    float64. The loads the datasets' `max_offered_load` and the training ranges speak of."""
    frag = data["fragment"]
    n_chain = data["chain"].num_nodes
    chain, hop, idx = layout if layout is not None else fragment_layout(data)
    ones = torch.ones_like(frag.exit_prob)
    visit = reach_probabilities(ones, frag.exit_prob, chain, hop, n_chain, idx)
    stage_load = (frag.base_load * visit).double()
    dev_of = data["fragment", "placed_on", "device"].edge_index[1]
    device_load = _segment_sum(stage_load, dev_of, data["device"].num_nodes)
    return stage_load, device_load


def _segment_sum(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    return scatter(x, index, 0, dim_size=n, reduce="sum")


def load_features(
    data, pass_prob: torch.Tensor | None = None, layout: tuple | None = None, routing: bool = False
) -> dict[str, torch.Tensor]:
    """Load features of fragments, devices and chains for the given per-fragment pass probs.

    Also returns `prior` [n_chain, 2]: the queueing prior's throughput ratio and response ratio,
    and `cap` [n_chain]: the largest response ratio possible (sum of all stages' mean service
    times over the mean service time a completed job receives; 1 without early exits).
    `layout` = (chain, hop, padded index) of the fragments, if the caller has it already (the
    fixed point calls this once per run on the same graph). With `routing`, the fragments' features
    end with `chainnet.learn.routing`'s (`FRAGMENT_ROUTING`).
    """
    frag = data["fragment"]
    n_chain = data["chain"].num_nodes
    chain, hop, idx = layout if layout is not None else fragment_layout(data)
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

    # The queueing prior, in float64 (a queue per device, combined along every chain).
    service = (frag.base_load / frag.rate).double()  # each stage's mean service time
    blocking, number, capacity, sojourn, mean_service, frag_blocking = _device_queues(
        data, reach, stage_load, device_load, dev_of, service
    )
    memory_fill, region_fill, squeeze = _memory_fill(data, reach, number, dev_of)
    passes, at_stage, prior_tput, prior_resp, cap = _chain_prior(
        data, (chain, hop, idx), dev_of, frag_blocking, sojourn, mean_service, service
    )
    prior_share = (prior_resp / cap).clamp(0.0, 1.0)
    # time at the stage / its service time (1 where the service time underflows to 0: no load)
    stay = torch.where(service > 0, at_stage / service.clamp(min=1e-300), 1.0)
    f32 = torch.float32
    routed = [routing_features(data, (chain, hop, idx), reach, service)] if routing else []
    return {
        "fragment": torch.cat(
            [
                torch.log1p(torch.stack([stage_load, device_load[dev_of], share, reach], dim=1)),
                frag_blocking.unsqueeze(1).to(f32),
                torch.log(stay).clamp(max=30).unsqueeze(1).to(f32),
                region_fill[dev_of].unsqueeze(1).to(f32),
                squeeze.unsqueeze(1).to(f32),
                *routed,
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
                        memory_fill,
                        region_fill,
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


def _device_queues(
    data, reach, stage_load, device_load, dev_of, service
) -> tuple[torch.Tensor, ...]:
    """Every device a single-server queue at its offered load, in float64: (per device: blocking
    probability, mean number, K, mean time in system, mean service time; per fragment: the
    probability its device refuses a job of this stage).

    A job's memory share is taken of the least memory that holds it, its device's or a region's
    of its device (`_tightest_share`). Where every job on a device has the same share (or none),
    the device is M/M/1/K, K its capacity or, if smaller, the jobs that fit: floor(1 / share), as
    the analytic baseline does. Where shares differ, a large job is refused while a small one
    still fits: the device is the birth-death chain of `memory_admission` (K: its capacity), its
    blocking the arrival-weighted mean of its jobs'. On an FCFS device the mix of service times
    sets the blocking too (`_service_stretch`): M/M/1/K's at the size `service_stretch` gives, and
    where shares differ, every job's odds of refusal scaled as that changes those of an M/M/1/K
    queue of as many jobs as the mean share fits. The mean number stays M/M/1/K's or the chain's."""
    frag, n_dev = data["fragment"], data["device"].num_nodes
    rho = device_load.double()
    stage_arrivals = (frag.rate * reach).double()
    arrivals = _segment_sum(stage_arrivals, dev_of, n_dev)
    mean_service = torch.where(arrivals > 0, rho / arrivals.clamp(min=1e-300), 0.0)
    share = _tightest_share(data, dev_of)
    mean_share = _segment_sum(stage_arrivals * share, dev_of, n_dev) / arrivals.clamp(min=1e-300)
    room = data["device"].capacity.double()  # the most resident jobs, memory aside
    by_memory = torch.floor(1.0 / mean_share.clamp(min=1e-12)).clamp(min=1.0)
    capacity = torch.where(mean_share > 0, torch.minimum(room, by_memory), room)
    stretch = _service_stretch(data, rho, stage_arrivals, arrivals, mean_service, dev_of, service)
    blocking, _ = mm1k(rho, stretched(capacity, stretch))
    _, number = mm1k(rho, capacity)
    frag_blocking = blocking[dev_of]
    largest = scatter(share, dev_of, 0, dim_size=n_dev, reduce="max")
    mixed = largest > scatter(share, dev_of, 0, dim_size=n_dev, reduce="min")
    if bool(mixed.any()):  # one host sync; a batch of one job size (dsn24) skips the chain
        # the residents' shares: each stage's weight among them is its share of the load
        weight = stage_load.double() / rho[dev_of].clamp(min=1e-300)
        mean = _segment_sum(weight * share, dev_of, n_dev)
        spread = (_segment_sum(weight * share**2, dev_of, n_dev) - mean**2).clamp(min=0.0)
        held = (mean[dev_of], spread[dev_of])
        chained = torch.where(mixed, room, 0.0)  # a capacity of 0 leaves a device out
        refused, mixed_number = memory_admission(rho, stage_arrivals, share, held, chained, dev_of)
        # the service's variability: every job's odds of refusal scaled as those of an M/M/1/K
        # queue of as many jobs as the mean share fits
        fitting = torch.minimum(room, 1.0 / mean.clamp(min=1e-12))
        scale = _odds(mm1k(rho, stretched(fitting, stretch))[0]) / _odds(mm1k(rho, fitting)[0])
        odds = _odds(refused) * scale[dev_of]
        refused = odds / (1.0 + odds)
        frag_blocking = torch.where(mixed[dev_of], refused, frag_blocking)
        lost = _segment_sum(stage_arrivals * frag_blocking, dev_of, n_dev) / arrivals.clamp(
            min=1e-300
        )
        blocking = torch.where(mixed, lost, blocking)
        number = torch.where(mixed, mixed_number, number)
        capacity = torch.where(mixed, room, capacity)
    served = (arrivals * (1.0 - blocking)).clamp(min=1e-300)
    sojourn = torch.where(arrivals > 0, number / served, mean_service)  # Little's law
    sojourn = torch.maximum(sojourn, mean_service)
    return blocking, number, capacity, sojourn, mean_service, frag_blocking


def _odds(p: torch.Tensor) -> torch.Tensor:
    return p.clamp(min=1e-300) / (1.0 - p).clamp(min=1e-300)


def _service_stretch(
    data, rho, stage_arrivals, arrivals, mean_service, dev_of, service
) -> torch.Tensor:
    """Per device: `service_stretch` of its mix of service times (FCFS; 0 for PS, which is
    insensitive). The mix's scv: its second moment sum(w (1 + scv) S**2) over its squared mean
    (`mean_service`, sum(w S)), minus 1, each stage weighted by its arrivals."""
    frag, n_dev = data["fragment"], data["device"].num_nodes
    scv = frag.x[:, FRAGMENT_STATIC.index("scv")].double()
    w = stage_arrivals / arrivals[dev_of].clamp(min=1e-300)
    second = _segment_sum(w * (1.0 + scv) * service**2, dev_of, n_dev)
    mix = torch.where(mean_service > 0, second / mean_service.clamp(min=1e-300) ** 2 - 1.0, 1.0)
    ps = data["device"].x[:, DEVICE_STATIC.index("ps")] > 0.5
    return torch.where(ps, 0.0, service_stretch(rho, mix))


def _tightest_share(data, dev_of) -> torch.Tensor:
    """Per stage: its job memory over the least memory that holds it, its device's or a region's
    of its device (0 without a memory limit): the larger of its memory share of the device and
    of the tightest region."""
    frag, n_dev = data["fragment"], data["device"].num_nodes
    share = frag.x[:, FRAGMENT_STATIC.index("memory_share")].double()  # raw: the model normalises
    dev, reg = data["device", "in", "region"].edge_index
    if len(dev) == 0:
        return share
    memory = data["region"].x[:, REGION_X.index("memory")].double()
    least = scatter(
        torch.where(memory > 0, memory, HUGE)[reg], dev, 0, dim_size=n_dev, reduce="min"
    )
    least = least[dev_of]  # 0 for a device in no region
    regional = torch.where((least > 0) & (least < HUGE), frag.job_memory.double() / least, 0.0)
    return torch.maximum(share, regional)


def _memory_fill(data, reach, number, dev_of) -> tuple[torch.Tensor, ...]:
    """In float64, at the loads of the current pass probabilities (jobs lost upstream hold
    nothing), per device: the `fullness` (u / (1 + u)) of the memory its mean number of resident
    jobs holds (the arrival-weighted job memory share times the M/M/1/K number; 0 without a
    memory), and of the fullest multi-device region it belongs to (its devices' resident jobs'
    memory over the region's, or those jobs over its capacity, whichever is larger; 0 outside
    regions); per fragment, its `squeeze`: job / (job + the memory left free), over its device's
    memory and its regions', the largest (1: no room left; near 0: room for many; 0: no limit).
    A large job beside small ones that fill a region is squeezed out first."""
    frag, n_dev = data["fragment"], data["device"].num_nodes
    arrivals = (frag.rate * reach).double()
    weight = arrivals / _segment_sum(arrivals, dev_of, n_dev)[dev_of].clamp(min=1e-300)
    share = frag.x[:, FRAGMENT_STATIC.index("memory_share")].double()
    job = frag.job_memory.double()
    device_fill = number * _segment_sum(weight * share, dev_of, n_dev)
    held = number * _segment_sum(weight * job, dev_of, n_dev)  # in memory units
    dev, reg = data["device", "in", "region"].edge_index
    limits = data["region"].x.double()
    memory, per_job = limits[:, REGION_X.index("memory")], limits[:, REGION_X.index("inv_capacity")]
    n_reg = len(limits)
    region_held = _segment_sum(held[dev], reg, n_reg)
    by_memory = region_held / memory.clamp(min=1e-300)
    by_jobs = _segment_sum(number[dev], reg, n_reg) * per_job
    fill = torch.maximum(torch.where(memory > 0, by_memory, 0.0), by_jobs)
    region_fill = scatter(fill[reg], dev, 0, dim_size=n_dev, reduce="max")
    # squeeze: in shares of the device's memory, and in memory units against each region's
    free_share = (1.0 - device_fill[dev_of]).clamp(min=0.0)
    own = torch.where(share > 0, share / (share + free_share).clamp(min=1e-300), 0.0)
    free = torch.where(memory > 0, (memory - region_held).clamp(min=0.0), HUGE)
    least = scatter(free[reg], dev, 0, dim_size=n_dev, reduce="min")  # 0 for no region: masked
    in_region = _segment_sum(torch.ones_like(dev, dtype=torch.float64), dev, n_dev) > 0
    in_region = in_region[dev_of] & (job > 0)
    regional = torch.where(in_region, job / (job + least[dev_of]).clamp(min=1e-300), 0.0)
    squeeze = torch.maximum(own, regional).clamp(0.0, 1.0)
    # clamped: finite whatever overflowed upstream
    return (
        fullness(device_fill.clamp(0.0, HUGE)),
        fullness(region_fill.clamp(0.0, HUGE)),
        squeeze,
    )


def _chain_prior(
    data, layout, dev_of, frag_blocking, sojourn, mean_service, service
) -> tuple[torch.Tensor, ...]:
    """The device queues combined along every chain: (per fragment: pass probability, time at the
    stage; per chain: throughput ratio, response ratio, largest response ratio)."""
    frag, n_chain = data["fragment"], data["chain"].num_nodes
    chain, hop, idx = layout
    ps = data["device"].x[:, DEVICE_STATIC.index("ps")] > 0.5  # processor sharing
    wait = (sojourn - mean_service)[dev_of]  # FCFS: the same queueing delay for every class
    # PS: time proportional to the service (1 on an idle device)
    stretch = torch.where(mean_service > 0, sojourn / mean_service.clamp(min=1e-300), 1.0)[dev_of]
    at_stage = torch.where(ps[dev_of], service * stretch, service + wait)
    exit_prob = frag.exit_prob.double()
    ones = torch.ones_like(exit_prob)
    visit = reach_probabilities(ones, exit_prob, chain, hop, n_chain, idx)  # given completion
    passes = 1.0 - frag_blocking
    reach_prior = reach_probabilities(passes, exit_prob, chain, hop, n_chain, idx)
    # where a passing job leaves the chain: by its exit, or after the last stage
    leaves = torch.where(is_last_stage(chain, hop, n_chain), ones, exit_prob)
    prior_tput = _segment_sum(reach_prior * passes * leaves, chain, n_chain)
    total = _segment_sum(service, chain, n_chain)
    visited = _segment_sum(visit * service, chain, n_chain)
    # Where every service time underflows to 0 (float32): the same ratio from the service shares.
    shares = frag.x[:, FRAGMENT_STATIC.index("service_share")].double()
    by_share = 1.0 / _segment_sum(visit * shares, chain, n_chain).clamp(min=1e-300)
    cap = torch.where(visited > 0, total / visited.clamp(min=1e-300), by_share)
    spent = _segment_sum(visit * at_stage, chain, n_chain)
    prior_resp = torch.where(spent > 0, total / spent.clamp(min=1e-300), cap)  # no time: no wait
    return passes, at_stage, prior_tput, prior_resp, cap


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
