"""ChainNet (Niu, Roveri, Casale, DSN 2024) and its graph baselines, on the graphs of
`chainnet.learn.features`.

Each of T rounds:
1. a GRU runs along every chain over its hops; its input at a hop is the fragment's state with its
   device's state, its initial state the chain's; it gives a state per hop and, at the end, per
   chain (the graph baselines, `chain_gru=False`, take the mean of the fragments' states instead);
2. each fragment updates its state (GRUCell) from its hop state and its device's state;
3. each device aggregates its fragments' states, by GIN (`device_agg="gin"`: an MLP of the sum) or
   by attention (`"gat"`: GATv2 from fragments to devices), and updates (GRUCell).
Readouts give each fragment's pass probability, in (0, 1), and each chain's throughput ratio and
response ratio as corrections to the queueing prior of `chainnet.learn.prior.load_features`.
With `routing`, each fragment also reads how its jobs come from its previous device
(`chainnet.learn.routing`: bursts released behind other chains' jobs, chains that travel together).

FCR fixed point: the load features depend on the pass probabilities upstream. The model starts from
nominal loads (every stage passes everything), predicts pass probabilities, recomputes the loads
from them and runs again, until a scenario's largest change is under `tol` (each scenario of a
batch stops on its own) or `max_iter` runs were made; it reports the runs each scenario used.
Gradients flow through the last run only (earlier runs are detached), which is the usual way to
train through a fixed point without unrolling it. Training may instead give the simulated pass
probabilities (`QoSModule(simulated_loads=True)`): one run at those loads, no fixed point.
Everything is batched: no Python loop over graphs or chains (the chain GRU loops over hop
positions, all chains at once).
"""

from __future__ import annotations

import numbers

import torch
from torch import nn
from torch.nn import functional as F
from torch_geometric.nn import GATv2Conv
from torch_geometric.utils import scatter

from chainnet.learn.features import (
    CHAIN_LOAD,
    CHAIN_STATIC,
    DEVICE_LOAD,
    DEVICE_STATIC,
    FRAGMENT_LOAD,
    FRAGMENT_ROUTING,
    FRAGMENT_STATIC,
    Normalizer,
)
from chainnet.learn.prior import (
    chain_outputs,
    fragment_layout,
    load_features,
    pass_outputs,
)

DEVICE_AGGREGATIONS = ("gin", "gat")


def at_least_one(**settings) -> None:
    """Refuse a size or count below 1, naming its setting (`model.net.<name>`)."""
    for name, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"model.net.{name}: got {value!r}; must be an integer >= 1")


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, out))


def graph_count(data) -> int:
    """The scenarios in `data`: 1 for one scenario's graph (no `batch` vectors)."""
    owner = getattr(data["fragment"], "batch", None)
    if owner is None:
        return 1
    count = getattr(data, "num_graphs", None)  # a PyG batch knows; `graph_batch`'s graph does not
    return int(count) if count is not None else (int(owner.max()) + 1 if len(owner) else 0)


class ChainNet(nn.Module):
    def __init__(
        self,
        hidden: int = 64,
        rounds: int = 3,
        device_agg: str = "gin",
        chain_gru: bool = True,
        max_iter: int = 3,
        tol: float = 1e-3,
        routing: bool = False,
    ):
        super().__init__()
        if device_agg not in DEVICE_AGGREGATIONS:
            raise ValueError(
                f"model.net.device_agg: got {device_agg!r}; one of {DEVICE_AGGREGATIONS}"
            )
        at_least_one(hidden=hidden, rounds=rounds, max_iter=max_iter)
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
            raise ValueError(f"model.net.tol: got {tol!r}; must be a number >= 0")
        for name, flag in (("chain_gru", chain_gru), ("routing", routing)):
            if not isinstance(flag, bool):
                raise ValueError(f"model.net.{name}: got {flag!r}; true or false")
        self.hidden, self.rounds, self.max_iter, self.tol = hidden, rounds, max_iter, tol
        self.device_agg, self.chain_gru, self.routing = device_agg, chain_gru, routing
        fragment_in = len(FRAGMENT_STATIC) + len(FRAGMENT_LOAD) + routing * len(FRAGMENT_ROUTING)
        self.normalizer = Normalizer()
        self.enc = nn.ModuleDict(
            {
                "chain": mlp(len(CHAIN_STATIC) + len(CHAIN_LOAD), hidden, hidden),
                "fragment": mlp(fragment_in, hidden, hidden),
                "device": mlp(len(DEVICE_STATIC) + len(DEVICE_LOAD), hidden, hidden),
            }
        )
        if chain_gru:
            self.path_gru = nn.GRU(2 * hidden, hidden, batch_first=True)
        else:
            self.hop_mlp = mlp(2 * hidden, hidden, hidden)
        self.fragment_cell = nn.GRUCell(2 * hidden, hidden)
        if device_agg == "gin":
            self.eps = nn.Parameter(torch.zeros(1))
            self.device_mlp = mlp(hidden, hidden, hidden)
        else:
            self.device_att = GATv2Conv((hidden, hidden), hidden, add_self_loops=False)
        self.device_cell = nn.GRUCell(hidden, hidden)
        self.chain_head = mlp(hidden, hidden, 2)
        self.pass_head = mlp(2 * hidden, hidden, 1)

    def _along_chains(self, inp, h0, layout):
        """The chain GRU (`path_gru`'s weights) over every chain's hops: (state after each
        fragment, [n_frag, hidden]; state at each chain's end, [n_chain, hidden]).

        Steps over hop positions on the padded [chain, hop] layout, all chains at once; a chain
        past its end keeps its state. The input projections of all hops are one matrix product.
        Equal to `nn.GRU` on packed sequences, without packing, sorting or a host sync.
        """
        chain, hop, idx = layout
        gru = self.path_gru
        gates_in = F.linear(inp, gru.weight_ih_l0, gru.bias_ih_l0)
        gates_in = torch.cat([gates_in, gates_in.new_zeros(1, gates_in.shape[1])])  # row -1: pad
        state, states = h0, []
        for k in range(idx.shape[1]):
            at = idx[:, k]
            x_r, x_z, x_n = gates_in[at].chunk(3, dim=1)
            h_r, h_z, h_n = F.linear(state, gru.weight_hh_l0, gru.bias_hh_l0).chunk(3, dim=1)
            reset = torch.sigmoid(x_r + h_r)
            update = torch.sigmoid(x_z + h_z)
            new = torch.tanh(x_n + reset * h_n)
            stepped = new + update * (state - new)  # (1 - z) n + z h
            state = torch.where((at >= 0).unsqueeze(1), stepped, state)
            states.append(state)
        per_hop = torch.stack(states, dim=1)  # [n_chain, max_len, hidden]
        return per_hop[chain, hop], state

    # ---- one run of T rounds for fixed load features ------------------------------------------
    def _run(self, data, loads, layout):
        chain = layout[0]
        h = {
            node: self.enc[node](
                torch.cat([self.normalizer(node, data[node].x), loads[node]], dim=1)
            )
            for node in ("chain", "fragment", "device")
        }
        dev_of = data["fragment", "placed_on", "device"].edge_index[1]
        hosts = data["fragment", "placed_on", "device"].edge_index
        for _ in range(self.rounds):
            at_device = h["device"][dev_of]
            inp = torch.cat([h["fragment"], at_device], dim=1)
            if self.chain_gru:
                hop_state, h_chain = self._along_chains(inp, h["chain"], layout)
            else:
                hop_state = self.hop_mlp(inp)
                h_chain = scatter(hop_state, chain, 0, dim_size=h["chain"].shape[0], reduce="mean")
            frag = self.fragment_cell(torch.cat([hop_state, at_device], dim=1), h["fragment"])
            if self.device_agg == "gin":
                summed = scatter(frag, dev_of, 0, dim_size=h["device"].shape[0], reduce="sum")
                agg = self.device_mlp((1.0 + self.eps) * h["device"] + summed)
            else:
                agg = self.device_att((frag, h["device"]), hosts)
            h = {"chain": h_chain, "fragment": frag, "device": self.device_cell(agg, h["device"])}
        chain_out = chain_outputs(self.chain_head(h["chain"]), loads)
        pass_prob = pass_outputs(
            self.pass_head(torch.cat([h["fragment"], h["device"][dev_of]], dim=1)).squeeze(1), loads
        )
        return chain_out, pass_prob

    def forward(self, data, pass_prob: torch.Tensor | None = None):
        """Returns (chain outputs [n_chain, 2], fragment pass probabilities, runs per scenario).

        Each scenario of the batch stops iterating when its own largest change is under `tol`, so
        its prediction does not depend on its batch-mates; `runs` [n_graph] counts the runs each
        used (the final one included).
        Given `pass_prob` (per fragment: the simulated pass probabilities, in training), the loads
        are computed from them and the fixed point is skipped: one run, at the loads the model's
        fixed point should reach.
        """
        layout = fragment_layout(data)
        hop = layout[1]
        if pass_prob is None:
            pass_prob, runs = self._fixed_point(data, layout)
        else:
            runs = torch.ones(graph_count(data), dtype=torch.long, device=hop.device)
        # One run with gradients at the fixed point's loads.
        chain_out, pass_out = self._run(data, self._loads(data, pass_prob, layout), layout)
        return chain_out, pass_out, runs

    def _loads(self, data, pass_prob, layout) -> dict[str, torch.Tensor]:
        return load_features(data, pass_prob, layout, self.routing)

    @torch.no_grad()
    def _fixed_point(self, data, layout) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass probabilities iterated without gradients from nominal loads (all 1), each scenario
        until its own largest change is under `tol`, at most `max_iter - 1` runs; (pass
        probabilities, runs per scenario counted with the final one)."""
        hop = layout[1]
        pass_prob = torch.ones_like(data["fragment"].base_load)
        graph = getattr(data["fragment"], "batch", None)
        if graph is None:  # one scenario, not a batch
            graph = torch.zeros_like(hop)
        n_graph = graph_count(data)
        active = torch.ones(n_graph, dtype=torch.bool, device=hop.device)
        runs = torch.ones(n_graph, dtype=torch.long, device=hop.device)
        for _ in range(self.max_iter - 1):
            if not bool(active.any()):
                break
            _, new_pass = self._run(data, self._loads(data, pass_prob, layout), layout)
            change = scatter((new_pass - pass_prob).abs(), graph, 0, dim_size=n_graph, reduce="max")
            pass_prob = torch.where(active[graph], new_pass, pass_prob)
            runs += active
            active = active & (change >= self.tol)
        return pass_prob, runs
