"""A multi-exit network (BranchyNet style), the data it learns from, and its training.

- `MultiExitNetwork(blocks, heads)`: any list of torch blocks, with an exit head (a classifier)
  after some of them: `heads` has one entry per block, None where a block has no exit; the last
  block's head is the final classifier. Its forward pass returns every head's logits.
- `NETWORKS`: the built-in ones, for 8x8 digit images, each four blocks with exits after the
  first three: `digits_cnn` (three convolutional blocks of growing cost and a dense one, early
  exits that are cheap and less accurate) and `digits_mlp` (four equal dense blocks).
- `digits(seed, test_fraction)`: scikit-learn's `load_digits` (1,797 images of 8x8 pixels, 10
  classes, shipped inside the package: no download), scaled to [0, 1] and split, stratified, into
  a training part and a held-out part.
- `train(net, x, y, ...)`: Adam on the mean cross-entropy of all heads, mini-batches shuffled by
  a seeded generator: the same seed gives the same network, bit for bit, on the same machine and
  number of threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from chainnet.parsing import ScenarioError, ScenarioTypeError

DATASET = "scikit-learn load_digits (1,797 images of 8x8 pixels, 10 classes)"
CLASSES = 10


class MultiExitNetwork(nn.Module):
    """Blocks run in order; after block b, `heads[b]` (if not None) classifies the job."""

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        heads: Sequence[nn.Module | None],
        names: Sequence[str] | None = None,
    ):
        super().__init__()
        blocks, heads = list(blocks), list(heads)
        if not blocks:
            raise ScenarioError("blocks", blocks, "a multi-exit network needs at least one block")
        shown = [None if h is None else type(h).__name__ for h in heads]
        if len(heads) != len(blocks):
            raise ScenarioError("heads", shown, f"one per block ({len(blocks)}), None for no exit")
        for i, m in enumerate([*blocks, *heads]):
            if m is not None and not isinstance(m, nn.Module):
                where = f"blocks[{i}]" if i < len(blocks) else f"heads[{i - len(blocks)}]"
                raise ScenarioTypeError(where, m, "expected a torch.nn.Module")
        if heads[-1] is None:
            raise ScenarioError("heads", shown, "the last block needs a head: the final classifier")
        if all(h is None for h in heads[:-1]):
            raise ScenarioError(
                "heads", shown, "no exit: give a head after at least one block before the last"
            )
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList([h if h is not None else nn.Identity() for h in heads])
        self.exit_blocks = tuple(b for b, h in enumerate(heads[:-1]) if h is not None)
        self.names = tuple(names) if names is not None else _names(len(blocks))
        if len(self.names) != len(blocks) or len(set(self.names)) != len(blocks):
            raise ScenarioError("names", list(self.names), "one unique name per block")

    def head_blocks(self) -> tuple[int, ...]:
        """The block after which each head sits: the early exits, then the final classifier."""
        return (*self.exit_blocks, len(self.blocks) - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The logits of every head, early exits first, the final classifier last."""
        out, with_head = [], set(self.head_blocks())
        for b, block in enumerate(self.blocks):
            x = block(x)
            if b in with_head:
                out.append(self.heads[b](x))
        return out


def _names(n: int) -> tuple[str, ...]:
    return tuple(f"block{i + 1}" for i in range(n))


def head_names(net: MultiExitNetwork) -> tuple[str, ...]:
    return (*(f"exit{k + 1}" for k in range(len(net.exit_blocks))), "classifier")


def digits_mlp() -> MultiExitNetwork:
    """Four dense blocks on the 64 pixels; a linear exit after each of the first three."""
    widths = (64, 64, 64, 64, 64)
    blocks = [nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(widths, widths[1:])]
    heads: list[nn.Module | None] = [nn.Linear(w, CLASSES) for w in widths[1:]]
    return MultiExitNetwork(blocks, heads)


def digits_cnn() -> MultiExitNetwork:
    """Three convolutional blocks and a dense one on the 8x8 image, each costlier than the last
    but the dense one; exits after the first three: small heads that see the first two blocks'
    features average-pooled to 2x2, and the third block's whole output."""
    blocks = [
        nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        ),
        nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Flatten(), nn.Linear(128, 64), nn.ReLU()),
    ]

    def pooled(channels: int) -> nn.Module:
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, CLASSES)
        )

    heads = [pooled(4), pooled(16), nn.Sequential(nn.Flatten(), nn.Linear(128, CLASSES))]
    return MultiExitNetwork(blocks, [*heads, nn.Linear(64, CLASSES)])


NETWORKS: dict[str, Callable[[], MultiExitNetwork]] = {
    "digits_cnn": digits_cnn,
    "digits_mlp": digits_mlp,
}


def build(name: str, seed: int) -> MultiExitNetwork:
    """A built-in network, its weights drawn from `seed` (the global torch generator untouched)."""
    if name not in NETWORKS:
        raise ScenarioError("network", name, f"one of {', '.join(sorted(NETWORKS))}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NETWORKS[name]()


@dataclass(frozen=True)
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits(seed: int, test_fraction: float) -> Split:
    """The digits, pixels scaled to [0, 1], split (stratified, seeded) into train and held-out."""
    if not (isinstance(test_fraction, float) and 0.0 < test_fraction < 1.0):
        raise ScenarioError("test_fraction", test_fraction, "the held-out share, in (0, 1)")
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x / 16.0, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Split(
        x_train=torch.as_tensor(np.asarray(x_train, np.float32)),
        y_train=torch.as_tensor(y_train, dtype=torch.long),
        x_test=torch.as_tensor(np.asarray(x_test, np.float32)),
        y_test=torch.as_tensor(y_test, dtype=torch.long),
    )


def train(
    net: MultiExitNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> list[float]:
    """Train every head at once (mean cross-entropy over heads); the mean loss of each epoch."""
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ScenarioError(name, v, "must be an integer >= 1")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
        raise ScenarioError("lr", lr, "must be a number > 0")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            logits = net(x[batch])
            loss = torch.stack([nn.functional.cross_entropy(z, y[batch]) for z in logits]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        losses.append(total / len(x))
    net.eval()
    return losses
