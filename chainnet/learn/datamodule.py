"""The LightningDataModule: the train, val and test splits of one dataset folder, batched.

In a distributed run (`trainer=ddp`) the splits are processed once per node, by its first process,
before any process reads them (`prepare_data`); Lightning then gives every process its own share
of each training epoch (a DistributedSampler), and the validation and test loaders hand each
process its own graphs, each graph to one process only, so the epoch metrics synced across the
processes are exact per-chain means, as on one process (Lightning's default would repeat graphs to
even the shares out).
"""

from __future__ import annotations

import numbers

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from chainnet.learn.batching import graph_loader
from chainnet.learn.data import SPLITS, QoSDataset, check_fractions


class QoSDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        num_workers: int = 0,
        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    ):
        super().__init__()
        for name, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                raise ValueError(f"data.{name}: got {value!r}; must be an integer >= {least}")
        fractions = check_fractions(fractions, "data.fractions")
        root = str(root)  # plain, for weights_only
        self.save_hyperparameters(logger=False)
        self.sets: dict[str, QoSDataset] = {}

    def prepare_data(self) -> None:
        """Process the splits into the dataset's cache (Lightning calls this on one process per
        node, then waits for it), so processes never write the same cache files at once. What it
        loads is kept: `setup` loads only what is missing, on the other processes all of it."""
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.sets:
                self.sets[split] = QoSDataset(
                    self.hparams.root, split, tuple(self.hparams.fractions)
                )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return graph_loader(
            self.sets[split],
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            sampler=None if shuffle else self._each_graph_once(split),
        )

    def _each_graph_once(self, split: str) -> UnrepeatedDistributedSampler | None:
        """In a distributed run, this process's share of `split`, every graph in one share only
        (None otherwise: every graph, in order). Shares differ by one graph at most; with fewer
        graphs than processes some share would be empty, and a process without a batch would
        stall the others, so Lightning's sampler (which repeats graphs) is left to it."""
        trainer = self.trainer
        if trainer is None or trainer.world_size < 2 or len(self.sets[split]) < trainer.world_size:
            return None
        return UnrepeatedDistributedSampler(
            self.sets[split], num_replicas=trainer.world_size, rank=trainer.global_rank,
            shuffle=False,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
