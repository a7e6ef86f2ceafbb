"""chainnet: queueing-network datasets, ChainNet surrogates, and deployment search.

`from chainnet import Surrogate` loads lazily, so `import chainnet` stays light (no torch).
"""

from __future__ import annotations

__all__ = ["Surrogate"]


def __getattr__(name: str):
    if name == "Surrogate":
        from chainnet.surrogate import Surrogate

        return Surrogate
    raise AttributeError(f"module 'chainnet' has no attribute {name!r}")
