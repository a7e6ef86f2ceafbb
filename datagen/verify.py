"""`python -m datagen.verify out=...`: check every shard of a dataset against its manifest."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from chainnet.cli.common import CONF, user_errors
from chainnet.dataset.store import verify


@hydra.main(version_base="1.3", config_path=CONF, config_name="datagen_verify")
def main(cfg: DictConfig) -> None:
    with user_errors():
        problems = verify(cfg.out)
    if problems:
        print(f"{cfg.out}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        sys.exit(1)
    print(f"{cfg.out}: every shard matches the manifest")


if __name__ == "__main__":
    main()
