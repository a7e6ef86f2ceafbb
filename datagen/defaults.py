"""The defaults of `python -m datagen`, read from its configs, for scripts that call `generate`."""

from __future__ import annotations

from pathlib import Path

import yaml

from chainnet.sim import SimulatorSettings

CONF = Path(__file__).resolve().parents[1] / "conf"


def cli_defaults() -> tuple[SimulatorSettings, str, int]:
    """(simulator settings, engine, shard size) exactly as the command line uses them."""
    simulator = yaml.safe_load((CONF / "simulator/default.yaml").read_text())
    datagen = yaml.safe_load((CONF / "datagen.yaml").read_text())
    simulator.update(datagen.get("simulator") or {})
    engine = simulator.pop("engine", "fast")
    return SimulatorSettings(**simulator), engine, int(datagen["shard_size"])


def preset(name: str) -> dict:
    """A scenario preset of conf/scenario/."""
    path = CONF / "scenario" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"scenario: no preset {name!r} in {path.parent}")
    return yaml.safe_load(path.read_text())
