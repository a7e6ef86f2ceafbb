"""`python -m chainnet.profile network=digits_cnn out=profiles/digits.yaml`

Trains a built-in multi-exit network (`chainnet.eenn.network`) on scikit-learn's digits, seconds
on a CPU with one torch thread; measures it on the held-out part at every vector of the threshold
grid (`chainnet.eenn.measure`); writes the profile (YAML, format in `chainnet.eenn.profile`) and
the plot of its front beside it (the same name, `.png`). Seeded: the same settings write the same
file, byte for byte. Prints each head's accuracy, each block's cost and the front.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from chainnet.cli.common import command
from chainnet.eenn.measure import profile_network, threshold_grid
from chainnet.eenn.network import DATASET, build, digits, train
from chainnet.eenn.plots import plot_front
from chainnet.eenn.profile import Profile
from chainnet.parsing import ScenarioError, integer


def measure(cfg: DictConfig) -> tuple[Profile, float]:
    """(the profile, the seconds training took), with the settings of `cfg`."""
    seed = integer(cfg.seed, "seed")
    thresholds = OmegaConf.to_container(cfg.thresholds) if cfg.thresholds is not None else None
    net = build(cfg.network, seed)
    threshold_grid(thresholds, len(net.exit_blocks))  # refused before training, not after
    split = digits(seed, cfg.test_fraction)
    start = time.perf_counter()
    losses = train(net, split.x_train, split.y_train, cfg.epochs, cfg.batch_size, cfg.lr, seed)
    took = time.perf_counter() - start
    training = {
        "images": len(split.x_train),
        "test_fraction": cfg.test_fraction,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "loss": losses[-1],
    }
    profile = profile_network(
        net, split.x_test, split.y_test, thresholds, cfg.network, DATASET, seed, training
    )
    return profile, took


def summary(profile: Profile, took: float) -> str:
    heads = [*profile.exits, profile.final]
    lines = [
        f"{profile.model} on {profile.dataset}: trained in {took:.1f} s "
        f"({profile.training['epochs']} epochs), measured on {profile.jobs} held-out jobs",
        "accuracy of each head on every held-out job: "
        + ", ".join(f"{h.name} {h.accuracy:.3f}" for h in heads),
        "per block (with the head after it): "
        + ", ".join(
            f"{s.name} {s.flops:,} FLOPs {s.weight_bytes:,} B" for s in profile.stage_costs()
        ),
    ]
    front = profile.front()
    lines.append(f"front: {len(front)} of {len(profile.vectors)} threshold vectors")
    lines.append(f"  {'thresholds':<24} {'leaving at each exit':<32} {'accuracy':>8} {'FLOPs':>9}")
    for i in front:
        v = profile.vectors[i]
        t = "[" + ", ".join(f"{x:g}" for x in v.thresholds) + "]"
        f = "[" + ", ".join(f"{x:.3f}" for x in v.fractions) + "]"
        lines.append(f"  {t:<24} {f:<32} {v.accuracy:>8.4f} {v.mean_flops:>9,.0f}")
    return "\n".join(lines)


def run(cfg: DictConfig) -> Profile:
    out = Path(cfg.out)
    if out.is_dir() or out.suffix.lower() not in (".yaml", ".yml"):
        raise ScenarioError("out", str(out), "a .yaml file name, such as profiles/digits.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic on every run: a bit-identical profile
    try:
        profile, took = measure(cfg)
    finally:
        torch.set_num_threads(threads)
    profile.save(out)
    plot = plot_front(profile, out.with_suffix(".png")) if cfg.plot else None
    print(summary(profile, took))
    print(f"profile in {out}" + (f", its front in {plot}" if plot else ""))
    return profile


@command("profile")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
