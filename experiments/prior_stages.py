"""Where the queueing prior errs: the prior alone at the simulated pass probabilities of a split.

For every chain, the prior's throughput ratio once the loads are those of the simulated pass
probabilities (so only the stations' formulas can be wrong), by load band of the most loaded
device: MAPE (chains whose ratio is at least 0.01) and loss-ratio MAE. For every stage of a device
shared by several stages, by the device's load: how far the prior's pass probability is from the
device's true mean (arrival-weighted) and how far the stage's true pass probability is from it
(the spread between a device's stages, which a prior that refuses them alike cannot follow).
Prints both tables and saves them as CSV (README: Models, dsn24).

    python experiments/prior_stages.py --data data/dsn24 [--split val] [--graphs 5000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from torch_geometric.data import Batch

from chainnet.learn.data import QoSDataset
from chainnet.learn.metrics import load_band
from chainnet.learn.prior import fragment_layout, load_features, nominal_loads, reach_probabilities

STAGE_BANDS = ((0.9, 1.2), (1.2, 2.0), (2.0, float("inf")))


def measure(root: str, split: str = "val", graphs: int = 5000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(chains by load band, shared-device stages by load band) for the first `graphs` graphs."""
    ds = QoSDataset(root, split=split)
    b = Batch.from_data_list([ds[i] for i in range(min(len(ds), graphs))])
    frag, n_chain, n_dev = b["fragment"], b["chain"].num_nodes, b["device"].num_nodes
    chain, hop, idx = fragment_layout(b)
    dev_of = b["fragment", "placed_on", "device"].edge_index[1]
    simulated = torch.nan_to_num(frag.y_pass, nan=1.0)
    with torch.no_grad():
        loads = load_features(b, simulated)
    truth = b["chain"].y[:, 0].double()
    prior = loads["prior"][:, 0].double()
    _, nominal = nominal_loads(b)
    most = torch.zeros(n_chain, dtype=torch.float64).scatter_reduce(
        0, chain, nominal[dev_of], "amax", include_self=False
    )
    ape = ((prior - truth).abs() / truth.clamp(min=1e-12))[truth >= 0.01]
    chains = pd.DataFrame({"band": load_band(most.numpy())})
    chains["ape"] = pd.Series(ape.numpy(), index=(truth >= 0.01).nonzero().flatten().numpy())
    chains["loss_error"] = (prior - truth).abs().numpy()
    by_chain = chains.groupby("band").agg(
        chains=("loss_error", "size"),
        prior_mape=("ape", "mean"),
        prior_loss_mae=("loss_error", "mean"),
    )
    # stages of shared devices, at the simulated loads
    reach = reach_probabilities(simulated, frag.exit_prob, chain, hop, n_chain, idx).double()
    arrivals = frag.rate.double() * reach
    per_device = torch.zeros(n_dev, dtype=torch.float64)
    total = per_device.index_add(0, dev_of, arrivals)
    mean = per_device.index_add(0, dev_of, arrivals * simulated.double()) / total.clamp(min=1e-300)
    load = per_device.index_add(0, dev_of, frag.base_load.double() * reach)
    shared = (torch.bincount(dev_of, minlength=n_dev) > 1)[dev_of] & ~torch.isnan(frag.y_pass)
    stages = pd.DataFrame(
        {
            "load": load[dev_of].numpy(),
            "prior_from_device_mean": (loads["prior_pass"].double() - mean[dev_of]).abs().numpy(),
            "stage_from_device_mean": (simulated.double() - mean[dev_of]).abs().numpy(),
        }
    )[shared.numpy()]
    stages["band"] = pd.cut(stages["load"], [lo for lo, _ in STAGE_BANDS] + [float("inf")])
    by_stage = stages.groupby("band", observed=True).agg(
        stages=("load", "size"),
        prior_from_device_mean=("prior_from_device_mean", "mean"),
        stage_from_device_mean=("stage_from_device_mean", "mean"),
    )
    return by_chain, by_stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="data/dsn24", help="a dataset folder with stage labels")
    ap.add_argument("--split", default="val")
    ap.add_argument("--graphs", type=int, default=5000)
    ap.add_argument("--out", default="experiments/results/prior_stages")
    args = ap.parse_args()
    by_chain, by_stage = measure(args.data, args.split, args.graphs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    by_chain.to_csv(out / "chains.csv")
    by_stage.to_csv(out / "stages.csv")
    print(by_chain.round(4).to_string(), "\n")
    print(by_stage.round(4).to_string())
    print(f"saved {out}/chains.csv and {out}/stages.csv")


if __name__ == "__main__":
    main()
