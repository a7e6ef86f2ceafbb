"""chainnet: queueing-network datasets, ChainNet surrogates, and deployment search.

The pipeline, one sub-package per stage (dependencies run down this list, never up):
`scenario` (the schema) -> `queueing` (exact formulas, the analytic baseline) -> `sim` (the
simulator) -> `dataset` (the on-disk format) -> `learn` (graphs, models, training, scoring) ->
`eenn` (early-exit networks and their measured profiles) -> `optim` (deployment decisions) ->
`cli` (the commands). Dataset generation is an application
on top of the library, never imported by it.

`from chainnet import Surrogate` loads lazily, so `import chainnet` stays light (no torch).
"""

from __future__ import annotations

__all__ = ["Surrogate"]


def __getattr__(name: str):
    if name == "Surrogate":
        # Lazy on purpose (PEP 562): importing torch for `import chainnet` would slow every
        # command and worker that never scores. Not a cycle: chainnet.learn never imports this.
        from chainnet.learn.surrogate import Surrogate

        return Surrogate
    raise AttributeError(f"module 'chainnet' has no attribute {name!r}")
