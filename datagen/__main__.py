"""`python -m datagen n=... scenario=... out=...`: generate (or resume) a dataset."""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from chainnet.cli.common import CONF, user_errors
from chainnet.configs import settings_from
from datagen.generate import Interrupted, generate


def run(cfg: DictConfig) -> dict:
    from_dataset = cfg.get("from_dataset")
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


@hydra.main(version_base="1.3", config_path=CONF, config_name="datagen")
def main(cfg: DictConfig) -> None:
    with user_errors():
        try:
            run(cfg)
        except Interrupted as exc:
            print(exc, file=sys.stderr)
            sys.exit(130)


if __name__ == "__main__":
    main()
