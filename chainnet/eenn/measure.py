"""Measuring a multi-exit network into a `Profile`: per block, its FLOPs per job (counted by
`torch.utils.flop_counter`: matrix products and convolutions, two per multiply-add), the bytes of
its weights and of its output per job; per head, the top softmax probability and correctness of
every held-out job; and for every vector of the threshold grid, the joint exits: a job leaves at
the first exit whose confidence exceeds its threshold, so later exits see only the jobs that
earlier ones let through."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from chainnet.eenn.checks import check_grid, expected_flops
from chainnet.eenn.network import MultiExitNetwork, head_names
from chainnet.eenn.profile import Block, Head, Profile, ThresholdVector
from chainnet.parsing import ScenarioError, number, sequence

MAX_VECTORS = 100_000  # threshold vectors in one profile: the grid size to the number of exits


@dataclass(frozen=True)
class HeadOutputs:
    """Per head (early exits, then the final classifier) and held-out job: the top softmax
    probability (float64) and whether the predicted class is right."""

    confidence: np.ndarray
    correct: np.ndarray


def head_outputs(net: MultiExitNetwork, x: torch.Tensor, y: torch.Tensor) -> HeadOutputs:
    net.eval()
    with torch.no_grad():
        logits = net(x)
    confidence, correct = [], []
    for z in logits:
        top, predicted = torch.softmax(z.double(), dim=1).max(dim=1)
        confidence.append(top.numpy())
        correct.append((predicted == y).numpy())
    return HeadOutputs(np.stack(confidence), np.stack(correct))


def joint_exits(
    outputs: HeadOutputs, thresholds: Sequence[float]
) -> tuple[list[float], list[float | None], float]:
    """(per exit, then the final classifier: the fraction of all jobs leaving there, their
    accuracy or None where none leaves; the accuracy of all jobs) for one threshold vector."""
    heads, jobs = outputs.confidence.shape
    if len(thresholds) != heads - 1:
        raise ScenarioError("thresholds", list(thresholds), f"one per early exit ({heads - 1})")
    waiting = np.ones(jobs, dtype=bool)
    fractions: list[float] = []
    accuracies: list[float | None] = []
    right = 0
    for k in range(heads):
        leave = (
            waiting & (outputs.confidence[k] > thresholds[k]) if k < heads - 1 else waiting.copy()
        )
        waiting &= ~leave
        count, good = int(leave.sum()), int(outputs.correct[k][leave].sum())
        fractions.append(count / jobs)
        accuracies.append(good / count if count else None)
        right += good
    return fractions, accuracies, right / jobs


def weight_bytes(module: nn.Module) -> int:
    tensors = itertools.chain(module.parameters(), module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def flops_of(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(the FLOPs of `module` on `x`, its output)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = module(x)
    return int(counter.get_total_flops()), out


def block_costs(net: MultiExitNetwork, example: torch.Tensor) -> tuple[list[Block], list[tuple]]:
    """(the blocks' costs for one job, (FLOPs, weight bytes) of each head) on `example[:1]`."""
    blocks, heads = [], []
    x = example[:1]
    for b, block in enumerate(net.blocks):
        flops, out = flops_of(block, x)
        activation = out.numel() * out.element_size()
        blocks.append(Block(net.names[b], flops, weight_bytes(block), activation))
        if b in net.head_blocks():
            heads.append((flops_of(net.heads[b], out)[0], weight_bytes(net.heads[b])))
        x = out
    return blocks, heads


def threshold_grid(thresholds: Any, n_exits: int) -> tuple[float, ...]:
    """The grid as numbers, checked: not empty, in [0, 1], each once, not too many vectors."""
    grid = tuple(
        number(t, f"thresholds[{i}]") for i, t in enumerate(sequence(thresholds, "thresholds"))
    )
    check_grid(grid, "thresholds")
    if len(grid) ** n_exits > MAX_VECTORS:
        raise ScenarioError(
            "thresholds",
            list(grid),
            f"{len(grid)} thresholds for {n_exits} exits make {len(grid) ** n_exits} vectors; "
            f"at most {MAX_VECTORS:,}",
        )
    return grid


def profile_network(
    net: MultiExitNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    thresholds: Sequence[float],
    model: str,
    dataset: str,
    seed: int,
    training: Mapping[str, Any] | None = None,
) -> Profile:
    """The profile of `net` on the held-out jobs (`x`, labels `y`): every vector of the grid
    `thresholds` (the same grid at every exit), in lexicographic order."""
    n_exits = len(net.exit_blocks)
    grid = threshold_grid(thresholds, n_exits)
    if len(x) < 1 or len(x) != len(y):
        raise ScenarioError("held-out jobs", f"{len(x)} inputs, {len(y)} labels", "as many, >= 1")
    outputs = head_outputs(net, x, y)
    blocks, head_costs = block_costs(net, x)
    heads = [
        Head(name, net.names[b], flops, size, int(outputs.correct[k].sum()) / len(x))
        for k, (name, b, (flops, size)) in enumerate(
            zip(head_names(net), net.head_blocks(), head_costs)
        )
    ]
    costs = [block.flops for block in blocks]
    for b, head in zip(net.head_blocks(), heads):
        costs[b] += head.flops
    vectors = []
    for t in itertools.product(grid, repeat=n_exits):
        fractions, accuracies, accuracy = joint_exits(outputs, t)
        mean = expected_flops(costs, net.exit_blocks, fractions)
        vectors.append(ThresholdVector(t, fractions, accuracies, accuracy, mean))
    return Profile(
        model, dataset, seed, len(x), blocks, heads[:-1], heads[-1], grid, vectors, training or {}
    )
