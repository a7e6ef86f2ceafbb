"""Fixtures several test modules share: a tiny generated dataset and a model trained on it."""

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from tests_helpers import ROOT

from chainnet.cli import CONF
from chainnet.sim import SimulatorSettings
from datagen.generate import generate


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
    preset = yaml.safe_load((ROOT / "conf/scenario/dsn24.yaml").read_text())
    settings = SimulatorSettings(precision=0.1, max_arrivals=15_000, warmup_arrivals=1000)
    generate(n=40, seed=1, out=out, preset=preset, settings=settings, shard_size=20, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny, tmp_path_factory):
    """The best checkpoint of a small ChainNet-GIN trained 2 epochs on `tiny`."""
    from chainnet.training import train

    out = tmp_path_factory.mktemp("tiny_run")
    _, best = train(train_config(tiny, out, "test=false", "model.net.rounds=1"))
    return best
