"""The LightningDataModule: the train, val and test splits of one dataset folder, batched."""

from __future__ import annotations

import numbers

import lightning as L
from torch_geometric.loader import DataLoader

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

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.sets:
                self.sets[split] = QoSDataset(
                    self.hparams.root, split, tuple(self.hparams.fractions)
                )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.sets[split],
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
