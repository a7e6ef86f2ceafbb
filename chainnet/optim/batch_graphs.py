"""The fast path from candidates to predictions: a gene matrix straight to the surrogate's graph.

`CandidateGraphs(space)` is built once per search space. It keeps everything that does not depend
on the genes (per fragment: work, scv, job memory, weights, chain rate, hop, chain length; the
tables of the threshold genes, exit rows or a service's threshold vectors; per device: speed,
capacity, RAM, discipline) and turns a gene matrix [n_candidates, n_genes] (the encoding of
`chainnet.optim.space`) into the batched graph of those candidates and their physical limits,
with array operations only: no `Scenario` is built or validated per candidate. The graph is the
one `chainnet.learn.features.graph_batch` builds from the decoded scenarios, feature for feature
and in the same float order (a test checks it, bit for bit), and the limits are those of
`chainnet.learn.limits.physical_limits`.

`predict_candidates(surrogate, graphs, genes)` then does what `Surrogate.predict_arrays` does
after building its graph (network, limits, accuracy, training-range flags), so a search scores
candidates with the same numbers as decoding them and calling `predict_arrays`.

A problem with mixed policies (services with `alternatives`, `chainnet.optim.mix`) has a chain
per alternative; each candidate's graph holds those it deploys (share > 0), as its decoded
scenario's routes (the same test checks it), and `predict_candidates` aggregates the predictions
of a service's chains (`by_service`), so its result has one entry per service either way.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch_geometric.data import HeteroData

from chainnet.learn.features import (
    CHAIN_STATIC,
    DEVICE_STATIC,
    FRAGMENT_STATIC,
    HUGE,
    NODES,
    REGION_X,
    STATIC_LIMIT,
    TINY,
    fullness,
    resident_memory,
)
from chainnet.learn.limits import Limits
from chainnet.learn.surrogate import Surrogate
from chainnet.optim.mix import by_service, held
from chainnet.optim.space import SearchSpace
from chainnet.scenario import MEMORY_SLACK, Stage


def _table(x: np.ndarray, columns: tuple[str, ...]) -> torch.Tensor:
    """Rows of static features as `graph_batch` stores them: clipped in float64, then float32."""
    x = np.clip(x, -STATIC_LIMIT, STATIC_LIMIT)
    return torch.from_numpy(x.astype(np.float32).reshape(-1, len(columns)))


def _floats(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).ravel().astype(np.float32))


def _longs(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64).ravel())


class CandidateGraphs:
    """The graph skeleton of one search space; `build(genes)` fills it for many candidates."""

    def __init__(self, space: SearchSpace):
        self.space = space
        problem = space.problem
        services, devices = problem.services, problem.devices
        # per chain: one per service, or per alternative of a service with alternatives (a
        # candidate's graph holds the chains of the alternatives it deploys, share > 0)
        routes = [(s, a) for s, sv in enumerate(services) for a in range(sv.alternatives)]
        self.n_chain, self.n_frag, self.n_dev = len(routes), space.n_placement, len(devices)
        self.service_of = np.array([s for s, _ in routes], dtype=np.int64)
        self.lengths = np.array([len(services[s].fragments) for s, _ in routes], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.rates = np.array([float(services[s].arrival_rate) for s, _ in routes])
        # per fragment (placement gene order: services, alternatives, then fragments)
        frags = [services[s].fragments[f] for s, f in space.fragments]
        self.chain_of = np.repeat(np.arange(self.n_chain), self.lengths)
        self.hop = np.array([f for _, f in space.fragments], dtype=np.int64)
        last = self.lengths[self.chain_of] - 1
        self.position = np.array([k / max(int(n), 1) for k, n in zip(self.hop, last)])
        self.is_last = (self.hop == last).astype(np.float64)
        self.work = np.array([float(fr.work) for fr in frags])
        self.job = np.array([float(fr.job_memory) for fr in frags])
        self.scv = np.array(
            [Stage("d", fr.work, fr.distribution, fr.scv).service_scv for fr in frags]
        )
        self.frag_rate = self.rates[self.chain_of]
        # exits: per threshold gene, the fragments it sets and its table (an exit table's rows,
        # or a service's threshold vectors); where none: probability 0, the fragment's accuracy
        self.exit_genes = [
            (np.array(e.genes, dtype=np.int64), e.exit_prob, e.accuracy) for e in space.exit_genes
        ]
        self.accuracy = space.accuracy
        # per device
        self.speed = np.array([float(d.speed) for d in devices])
        self.inv_cap = np.array([1.0 / d.capacity for d in devices])
        self.ps = np.array([float(d.discipline == "ps") for d in devices])
        self.capacity = np.array([min(float(d.capacity), HUGE) for d in devices])
        self.device_names = [d.name for d in devices]

    # ---- genes ---------------------------------------------------------------------------------
    def checked(self, genes) -> np.ndarray:
        """`genes` as an int64 matrix [n >= 1, n_genes], every gene in its domain, or one
        ValueError (feasibility is checked by `memory`)."""
        domains = self.space.domains
        try:
            a = np.asarray(genes)
        except ValueError:
            raise ValueError("genes: candidates of different lengths") from None
        if a.ndim != 2 or a.shape[1] != len(domains) or not len(a):
            raise ValueError(
                f"genes: expected an integer matrix [n >= 1, {len(domains)}], got shape {a.shape}"
            )
        if a.dtype.kind not in "iu":
            raise ValueError(f"genes: expected integers, got dtype {a.dtype}")
        a = a.astype(np.int64)
        bad = (a < 0) | (a >= domains)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(
                f"genes: candidate {i}, gene {j} is {a[i, j]}; its domain is 0..{domains[j] - 1}"
            )
        return a

    def placement(self, genes: np.ndarray) -> np.ndarray:
        """The device of every fragment of every candidate [n, n_frag] (a gateway fixes some)."""
        dev = genes[:, : self.n_frag].copy()
        dev[:, self.space.fixed] = self.space.fixed_device
        return dev

    def chains(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per candidate and chain: whether it is deployed (share > 0) and its arrival rate
        (share x the service's rate, as the scenario's routes)."""
        shares = np.ones((len(genes), self.n_chain))
        for i, g in enumerate(self.space.share_genes):
            cols = np.flatnonzero(self.service_of == g.service)
            shares[:, cols] = g.shares[genes[:, self.space.n_decisions + i]]
        return shares > 0, shares * self.rates

    def memory(
        self, dev: np.ndarray, active: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per candidate and device: weights held, largest job memory, fragments hosted, of the
        deployed fragments `active` (`chainnet.optim.mix.held`: sums in gene order, as
        `SearchSpace.memory_use` adds them)."""
        weights, job, hosted = held(self.space, dev, active)
        ram = self.space.ram
        over = (weights > ram) | ((job > 0) & (ram - weights < job))
        if over.any():
            i, d = np.argwhere(over)[0]
            raise ValueError(
                f"genes: candidate {i} does not fit the RAM of device {self.device_names[d]!r} "
                "(repair it with SearchSpace.repair)"
            )
        return weights, job, hosted

    def per_service(self, genes, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-chain predictions of the candidates `genes` as one entry per service of each
        (`chainnet.optim.mix.by_service`: a service's chains aggregated)."""
        genes = self.checked(genes)
        deployed, chain_rate = self.chains(genes)
        n_s = len(self.space.problem.services)
        group = (np.arange(len(genes))[:, None] * n_s + self.service_of)[deployed]
        return by_service(arrays, group, chain_rate[deployed], len(genes) * n_s)

    # ---- the graph and the limits --------------------------------------------------------------
    def build(self, genes) -> tuple[HeteroData, Limits]:
        """The batched graph of the candidates `genes` (as `graph_batch` of their scenarios, with
        `batch` vectors) and their physical limits (as `physical_limits`)."""
        genes = self.checked(genes)
        n = len(genes)
        dev = self.placement(genes)
        deployed, chain_rate = self.chains(genes)  # [n, n_chain]
        active = deployed[:, self.chain_of]  # [n, n_frag]: the fragments in the graph
        weights, job, hosted = self.memory(dev, active)
        limited = np.isfinite(self.space.ram) & (job > 0)  # the scenario's device has a memory
        memory = np.where(limited, self.space.ram - weights, np.nan)
        rows = np.arange(n)[:, None]
        service = self.work / self.speed[dev]  # [n, n_frag]
        exit_prob, accuracy = self.exits(genes)
        total = self.totals(service)
        inv_cap = self.inv_cap[dev]
        mem_f, limited_f = memory[rows, dev], limited[rows, dev]
        share = np.where(limited_f, self.job / np.where(limited_f, mem_f, 1.0), 0.0)
        frag_x = np.stack(
            [
                inv_cap,
                service / total[:, self.chain_of],
                np.broadcast_to(self.scv, (n, self.n_frag)),
                share,
                exit_prob,
                np.broadcast_to(self.position, (n, self.n_frag)),
                np.broadcast_to(self.is_last, (n, self.n_frag)),
                self.ps[dev],
                np.zeros((n, self.n_frag)),  # a search space's scenarios have no regions
            ],
            axis=2,
        )
        # a rate or a service time outside [TINY, HUGE] among the chains a candidate deploys
        odd_rate = ~((chain_rate >= TINY) & (chain_rate <= HUGE))
        odd_service = (service < TINY) | (service > HUGE)
        extreme = (odd_rate & deployed).any(1) | (odd_service & active).any(1)
        frag_rate = chain_rate[:, self.chain_of]
        rate = frag_rate.copy()
        scale = 1.0 / np.max(np.where(deployed, chain_rate, -np.inf), axis=1)
        rate[extreme] = np.minimum(np.maximum(rate[extreme] * scale[extreme, None], TINY), HUGE)
        data = HeteroData()
        data["chain"].x = _table(self.chain_static(inv_cap, n)[deployed], CHAIN_STATIC)
        frag = data["fragment"]
        frag.x = _table(frag_x[active], FRAGMENT_STATIC)
        frag.base_load = _floats(np.minimum(frag_rate * service, HUGE)[active])
        frag.rate, frag.exit_prob, frag.accuracy = (
            _floats(rate[active]),
            _floats(exit_prob[active]),
            _floats(accuracy[active]),
        )
        frag.job_memory = _floats(
            np.broadcast_to(np.minimum(self.job, HUGE), (n, self.n_frag))[active]
        )
        fill = self.memory_load(dev, active, frag_rate, service, exit_prob, memory)
        self.skeleton(data, dev, hosted, limited, fill, deployed, active)
        room = np.where(limited, memory * (1 + MEMORY_SLACK), np.inf)
        limits = self.limits(service, total, exit_prob, room[rows, dev], dev, chain_rate)
        return data, Limits(
            limits.rate[deployed.ravel()],
            limits.service[deployed.ravel()],
            limits.throughput[deployed.ravel()],
            limits.never[deployed.ravel()],
            limits.admits[active.ravel()],
        )

    def exits(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per candidate and fragment: the exit probability and accuracy that its threshold genes
        set (a table's row, or a service's vector; 0 and the fragment's own accuracy where no
        gene sets them), as `SearchSpace.exits_of`."""
        n = len(genes)
        exit_prob = np.zeros((n, self.n_frag))
        accuracy = np.repeat(self.accuracy[None, :], n, axis=0)
        for e, (cols, probs, accs) in enumerate(self.exit_genes):
            row = genes[:, self.n_frag + e]
            exit_prob[:, cols] = probs[row]
            accuracy[:, cols] = accs[row]
        return exit_prob, accuracy

    def memory_load(
        self,
        dev: np.ndarray,
        active: np.ndarray,
        frag_rate: np.ndarray,
        service: np.ndarray,
        exit_prob: np.ndarray,
        memory: np.ndarray,
    ) -> np.ndarray:
        """Per candidate and device: the `memory_load` feature (`fullness` of the memory its
        resident jobs hold at nominal loads, 0 without a memory), summed over the deployed
        fragments in the order `graph_batch` adds them; `memory`: NaN where unlimited."""
        n = len(dev)
        reach = np.ones((n, self.n_frag))
        for start, length in zip(self.starts, self.lengths):
            for g in range(start + 1, start + length):
                reach[:, g] = reach[:, g - 1] * (1.0 - exit_prob[:, g - 1])
        stream = frag_rate * reach
        terms = (stream, np.minimum(frag_rate * service, HUGE) * reach, stream * self.job)
        sums = np.zeros((len(terms), n, self.n_dev))
        rows = np.arange(n)
        for g in range(self.n_frag):
            for total, term in zip(sums, terms):
                total[rows, dev[:, g]] += np.where(active[:, g], term[:, g], 0.0)
        capacity = np.broadcast_to(self.capacity, (n, self.n_dev))
        _, held = resident_memory(*sums, capacity, memory)
        return np.where(np.isnan(memory), 0.0, fullness(held / memory))

    def totals(self, service: np.ndarray) -> np.ndarray:
        """Per candidate and chain: the sum of its stages' mean service times, added in stage
        order (as Python's `sum` adds them)."""
        total = np.empty((len(service), self.n_chain))
        for s, (start, length) in enumerate(zip(self.starts, self.lengths)):
            t = service[:, start]
            for g in range(start + 1, start + length):
                t = t + service[:, g]
            total[:, s] = t
        return total

    def chain_static(self, inv_cap: np.ndarray, n: int) -> np.ndarray:
        """[n, n_chain, 3]: 1 / length, the least and the largest 1 / capacity on the path."""
        return np.stack(
            [
                np.broadcast_to(1.0 / self.lengths, (n, self.n_chain)),
                np.minimum.reduceat(inv_cap, self.starts, axis=1),
                np.maximum.reduceat(inv_cap, self.starts, axis=1),
            ],
            axis=2,
        )

    def skeleton(
        self,
        data: HeteroData,
        dev: np.ndarray,
        hosted: np.ndarray,
        limited: np.ndarray,
        fill: np.ndarray,
        deployed: np.ndarray,
        active: np.ndarray,
    ) -> None:
        """Device features (`fill`: their memory load), hops, edges and batch vectors of `n`
        candidates into `data`, of the chains `deployed` and fragments `active` of each."""
        n = len(dev)
        hop = torch.from_numpy(np.tile(self.hop, n)[active.ravel()])
        data["fragment"].hop = hop
        dev_x = np.stack(
            [
                np.broadcast_to(self.inv_cap, (n, self.n_dev)),
                hosted * self.inv_cap,
                np.broadcast_to(self.ps, (n, self.n_dev)),
                limited.astype(np.float64),
                np.zeros((n, self.n_dev)),  # a search space's scenarios have no regions
                fill,
                np.zeros((n, self.n_dev)),
            ],
            axis=2,
        )
        data["device"].x = _table(dev_x, DEVICE_STATIC)
        data["device"].capacity = _floats(np.tile(self.capacity, n))
        owner = np.arange(n)[:, None]
        chain_id = (np.cumsum(deployed.ravel()) - 1).reshape(n, self.n_chain)  # in the graph
        chain = _longs(chain_id[:, self.chain_of][active])
        frag_ids = torch.arange(int(active.sum()))
        device = _longs((owner * self.n_dev + dev)[active])
        data["chain", "contains", "fragment"].edge_index = torch.stack([chain, frag_ids])
        data["chain", "contains", "fragment"].hop = hop
        data["fragment", "placed_on", "device"].edge_index = torch.stack([frag_ids, device])
        # a search space's scenarios have no multi-device regions
        data["region"].x = torch.zeros((0, len(REGION_X)))
        data["device", "in", "region"].edge_index = torch.zeros((2, 0), dtype=torch.long)
        counts = (deployed.sum(1), active.sum(1), np.full(n, self.n_dev), np.zeros(n, int))
        for node, k in zip(NODES, counts):
            data[node].batch = _longs(np.repeat(np.arange(n), k))

    def limits(
        self,
        service: np.ndarray,
        total: np.ndarray,
        exit_prob: np.ndarray,
        room: np.ndarray,
        dev: np.ndarray,
        chain_rate: np.ndarray,
    ) -> Limits:
        """`physical_limits` of the candidates, stage by stage along every chain (the same
        operations in the same order, on columns of candidates), for every chain of the space
        (`build` keeps those deployed); `chain_rate`: per candidate and chain."""
        n = len(service)
        fits = self.job <= room  # one job beside none held fits under the limit
        mu = np.where(fits, self.speed[dev] / self.work, 0.0)
        bound = np.empty((n, self.n_chain))
        never = np.zeros((n, self.n_chain), dtype=bool)
        for s, (start, length) in enumerate(zip(self.starts, self.lengths)):
            lam = chain_rate[:, s]
            reach = np.ones(n)
            first = np.minimum(lam, mu[:, start])
            most = lam.copy()
            for g in range(start, start + length):
                most = np.minimum(most, (1.0 - reach) * first + mu[:, g])
                never[:, s] |= ~fits[:, g] & (reach == 1.0)
                reach = reach * (1.0 - exit_prob[:, g])
            bound[:, s] = most
        return Limits(chain_rate.ravel(), total.ravel(), bound.ravel(), never.ravel(), fits.ravel())


def predict_candidates(
    surrogate: Surrogate,
    graphs: CandidateGraphs,
    genes,
    timings: dict[str, float] | None = None,
    level: float | None = None,
) -> dict[str, np.ndarray]:
    """Per chain of every candidate (candidates in order, services in order): what
    `surrogate.predict_arrays` returns for their decoded scenarios (with the bounds of its
    prediction intervals at `level`, if given). With a
    `timings` dict, the seconds spent building the graph and limits (`graph`) and in the
    surrogate (`surrogate`: the network, the limits applied, accuracy, range flags) are added."""
    t0 = time.perf_counter()
    g, limits = graphs.build(genes)
    t1 = time.perf_counter()
    arrays = surrogate.predict_graph(g, limits, level)
    if graphs.space.mixed:  # the chains of a service's alternatives: one entry per service
        arrays = graphs.per_service(genes, arrays)
    if timings is not None:
        for key, seconds in (("graph", t1 - t0), ("surrogate", time.perf_counter() - t1)):
            timings[key] = timings.get(key, 0.0) + seconds
    return arrays
