"""experiments/prior_stages.py: the prior alone at the simulated loads, by chain and by stage."""

import importlib
import sys
from pathlib import Path

import numpy as np

from chainnet.learn.data import QoSDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))  # as `python experiments/<script>.py` runs
prior_stages = importlib.import_module("prior_stages")


def test_the_prior_is_measured_on_every_chain_and_every_shared_stage(tiny):
    by_chain, by_stage = prior_stages.measure(str(tiny), "train", graphs=1000)
    ds = QoSDataset(tiny, split="train")
    graphs = [ds[i] for i in range(len(ds))]
    assert by_chain["chains"].sum() == sum(len(g["chain"].y) for g in graphs)
    assert by_stage["stages"].sum() <= sum(len(g["fragment"].y_pass) for g in graphs)
    assert set(by_chain.index) <= {"<0.5", "0.5-0.9", "0.9-1.2", ">1.2"}
    values = np.concatenate([by_chain.to_numpy(float).ravel(), by_stage.to_numpy(float).ravel()])
    assert np.all(values[~np.isnan(values)] >= 0)
