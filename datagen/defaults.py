"""The defaults of `python -m datagen`, read from its configs, for scripts that call `generate`."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import OmegaConf

from chainnet.configs import CONF, settings_from
from chainnet.sim import SimulatorSettings


def cli_defaults() -> tuple[SimulatorSettings, str, int]:
    """(simulator settings, engine, shard size) exactly as the command line uses them."""
    simulator = yaml.safe_load((Path(CONF) / "simulator/default.yaml").read_text())
    datagen = yaml.safe_load((Path(CONF) / "datagen.yaml").read_text())
    simulator.update(datagen.get("simulator") or {})
    settings, engine = settings_from(OmegaConf.create(simulator))
    return settings, engine, int(datagen["shard_size"])


def preset(name: str) -> dict:
    """A scenario preset of conf/scenario/."""
    path = Path(CONF) / "scenario" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"scenario: no preset {name!r} in {path.parent}")
    return yaml.safe_load(path.read_text())
