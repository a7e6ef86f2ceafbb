"""Fixtures several test modules share: a tiny generated dataset and a model trained on it."""

import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from tests_helpers import FAST, PRESET, PUBLISHED

from chainnet.cli.common import CONF
from chainnet.cli.train import train
from datagen.generate import generate

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on this 2-CPU machine: one torch thread each, or their threads
    # contend (two torch processes of 2 threads each run several times slower).
    torch.set_num_threads(1)


def pytest_runtest_setup(item):
    if item.get_closest_marker("published") and not (PUBLISHED / "raw").is_dir():
        pytest.fail(
            f"the published ChainNet data is missing at {PUBLISHED}: tests read it from "
            "../shared/data/chainnet_dsn24 beside the repository (or CHAINNET_SHARED=<shared dir>)",
            pytrace=False,
        )


def train_config(data, out, *overrides):
    """A train.py config on `data`, small and fast, writing to `out`."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                f"data.root={data}",
                "data.batch_size=8",
                "model.net.hidden=8",
                "trainer.max_epochs=2",
                "trainer.enable_progress_bar=false",
                "trainer.accelerator=cpu",  # tiny runs stay on the CPU on a GPU machine too
                *overrides,
            ],
            return_hydra_config=False,
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """40 dsn24 samples, simulated coarsely (seconds)."""
    out = tmp_path_factory.mktemp("data") / "tiny"
    generate(n=40, seed=1, out=out, preset=PRESET, settings=FAST, shard_size=20, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny, tmp_path_factory):
    """One small ChainNet-GIN trained 2 epochs on `tiny` and tested, shared by every test that only
    needs a trained model, its checkpoints or its report: (Trained, its output folder)."""
    out = tmp_path_factory.mktemp("tiny_run")
    return train(train_config(tiny, out, "model.net.rounds=1")), out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_run):
    """The best checkpoint of `tiny_run`."""
    return tiny_run[0].best
