"""`python -m datagen.verify out=...`: check a dataset against its manifest.

Every shard file must be there and match its checksum, no other file in a table folder may be one
that pandas would read as data (a stray `part-*.parquet`, a user's file, an interrupted write),
and every sample up to n must be recorded. The readers of chainnet (training, eval.py,
from_dataset) refuse a dataset that fails these checks.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from chainnet.cli.common import command
from chainnet.dataset.store import verify


@command("datagen_verify")
def main(cfg: DictConfig) -> None:
    problems = verify(cfg.out)
    if problems:
        print(f"{cfg.out}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        sys.exit(1)
    print(f"{cfg.out}: complete; every shard matches the manifest, and no other file in its tables")


if __name__ == "__main__":
    main()
