"""What several test modules share: paths, and random scenarios of every kind."""

import os
from pathlib import Path

import numpy as np
import torch
import yaml

from chainnet.scenario import Device, Region, Scenario, ServiceChain, Stage
from chainnet.sim import SimulatorSettings

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CHAINNET_SHARED", ROOT.parent / "shared"))
# The published ChainNet validation split (third-party data, never copied into the repository).
# Tests marked `published` fail, loudly, when it is missing (conftest.py): never a silent skip.
PUBLISHED = SHARED / "data" / "chainnet_dsn24" / "val"

# Small, coarse dataset generation for tests: the dsn24 preset and quick simulator settings, also
# as command-line overrides for the subprocess tests.
PRESET = yaml.safe_load((ROOT / "conf/scenario/dsn24.yaml").read_text())
FAST = SimulatorSettings(precision=0.1, max_arrivals=15_000, warmup_arrivals=1000)
FAST_ARGS = [
    "simulator.precision=0.1",
    "simulator.max_arrivals=15000",
    "simulator.warmup_arrivals=1000",
    "progress=false",
]


KINDS = ["dsn24", "exp_fcfs", "general_ps", "mixed_memory_regions", "exits"]


def random_scenario(kind: str, seed: int) -> Scenario:
    rng = np.random.default_rng(seed)
    n_dev = int(rng.integers(2, 6))
    ps = kind in ("general_ps", "mixed_memory_regions")
    memory = kind == "mixed_memory_regions"
    devices = [
        Device(
            f"d{i}",
            capacity=int(rng.integers(1, 8)),
            speed=float(rng.uniform(0.5, 2.0)),
            memory=float(rng.uniform(2, 6)) if memory and rng.random() < 0.6 else None,
            discipline="ps" if ps and rng.random() < 0.5 else "fcfs",
        )
        for i in range(n_dev)
    ]
    chains = []
    for c in range(int(rng.integers(1, 4))):
        length = int(rng.integers(1, 5))
        stages = []
        for k in range(length):
            dist = {"dsn24": "det", "exp_fcfs": "exp"}.get(kind) or str(
                rng.choice(["det", "exp", "general"])
            )
            stages.append(
                Stage(
                    f"d{int(rng.integers(n_dev))}",  # a device may repeat within a chain
                    float(rng.uniform(0.1, 1.5)),
                    dist,
                    scv=float(rng.uniform(0.2, 4.0)) if dist == "general" else None,
                    job_memory=float(rng.uniform(0, 2.5)) if memory else 0.0,
                    exit_prob=(
                        float(rng.choice([0.0, 0.3, 1.0]))
                        if kind in ("exits", "mixed_memory_regions") and k < length - 1
                        else 0.0
                    ),
                    exit_accuracy=0.8,
                )
            )
        chains.append(ServiceChain(f"c{c}", float(rng.uniform(0.2, 1.5)), stages))
    regions = []
    if memory and n_dev >= 2:
        members = [f"d{i}" for i in rng.choice(n_dev, 2, replace=False)]
        regions.append(Region("r", tuple(members), capacity=int(rng.integers(2, 6)), memory=5.0))
    return Scenario(devices, chains, regions)


def run_command(main, *args, monkeypatch, capsys) -> tuple[int, str, str]:
    """A Hydra command's `main` run in this process as a user runs it, with `args` on its command
    line: (exit code, stdout, stderr). The same code path as the command, without starting a new
    interpreter (and importing torch) for every case."""
    import sys

    monkeypatch.setattr(sys, "argv", [main.__module__, *args])
    capsys.readouterr()
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def without_intervals(src, dst):
    """A copy of the checkpoint `src` at `dst` as made before prediction intervals existed."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    for key in [k for k in ckpt["state_dict"] if k.startswith("intervals.")]:
        del ckpt["state_dict"][key]
    torch.save(ckpt, dst)
    return dst
