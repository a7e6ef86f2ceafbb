"""What every command-line entry point shares: a user mistake ends in one clear line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from omegaconf.errors import OmegaConfBaseException

from chainnet.configs import CONF
from chainnet.scenario import ScenarioError

__all__ = ["CONF", "user_errors"]


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
