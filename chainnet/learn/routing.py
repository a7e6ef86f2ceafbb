"""How each stage's jobs come from its previous device: two load features a model with `routing`
reads beside `chainnet.learn.prior.load_features`' (`FRAGMENT_ROUTING`).

An FCFS device releases the jobs of one chain in bursts when they queue behind longer jobs of
other chains, and the jobs of chains that leave one device together arrive together at the next.
A full device takes one job of a burst and drops the rest, so such a stage passes far fewer jobs
than its device's mean: on dsn24, the chains that lose nearly every job are starved so. The
queueing prior, a single-server queue per device with Poisson arrivals, refuses every stage of a
device alike; these features say where that fails:
- `corouted`: the share of its device's arrivals that other stages bring from the same previous
  device (0 for a chain's first stage);
- `burst`: log(1 + the jobs of its chain that reach its previous device during one job of the
  other stages there), the other stages' service weighted as a job in progress is, E[S^2] / E[S]
  with E[S^2] = (1 + scv) S^2 (0 for a first stage, or alone on its previous device).
"""

from __future__ import annotations

import torch
from torch_geometric.utils import scatter

from chainnet.learn.features import FRAGMENT_STATIC


def routing_features(
    data, layout: tuple, reach: torch.Tensor, service: torch.Tensor
) -> torch.Tensor:
    """[n_fragment, 2] float32: `corouted` and `burst` per stage, at the given reach
    probabilities (jobs lost upstream arrive nowhere); `layout` = (chain, hop, padded index),
    `service` each stage's mean service time (float64), as `load_features` has them."""
    frag = data["fragment"]
    chain, hop, idx = layout
    dev_of = data["fragment", "placed_on", "device"].edge_index[1]
    n_dev = data["device"].num_nodes
    arrivals = (frag.rate * reach).double()
    scv = frag.x[:, FRAGMENT_STATIC.index("scv")].double()
    previous = torch.where(hop > 0, idx[chain, (hop - 1).clamp(min=0)], -1)
    first, before = previous < 0, previous.clamp(min=0)
    came_from = torch.where(first, -1, dev_of[before])
    # stages of one device that come from one previous device: a compact id per (device, previous)
    _, route = torch.unique(dev_of * (n_dev + 1) + came_from + 1, return_inverse=True)
    along = _sum(arrivals, route, int(route.max()) + 1 if len(route) else 0)[route] - arrivals
    total = _sum(arrivals, dev_of, n_dev)[dev_of]
    corouted = torch.where(first, 0.0, along / total.clamp(min=1e-300))
    work = arrivals * service
    second = arrivals * (1.0 + scv) * service**2
    others_work = _sum(work, dev_of, n_dev)[dev_of] - work
    others_second = _sum(second, dev_of, n_dev)[dev_of] - second
    in_progress = torch.where(
        others_work > 1e-300, others_second / others_work.clamp(min=1e-300), 0.0
    )
    burst = torch.where(first, 0.0, torch.log1p(arrivals[before] * in_progress[before]))
    return torch.stack([corouted, burst], dim=1).float()


def _sum(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    return scatter(x, index, 0, dim_size=n, reduce="sum")
