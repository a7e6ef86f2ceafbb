"""Where the Hydra configs live, and how a config group becomes a library object.

Library code and scripts read the same defaults as the commands through this module, so no library
module needs a command module.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from chainnet.sim import SimulatorSettings

# The Hydra configs of every command (one folder per config group).
CONF = str(Path(__file__).resolve().parent.parent / "conf")


def settings_from(cfg: DictConfig) -> tuple[SimulatorSettings, str]:
    """The `simulator` config group: run settings, and which engine (not a setting of the run)."""
    values = OmegaConf.to_container(cfg, resolve=True)
    engine = values.pop("engine", "fast")
    known = {f.name for f in fields(SimulatorSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"simulator.{unknown[0]}: unknown setting; known: {sorted(known)}, engine")
    return SimulatorSettings(**values), engine
