"""A scenario as flat arrays: what the engines read about devices, regions, stages and chains.

Built once per run by `build_layout`, applying the build-time rules of `chainnet.sim.rules` (memory
limits with their slack, region job limits, the limited-stage flag, exit kinds). The SimPy engine
builds its objects from it and the fast kernel reads it as it is (a NamedTuple of arrays is a numba
type), so the two engines see one description of the scenario.

Stages are numbered in chain order: chain 0's stages, then chain 1's, and so on.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from chainnet.scenario import Scenario
from chainnet.sim.rules import draws_requirement, exit_kind, is_limited, job_limit, memory_limit


class Layout(NamedTuple):
    # ---- per device
    dev_speed: np.ndarray  # float64: work units per time unit
    dev_cap: np.ndarray  # int64: jobs it can hold (in service and waiting)
    dev_memlim: np.ndarray  # float64: memory limit, slack included (inf: none)
    dev_ps: np.ndarray  # bool: processor sharing (else FCFS)
    reg_ptr: np.ndarray  # int64, n_devices + 1: device d is in regions reg_idx[ptr[d]:ptr[d+1]]
    reg_idx: np.ndarray  # int64: region indices, ascending per device
    # ---- per region
    reg_cap: np.ndarray  # float64: job limit (inf: none)
    reg_memlim: np.ndarray  # float64: memory limit, slack included (inf: none)
    # ---- per stage
    st_chain: np.ndarray  # int64: its chain
    st_k: np.ndarray  # int64: its position in the chain
    st_dev: np.ndarray  # int64: its device
    st_work: np.ndarray  # float64: mean (and, deterministic, exact) service requirement
    st_mem: np.ndarray  # float64: memory a job holds while at the stage
    st_exit_kind: np.ndarray  # int64: rules.EXIT_NEVER, EXIT_ALWAYS or EXIT_DRAW
    st_exit_p: np.ndarray  # float64: exit probability
    st_acc: np.ndarray  # float64: accuracy of a job that leaves here (0 when not given)
    st_next: np.ndarray  # int64: the chain's next stage, -1 for the last
    st_limited: np.ndarray  # bool: admission needs the memory and region bookkeeping
    st_random: np.ndarray  # bool: the requirement is drawn from the stage's stream
    # ---- per chain
    ch_first: np.ndarray  # int64: its first stage
    ch_stages: np.ndarray  # int64: its number of stages


def _regions_of(scenario: Scenario) -> list[list[int]]:
    """The regions of each device, in region order."""
    out: list[list[int]] = [[] for _ in scenario.devices]
    for r, reg in enumerate(scenario.regions):
        for name in reg.devices:
            out[scenario.device_id(name)].append(r)
    return out


def build_layout(scenario: Scenario) -> Layout:
    devs, chains, regions = scenario.devices, scenario.chains, scenario.regions
    regions_of = _regions_of(scenario)
    dev_memlim = [memory_limit(d.memory) for d in devs]
    flat = [(c, k, st) for c, ch in enumerate(chains) for k, st in enumerate(ch.stages)]
    n_stages = [len(ch.stages) for ch in chains]
    first = np.cumsum([0] + n_stages[:-1]).astype(np.int64)
    dev_of = [scenario.device_id(st.device) for _, _, st in flat]

    def ints(values) -> np.ndarray:
        return np.array(values, dtype=np.int64)

    def floats(values) -> np.ndarray:
        return np.array(values, dtype=np.float64)

    return Layout(
        dev_speed=floats([d.speed for d in devs]),
        dev_cap=ints([d.capacity for d in devs]),
        dev_memlim=floats(dev_memlim),
        dev_ps=np.array([d.discipline == "ps" for d in devs], dtype=np.bool_),
        reg_ptr=ints(np.cumsum([0] + [len(x) for x in regions_of])),
        reg_idx=ints([r for x in regions_of for r in x]),
        reg_cap=floats([job_limit(r.capacity) for r in regions]),
        reg_memlim=floats([memory_limit(r.memory) for r in regions]),
        st_chain=ints([c for c, _, _ in flat]),
        st_k=ints([k for _, k, _ in flat]),
        st_dev=ints(dev_of),
        st_work=floats([st.work for _, _, st in flat]),
        st_mem=floats([st.job_memory for _, _, st in flat]),
        st_exit_kind=ints([exit_kind(st.exit_prob) for _, _, st in flat]),
        st_exit_p=floats([st.exit_prob for _, _, st in flat]),
        st_acc=floats([st.exit_accuracy or 0.0 for _, _, st in flat]),
        st_next=ints([first[c] + k + 1 if k + 1 < n_stages[c] else -1 for c, k, _ in flat]),
        st_limited=np.array(
            [
                is_limited(bool(regions_of[d]), st.job_memory, dev_memlim[d])
                for d, (_, _, st) in zip(dev_of, flat)
            ],
            dtype=np.bool_,
        ),
        st_random=np.array([draws_requirement(st) for _, _, st in flat], dtype=np.bool_),
        ch_first=first,
        ch_stages=ints(n_stages),
    )
