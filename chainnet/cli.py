"""What every command-line entry point shares: a user mistake ends in one clear line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from chainnet.scenario import ScenarioError
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


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn invalid input (scenario, settings, config, files) into `error: ...` and exit code 2."""
    try:
        yield
    except (ScenarioError, ValueError, OSError, OmegaConfBaseException) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
