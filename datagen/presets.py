"""Scenario presets: random scenarios drawn from a preset's ranges (SPEC section 3).

A preset is plain config (`conf/scenario/*.yaml`); `kind` picks the sampler:
- `pool`: the ChainNet DSN'24 generator. Each chain draws its devices without replacement from a
  pool of `device_pool` devices; the devices used become the scenario's devices (so every device is
  used and none appears twice in a chain). Capacities, mean inter-arrival times and deterministic
  service times are uniform. Fitting the published validation set shows this rule: the overlap of
  two chains is hypergeometric with a pool of 10, and one chain uses exactly its length in devices.
  `dsn24` and `dsn24_large` are this sampler with other ranges.
- `edge`: heterogeneous edge devices (speed, RAM, FCFS or PS), fragments with work, memory per job,
  early exits whose accuracy rises along the chain, exponential or general service, and
  memory-limited regions spanning a few devices. `edge` and `edge_large` (20-40 devices, 6-12
  chains of 3-8 fragments, 2-6 regions) are this sampler with other ranges.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from chainnet.scenario import Device, Region, Scenario, ServiceChain, Stage


class PresetError(ValueError):
    """A preset's settings are inconsistent; the message names the key and the rule."""


def _range(cfg: Mapping, key: str, integer: bool = False, low: float = 0.0) -> tuple[float, float]:
    if key not in cfg:
        raise PresetError(f"scenario.{key}: missing; give [min, max]")
    v = cfg[key]
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise PresetError(f"scenario.{key}: got {v!r}; expected [min, max]")
    a, b = v
    for x in (a, b):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x):
            raise PresetError(f"scenario.{key}: got {v!r}; bounds must be finite numbers")
        if integer and int(x) != x:
            raise PresetError(f"scenario.{key}: got {v!r}; bounds must be integers")
    if a > b:
        raise PresetError(f"scenario.{key}: min {a} is above max {b}")
    if a < low:
        raise PresetError(f"scenario.{key}: min {a} is below the smallest allowed value {low}")
    return (int(a), int(b)) if integer else (float(a), float(b))


def _share(cfg: Mapping, key: str) -> float:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
        raise PresetError(f"scenario.{key}: got {v!r}; expected a probability in [0, 1]")
    return float(v)


def _positive_work(x: float) -> float:
    # U(0, 2] service: an exact 0.0 draw (probability ~1e-16) would be an invalid stage.
    return x if x > 0.0 else np.nextafter(0.0, 1.0)


class PoolSampler:
    """The DSN'24 generator: chains draw distinct devices from a pool; used devices are kept."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.pool = cfg.get("device_pool")
        if isinstance(self.pool, bool) or not isinstance(self.pool, int) or self.pool < 1:
            raise PresetError(f"scenario.device_pool: got {self.pool!r}; expected an integer >= 1")
        self.chains = _range(cfg, "chains", integer=True, low=1)
        self.length = _range(cfg, "chain_length", integer=True, low=1)
        self.capacity = _range(cfg, "capacity", integer=True, low=1)
        self.interarrival = _range(cfg, "mean_interarrival", low=0.0)
        self.service = _range(cfg, "service_time", low=0.0)
        if self.interarrival[0] <= 0.0:
            raise PresetError("scenario.mean_interarrival: min must be > 0")
        if self.service[1] <= 0.0:
            raise PresetError("scenario.service_time: max must be > 0")
        if self.length[1] > self.pool:
            raise PresetError(
                f"scenario.chain_length: max {self.length[1]} exceeds device_pool {self.pool}; "
                "a chain never visits a device twice"
            )

    def __call__(self, rng: np.random.Generator, name: str = "") -> Scenario:
        m = int(rng.integers(self.chains[0], self.chains[1] + 1))
        paths = []
        for _ in range(m):
            length = int(rng.integers(self.length[0], self.length[1] + 1))
            paths.append(rng.choice(self.pool, size=length, replace=False))
        used = np.unique(np.concatenate(paths))
        label = {int(d): k for k, d in enumerate(rng.permutation(used))}
        devices = [
            Device(f"d{k}", capacity=int(rng.integers(self.capacity[0], self.capacity[1] + 1)))
            for k in range(len(used))
        ]
        chains = []
        for c, path in enumerate(paths):
            iat = float(rng.uniform(*self.interarrival))
            stages = [
                Stage(f"d{label[int(d)]}", _positive_work(float(rng.uniform(*self.service))))
                for d in path
            ]
            chains.append(ServiceChain(f"c{c}", 1.0 / iat, stages))
        return Scenario(devices, chains, name=name)


class EdgeSampler:
    """Heterogeneous edge AI deployments with memory, early exits and memory-limited regions."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.devices = _range(cfg, "devices", integer=True, low=1)
        self.speed = _range(cfg, "speed", low=1e-9)
        self.capacity = _range(cfg, "capacity", integer=True, low=1)
        self.memory = _range(cfg, "memory", low=1e-9)
        self.ps_share = _share(cfg, "ps_share")
        self.chains = _range(cfg, "chains", integer=True, low=1)
        self.length = _range(cfg, "chain_length", integer=True, low=1)
        self.interarrival = _range(cfg, "mean_interarrival", low=1e-9)
        self.work = _range(cfg, "work", low=1e-9)
        self.job_memory = _range(cfg, "job_memory", low=0.0)
        self.exit_share = _share(cfg, "exit_share")
        self.exit_prob = _range(cfg, "exit_prob", low=0.0)
        self.accuracy = _range(cfg, "accuracy", low=0.0)
        self.exp_share = _share(cfg, "exp_share")
        self.scv = _range(cfg, "service_scv", low=1e-9)
        self.regions = _range(cfg, "regions", integer=True, low=0)
        self.region_memory = _range(cfg, "region_memory_share", low=1e-9)
        if self.exit_prob[1] > 1.0 or self.accuracy[1] > 1.0:
            raise PresetError("scenario.exit_prob and scenario.accuracy must lie in [0, 1]")

    def _log_uniform(self, rng, lo_hi) -> float:
        lo, hi = lo_hi
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    def __call__(self, rng: np.random.Generator, name: str = "") -> Scenario:
        n = int(rng.integers(self.devices[0], self.devices[1] + 1))
        devices = [
            Device(
                f"d{k}",
                capacity=int(rng.integers(self.capacity[0], self.capacity[1] + 1)),
                speed=self._log_uniform(rng, self.speed),
                memory=self._log_uniform(rng, self.memory),
                discipline="ps" if rng.random() < self.ps_share else "fcfs",
            )
            for k in range(n)
        ]
        chains = []
        for c in range(int(rng.integers(self.chains[0], self.chains[1] + 1))):
            # A chain never visits a device twice, so it is at most as long as there are devices.
            length = min(int(rng.integers(self.length[0], self.length[1] + 1)), n)
            path = rng.choice(n, size=length, replace=False)
            # Accuracy rises along the chain: a deeper exit has seen more of the model.
            accuracies = np.sort(rng.uniform(*self.accuracy, size=length))
            stages = []
            for k, d in enumerate(path):
                last = k == length - 1
                exits = not last and rng.random() < self.exit_share
                exp = rng.random() < self.exp_share
                stages.append(
                    Stage(
                        f"d{int(d)}",
                        self._log_uniform(rng, self.work),
                        "exp" if exp else "general",
                        scv=None if exp else self._log_uniform(rng, self.scv),
                        job_memory=float(rng.uniform(*self.job_memory)),
                        exit_prob=float(rng.uniform(*self.exit_prob)) if exits else 0.0,
                        exit_accuracy=float(accuracies[k]),
                    )
                )
            rate = 1.0 / float(rng.uniform(*self.interarrival))
            chains.append(ServiceChain(f"c{c}", rate, stages))
        regions = []
        for r in range(int(rng.integers(self.regions[0], self.regions[1] + 1))):
            if n < 2:
                break
            size = int(rng.integers(2, min(3, n) + 1))
            members = sorted(int(d) for d in rng.choice(n, size=size, replace=False))
            ram = sum(devices[d].memory for d in members)
            regions.append(
                Region(
                    f"r{r}",
                    tuple(f"d{d}" for d in members),
                    memory=ram * float(rng.uniform(*self.region_memory)),
                )
            )
        return Scenario(devices, chains, regions, name=name)


SAMPLERS: dict[str, Callable[[Mapping[str, Any]], Callable[..., Scenario]]] = {
    "pool": PoolSampler,
    "edge": EdgeSampler,
}


def make_sampler(cfg: Mapping[str, Any]) -> Callable[..., Scenario]:
    """Build (and so validate) the sampler of a preset config."""
    kind = cfg.get("kind")
    if kind not in SAMPLERS:
        raise PresetError(f"scenario.kind: got {kind!r}; one of {sorted(SAMPLERS)}")
    return SAMPLERS[kind](cfg)
