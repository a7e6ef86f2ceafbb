"""The search space of a deployment problem: genes, domains, feasibility, repair, decoding.

Decisions: the device of every fragment (a gateway fixes a service's first), and the thresholds of
the exits. A candidate is one integer vector: placement genes (device indices) for every fragment,
services then fragments in file order, then threshold genes, services in order: the row of every
exit table, or, for a service with `exit_vectors` (one written with a profile), one gene, the index
of its threshold vector, which sets the exit probability and accuracy of all its fragments at once.
Both kinds are `ExitGene`s: a table whose row r sets `exit_prob[r]` and `accuracy[r]` on some
fragments, which the scenario decoding and the batched graphs (`chainnet.optim.batch_graphs`) share.

A service with `alternatives: K > 1` (a mixed policy, `chainnet.optim.mix`) has K copies of its
placement genes (alternative after alternative) and of its threshold genes, and one share gene,
after all threshold genes, services in order: the row of its share grid. It deploys as one service
with a route per alternative of share > 0 (rate share x arrival rate; one plain chain where a
single alternative has it all). With K = 1 (the default) the genes and the scenario are exactly
those of a service without alternatives.

Memory: a device holds the weights of the fragments it hosts (their sum must fit its `ram`); what
is left of its RAM is the region memory that resident jobs share, so crowding weights onto a device
leaves room for fewer jobs. A device that hosts no fragment with `job_memory` has no memory limit.
Only deployed alternatives (share > 0) hold memory, and a device that hosts the same fragment of a
service for several alternatives holds its weights once (the copies share them).

`SearchSpace(problem)` is built once per problem: the gene layout and the memory arrays (device RAM,
weights and job memory per placement gene) are computed in its constructor and are read-only, so
nothing derived can go stale. It refuses a problem where no placement found fits the devices' RAM,
or whose deployments are not valid scenarios.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from chainnet.optim.mix import held, share_grid
from chainnet.optim.problem import Problem, Service
from chainnet.parsing import ScenarioError
from chainnet.scenario import Device, Scenario, ServiceChain, Stage

EXHAUSTIVE_LIMIT = 200_000  # the largest space `enumerate_feasible` walks
COUNT_LIMIT = 20_000  # the largest space whose feasible candidates are counted (`n_feasible`)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class ExitGene:
    """One threshold gene: row r sets `exit_prob[r, j]` and `accuracy[r, j]` (NaN: none) on the
    fragment of placement gene `genes[j]`; `labels[r]` is its threshold (an exit table's row)
    or its threshold vector (a service's `exit_vectors`), `fragment` None for a vector."""

    service: int
    fragment: int | None
    genes: tuple[int, ...]
    exit_prob: np.ndarray  # [rows, len(genes)], read-only
    accuracy: np.ndarray
    labels: tuple
    alternative: int = 0  # of a service with alternatives (a mixed policy)


@dataclass(frozen=True, eq=False)
class ShareGene:
    """The share gene of a service with alternatives: row r gives alternative k of the service
    the share `shares[r, k]` of its jobs."""

    service: int
    shares: np.ndarray  # [rows, alternatives], read-only


def _nan(values) -> np.ndarray:
    return _read_only(np.array([np.nan if v is None else v for v in values], dtype=np.float64))


def exit_genes(services: tuple[Service, ...]) -> tuple[ExitGene, ...]:
    """The threshold genes of `services`, in gene order (a service's alternatives in order)."""
    out, first = [], 0
    for s, sv in enumerate(services):
        for a in range(sv.alternatives):
            if sv.exit_vectors:
                genes = tuple(range(first, first + len(sv.fragments)))
                vectors = sv.exit_vectors
                probs = _read_only(np.array([v.exit_prob for v in vectors], dtype=np.float64))
                accs = _read_only(np.array([_nan(v.accuracy) for v in vectors]))
                labels = tuple(v.thresholds for v in vectors)
                out.append(ExitGene(s, None, genes, probs, accs, labels, a))
            for f, fr in enumerate(sv.fragments):
                if fr.exit:
                    probs = np.array([[o.exit_prob] for o in fr.exit], dtype=np.float64)
                    accs = _read_only(_nan([o.accuracy for o in fr.exit])[:, None])
                    labels = tuple(o.threshold for o in fr.exit)
                    gene = ExitGene(s, f, (first + f,), _read_only(probs), accs, labels, a)
                    out.append(gene)
            first += len(sv.fragments)
    return tuple(out)


class SearchSpace:
    """The candidates of `problem`: integer vectors, their feasibility and their scenarios."""

    def __init__(self, problem: Problem):
        self.problem = problem
        services, n_dev = problem.services, len(problem.devices)
        index = {d.name: i for i, d in enumerate(problem.devices)}
        # genes: (service, fragment) per placement gene (a service's alternatives one after the
        # other), then the threshold genes, then a share gene per service with alternatives
        slots = [
            (s, a, f)
            for s, sv in enumerate(services)
            for a in range(sv.alternatives)
            for f in range(len(sv.fragments))
        ]
        self.fragments = tuple((s, f) for s, _, f in slots)
        self.alternative = _read_only(np.array([a for _, a, _ in slots], dtype=np.int64))
        self.exit_genes = exit_genes(services)
        self.share_genes = tuple(
            ShareGene(s, share_grid(sv.alternatives, sv.share_step, sv.shares))
            for s, sv in enumerate(services)
            if sv.alternatives > 1
        )
        self.mixed = bool(self.share_genes)
        self.n_placement = len(self.fragments)
        self.n_decisions = self.n_placement + len(self.exit_genes)  # the first share gene
        # per placement gene: the share gene of its service (-1: none), and the earlier copies
        # of the same fragment (other alternatives), whose weights a device holds once
        share_of = {g.service: i for i, g in enumerate(self.share_genes)}
        self.share_gene_of = _read_only(
            np.array([share_of.get(s, -1) for s, _ in self.fragments], dtype=np.int64)
        )
        self.copies = tuple(
            tuple(h for h in range(g) if self.fragments[h] == self.fragments[g])
            for g in range(len(slots))
        )
        hosted = [services[s].fragments[f] for s, f in self.fragments]
        gateway = np.array(
            [
                index[services[s].gateway] if f == 0 and services[s].gateway is not None else -1
                for s, f in self.fragments
            ],
            dtype=np.int64,
        )
        self.fixed = _read_only(gateway >= 0)  # placement genes a gateway fixes
        self.fixed_device = _read_only(gateway[gateway >= 0])
        self.domains = _read_only(
            np.array(
                [1 if g >= 0 else n_dev for g in gateway]
                + [len(e.labels) for e in self.exit_genes]
                + [len(g.shares) for g in self.share_genes],
                dtype=np.int64,
            )
        )
        self.free = _read_only(np.flatnonzero(self.domains > 1))  # genes a move can change
        self.movable = _read_only(self.domains[: self.n_placement] > 1)
        self.ram = _read_only(
            np.array([math.inf if d.ram is None else d.ram for d in problem.devices])
        )
        self.weights = _read_only(np.array([fr.memory for fr in hosted], dtype=float))
        self.job_memory = _read_only(np.array([fr.job_memory for fr in hosted], dtype=float))
        # where no threshold gene sets them: no exit, and the fragment's own accuracy
        self.accuracy = _nan([fr.accuracy for fr in hosted])
        self.size = float(np.prod(self.domains.astype(float)))
        self._check_deployable()

    def _check_deployable(self) -> None:
        """Some placement must fit the devices' RAM, and its scenario must be valid (fragments'
        distributions, scv, memory against RAM), with the problem's name in the message."""
        example = self.random_candidate(np.random.default_rng(0))
        if example is None:
            raise ScenarioError(
                "devices",
                [d.ram for d in self.problem.devices],
                "no placement found that fits the devices' RAM: the fragments' weights together, "
                "plus room for one job on each device used, need more",
            )
        try:
            self.scenario(example)
        except ScenarioError as exc:
            raise ScenarioError(
                "services", self.problem.name or "problem", f"its deployments are invalid: {exc}"
            ) from None

    # ---- memory and feasibility ------------------------------------------------------------------
    def device_of(self, candidate: np.ndarray) -> np.ndarray:
        """The device index of every fragment (gene order)."""
        out = candidate[: self.n_placement].copy()
        out[self.fixed] = self.fixed_device
        return out

    def active(self, genes: np.ndarray) -> np.ndarray:
        """Per candidate (rows of `genes`) and placement gene: its alternative has a share > 0
        (a fragment of an alternative with share 0 is not deployed)."""
        out = np.ones((len(genes), self.n_placement), dtype=bool)
        for i, g in enumerate(self.share_genes):
            rows = genes[:, self.n_decisions + i]
            cols = np.flatnonzero(self.share_gene_of == i)
            out[:, cols] = g.shares[rows][:, self.alternative[cols]] > 0
        return out

    def memory_use(self, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per device: the weights it holds, and the largest job memory of what it hosts (only
        deployed alternatives count; a fragment held for several of them, once)."""
        dev = self.device_of(candidate)
        if self.mixed:
            weights, job, _ = held(self, dev[None, :], self.active(candidate[None, :]))
            return weights[0], job[0]
        weights = np.bincount(dev, weights=self.weights, minlength=len(self.ram))
        job = np.zeros(len(self.ram))
        np.maximum.at(job, dev, self.job_memory)
        return weights, job

    def overfull(self, candidate: np.ndarray) -> np.ndarray:
        """Per device: its fragments' weights exceed its RAM, or leave no room for one job."""
        weights, job = self.memory_use(candidate)
        return (weights > self.ram) | ((job > 0) & (self.ram - weights < job))

    def feasible(self, candidate: np.ndarray) -> bool:
        return not self.overfull(candidate).any()

    # ---- drawing, moving and repairing candidates ------------------------------------------------
    def random_candidate(self, rng: np.random.Generator, tries: int = 20) -> np.ndarray | None:
        """A random feasible candidate: a uniform draw, repaired if it does not fit; None if no
        repair finds room (then the greedy repair, most free RAM first, has the last word)."""
        for _ in range(tries):
            c = rng.integers(0, self.domains)
            if self.feasible(c):
                return c
            c = self.repair(c, rng)
            if c is not None:
                return c
        return self.repair(rng.integers(0, self.domains), None)

    def repair(self, candidate: np.ndarray, rng: np.random.Generator | None) -> np.ndarray | None:
        """`candidate` made feasible by moving fragments off over-full devices, each to the device
        with the most free RAM (or, half the time with `rng`, a random one); None if stuck."""
        c = candidate.copy()
        for _ in range(3 * self.n_placement + 1):
            bad = self.overfull(c)
            if not bad.any():
                return c
            deployed = self.active(c[None, :])[0]
            movable = np.flatnonzero(self.movable & deployed & bad[self.device_of(c)])
            if not len(movable):  # only fixed gateway fragments overfill a device
                return None
            g = movable[0] if rng is None else movable[int(rng.integers(len(movable)))]
            if rng is None or rng.random() < 0.5:
                c[g] = int(np.argmax(self.ram - self.memory_use(c)[0]))
            else:
                c[g] = int(rng.integers(self.domains[g]))
        return c if self.feasible(c) else None

    def neighbour(self, candidate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One gene changed (a fragment moved, or an exit's threshold changed), kept feasible."""
        if not len(self.free):
            return candidate.copy()
        for _ in range(20):
            c = candidate.copy()
            g = int(rng.choice(self.free))
            c[g] = (c[g] + rng.integers(1, self.domains[g])) % self.domains[g]
            if self.feasible(c):
                return c
            c = self.repair(c, rng)
            if c is not None:
                return c
        return candidate.copy()

    def enumerate_feasible(self, limit: int = EXHAUSTIVE_LIMIT) -> Iterator[np.ndarray]:
        """Every feasible candidate (for exhaustive search); refuses a space larger than `limit`."""
        if self.size > limit:
            raise ValueError(
                f"strategy=exhaustive: {self.size:.3g} candidates, over the limit of "
                f"{limit:,}; use another strategy or a smaller problem"
            )
        for genes in itertools.product(*(range(int(n)) for n in self.domains)):
            c = np.array(genes, dtype=np.int64)
            if self.feasible(c):
                yield c

    @cached_property
    def n_feasible(self) -> int | None:
        """How many candidates are feasible, where the space is small enough to count them
        (at most `COUNT_LIMIT` candidates); else None."""
        if self.size > COUNT_LIMIT:
            return None
        return sum(1 for _ in self.enumerate_feasible())

    # ---- from a candidate to a scenario ----------------------------------------------------------
    def exits_of(self, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per fragment (placement gene order): the exit probability and accuracy (NaN: none)
        that the candidate's threshold genes set."""
        exit_prob = np.zeros(self.n_placement)
        accuracy = self.accuracy.copy()
        for gene, row in zip(self.exit_genes, candidate[self.n_placement : self.n_decisions]):
            exit_prob[list(gene.genes)] = gene.exit_prob[row]
            accuracy[list(gene.genes)] = gene.accuracy[row]
        return exit_prob, accuracy

    def scenario(self, candidate: np.ndarray) -> Scenario:
        """The scenario a (feasible) candidate deploys."""
        problem = self.problem
        dev = self.device_of(candidate)
        weights, job = self.memory_use(candidate)
        devices = [
            Device(
                d.name,
                capacity=d.capacity,
                speed=d.speed,
                memory=float(d.ram - weights[i]) if (d.ram is not None and job[i] > 0) else None,
                discipline=d.discipline,
            )
            for i, d in enumerate(problem.devices)
        ]
        exit_prob, accuracy = self.exits_of(candidate)
        chains, g = [], 0
        for s, sv in enumerate(problem.services):
            shares = self.shares_of(candidate, s)
            routed = int(np.count_nonzero(shares)) > 1  # one chain per deployed alternative
            for a, share in enumerate(shares):
                stages = []
                for fr in sv.fragments:
                    stages.append(
                        Stage(
                            problem.devices[dev[g]].name,
                            fr.work,
                            distribution=fr.distribution,
                            scv=fr.scv,
                            job_memory=fr.job_memory,
                            exit_prob=float(exit_prob[g]),
                            exit_accuracy=None if np.isnan(accuracy[g]) else float(accuracy[g]),
                            fragment=fr.name,
                        )
                    )
                    g += 1
                if not share:
                    continue
                if routed:  # as a scenario file's `routes` of the service are read
                    rate = float(share) * sv.arrival_rate
                    chains.append(ServiceChain(f"{sv.name}/r{a}", rate, stages, sv.name))
                else:
                    chains.append(ServiceChain(sv.name, sv.arrival_rate, stages))
        return Scenario(devices, chains, name=problem.name)

    def shares_of(self, candidate: np.ndarray, s: int) -> np.ndarray:
        """The share of each alternative of service `s` under `candidate` ([1.0]: no mix)."""
        for i, g in enumerate(self.share_genes):
            if g.service == s:
                return g.shares[int(candidate[self.n_decisions + i])]
        return np.ones(1)

    def describe(self, candidate: np.ndarray) -> dict[str, Any]:
        """The decisions of a candidate, by name: placement, the threshold of every exit table
        (by service/fragment), and the threshold vector of every service with exit vectors;
        a service with alternatives under `alternatives` instead: per deployed alternative, its
        index, share, placement, thresholds and vector."""
        services, devices = self.problem.services, self.problem.devices
        mixed = {g.service for g in self.share_genes}
        alternatives: dict[str, list[dict[str, Any]]] = {}
        for s in mixed:
            alternatives[services[s].name] = [
                {"alternative": a, "share": float(p), "placement": {}, "thresholds": {}}
                for a, p in enumerate(self.shares_of(candidate, s))
            ]
        placement = {}
        for d, (s, f), a in zip(self.device_of(candidate), self.fragments, self.alternative):
            sv = services[s]
            where = alternatives[sv.name][a]["placement"] if s in mixed else placement
            where[f"{sv.name}/{sv.fragments[f].name}"] = devices[d].name
        thresholds, vectors = {}, {}
        for gene, row in zip(self.exit_genes, candidate[self.n_placement : self.n_decisions]):
            sv = services[gene.service]
            alt = alternatives[sv.name][gene.alternative] if gene.service in mixed else None
            if gene.fragment is None:
                if alt is None:
                    vectors[sv.name] = list(gene.labels[int(row)])
                else:
                    alt["vector"] = list(gene.labels[int(row)])
            else:
                key = f"{sv.name}/{sv.fragments[gene.fragment].name}"
                (thresholds if alt is None else alt["thresholds"])[key] = gene.labels[int(row)]
        out = {"placement": placement, "thresholds": thresholds, "vectors": vectors}
        if alternatives:  # the deployed ones
            out["alternatives"] = {
                name: [alt for alt in alts if alt["share"] > 0]
                for name, alts in alternatives.items()
            }
        return out
