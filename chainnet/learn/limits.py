"""The most each chain can complete whatever a model predicts (`physical_limits`): what scoring
clips every prediction to, for scenarios (the surrogate) and for candidates built from genes (the
optimizer's batched graphs), so both agree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chainnet.scenario import Scenario
from chainnet.sim.rules import memory_fits, memory_limit


@dataclass
class Limits:
    """Per chain of a list of scenarios (float64, from the scenario objects)."""

    rate: np.ndarray  # arrival rate
    service: np.ndarray  # the sum of its stages' mean service times
    throughput: np.ndarray  # the largest throughput physically possible
    never: np.ndarray  # no job can ever complete: a stage that admits none, reached by all
    admits: np.ndarray  # per fragment: its device and regions can hold one of its jobs


def physical_limits(scenarios: Sequence[Scenario]) -> Limits:
    """The most each chain can complete, whatever the model says.

    A device serves one job at a time at `speed` work units per time unit, so it completes at
    most mu_k = speed / work jobs of stage k per time unit, whatever else it serves; a stage
    whose job needs more memory than its device, or a region of it, holds (the simulator's own
    rule, slack included) admits none: mu_k = 0. Let S_k be the rate of jobs served at stage k, e_j
    the exit probabilities and r_k = prod_{j<k} (1 - e_j) the probability of reaching stage k
    when nothing is dropped. Served jobs move on with probability 1 - e_k at most (fewer when
    dropped), so S_j <= S_0 prod_{i<j} (1 - e_i). A completed job either left by an exit before
    stage k (sum_{j<k} e_j S_j <= (1 - r_k) S_0) or was served at stage k (at most S_k <= mu_k).
    With S_0 <= min(rate, mu_0), the throughput X obeys, for every stage k,
    X <= (1 - r_k) min(rate, mu_0) + mu_k, and X <= rate. The bound is the least of these; at
    k = 0 it is min(rate, mu_0). Sharing a device with other stages only lowers what it serves,
    so the bound holds for every placement.
    """
    rate, service, bound, never, admits = [], [], [], [], []
    for sc in scenarios:
        room = [memory_limit(d.memory) for d in sc.devices]
        for region in sc.regions:
            for name in region.devices:
                i = sc.device_id(name)
                room[i] = min(room[i], memory_limit(region.memory))
        for ch in sc.chains:
            lam, reach, total, lost = ch.arrival_rate, 1.0, 0.0, False
            first = most = lam
            for k, st in enumerate(ch.stages):
                d = sc.device_id(st.device)
                speed = sc.devices[d].speed
                fits = memory_fits(0.0, st.job_memory, room[d])
                mu = speed / st.work if fits else 0.0
                if k == 0:
                    first = min(lam, mu)
                most = min(most, (1.0 - reach) * first + mu)
                lost = lost or (not fits and reach == 1.0)
                admits.append(fits)
                total += st.work / speed
                reach *= 1.0 - st.exit_prob
            rate.append(lam)
            service.append(total)
            bound.append(most)
            never.append(lost)
    return Limits(
        np.array(rate, dtype=np.float64),
        np.array(service, dtype=np.float64),
        np.array(bound, dtype=np.float64),
        np.array(never, dtype=bool),
        np.array(admits, dtype=bool),
    )
