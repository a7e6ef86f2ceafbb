"""The plot of an early-exit profile: accuracy against mean FLOPs per job for every threshold
vector, its front (the vectors no other beats on both) and the network without early exits.

Drawn on a `matplotlib.figure.Figure`, never pyplot: a file only, no window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from chainnet.eenn.profile import Profile


def plot_front(profile: Profile, path: str | Path) -> Path:
    flops = np.array([v.mean_flops for v in profile.vectors], dtype=float)
    accuracy = np.array([v.accuracy for v in profile.vectors], dtype=float)
    front = profile.front()
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    ax.scatter(flops, accuracy, s=9, alpha=0.35, label=f"threshold vectors ({len(flops)})")
    ax.plot(flops[front], accuracy[front], marker="o", ms=4, color="tab:red", label="front")
    if 1.0 in profile.thresholds:  # every threshold 1: no job leaves early
        last = profile.find([1.0] * len(profile.exits))
        ax.scatter(
            flops[last], accuracy[last], marker="*", s=140, color="black", label="no early exit"
        )
    ax.set_xlabel("mean FLOPs per job")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{profile.model}: {len(profile.exits)} exits, {profile.jobs} held-out jobs")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
