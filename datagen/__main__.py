"""`python -m datagen n=... scenario=... out=...`: generate (or resume) a dataset."""

from __future__ import annotations

import json
import sys

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from chainnet.cli.common import command
from chainnet.configs import settings_from
from chainnet.dataset.store import DatasetError
from datagen.generate import Interrupted, generate


def check_overrides(overrides: list[str], from_dataset: str | None) -> None:
    """Refuse what would be silently ignored: any scenario setting with from_dataset (its
    scenarios are the source's), and from_dataset without out= (the default, data/<preset>, is the
    preset's dataset). Unknown keys and values of the wrong type: `check_config`."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    if from_dataset and "out" not in keys:
        raise DatasetError(
            "out: give the folder of the re-simulated dataset (with from_dataset, the default "
            "data/<preset> is the preset's own dataset)"
        )
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")  # unknown keys: check_config refuses them
        if from_dataset and (key == "scenario" or key.startswith("scenario.")):
            raise DatasetError(
                f"{key}: not used with from_dataset, whose scenarios are those of "
                f"{from_dataset}; remove it (or leave out from_dataset)"
            )


def run(cfg: DictConfig) -> dict:
    from_dataset = cfg.get("from_dataset")
    if HydraConfig.initialized():
        check_overrides(list(HydraConfig.get().overrides.task), from_dataset)
    settings, engine = settings_from(cfg.simulator)
    summary = generate(
        n=cfg.n,
        seed=cfg.seed,
        out=cfg.out,
        preset=None if from_dataset else OmegaConf.to_container(cfg.scenario, resolve=True),
        settings=settings,
        engine=engine,
        shard_size=cfg.shard_size,
        workers=cfg.workers,
        executor=cfg.executor,
        dask_address=cfg.dask_address,
        from_dataset=from_dataset,
        progress=cfg.progress,
    )
    print(json.dumps(summary, indent=1))
    return summary


@command("datagen")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
