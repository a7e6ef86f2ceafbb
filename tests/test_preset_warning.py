"""A checkpoint trained on another scenario preset than the problem's: one warning naming both."""

import torch
import yaml
from tests_helpers import PRESET, ROOT, run_command

from chainnet.cli.optimize import main as optimize_main
from chainnet.learn.surrogate import Surrogate
from chainnet.optim.generators import problem_family
from chainnet.optim.presets import preset_scope, preset_warning
from chainnet.optim.problem import Fragment, HostDevice, Problem, Service

EXAMPLE = ROOT / "examples/problem_small.yaml"  # edge-like: RAM, processor sharing, exits
SIM_ARGS = ["simulator.precision=0.05", "simulator.max_arrivals=20000", "progress=false"]
EDGE = preset_scope(yaml.safe_load((ROOT / "conf/scenario/edge.yaml").read_text()))
DSN24 = preset_scope(PRESET)


def pool_problem(n_fragments: int = 3) -> Problem:
    """A dsn24-like problem: identical FCFS devices, deterministic service, no memory, no exit."""
    devices = tuple(HostDevice(f"d{i}", speed=1.0, capacity=10) for i in range(3))
    fragments = tuple(Fragment(f"f{k}", work=0.5) for k in range(n_fragments - 1))
    fragments += (Fragment(f"f{n_fragments - 1}", work=0.5, accuracy=0.9),)
    return Problem(devices, (Service("s0", 0.5, fragments),), name="pool")


def test_checkpoint_knows_its_preset_and_ranges(tiny_checkpoint, tmp_path):
    surrogate = Surrogate.load(tiny_checkpoint)
    assert surrogate.preset["name"] == "dsn24"  # recorded by training
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["training_preset"]["name"] == "dsn24"
    # a checkpoint from before training recorded it: read from its dataset's manifest
    del ckpt["training_preset"]
    torch.save(ckpt, tmp_path / "unrecorded.ckpt")
    assert Surrogate.load(tmp_path / "unrecorded.ckpt").preset["name"] == "dsn24"
    scope = surrogate.ranges_scope()
    assert scope["kind"] == "pool" and scope["name"] is None
    lo, hi = scope["chain_length"]
    assert 2 <= lo <= hi <= 6  # within the preset's chain lengths
    # a checkpoint that names no dataset (older, or its dataset moved): the ranges only
    ckpt.pop("datamodule_hyper_parameters", None)
    torch.save(ckpt, tmp_path / "old.ckpt")
    old = Surrogate.load(tmp_path / "old.ckpt")
    assert old.preset is None and old.ranges_scope() == scope
    warning = preset_warning(old.ranges_scope(), problem_family("small", 1), "p")
    assert warning.startswith("warning: the checkpoint was trained on scenarios whose recorded")
    assert "look like dsn24" in warning and "problem p looks like edge (edge-like" in warning
    # a checkpoint whose training recorded its preset: that one
    ckpt["training_preset"] = yaml.safe_load((ROOT / "conf/scenario/edge.yaml").read_text())
    torch.save(ckpt, tmp_path / "recorded.ckpt")
    assert Surrogate.load(tmp_path / "recorded.ckpt").preset["name"] == "edge"


def test_warning_names_both_presets():
    assert preset_warning(DSN24, pool_problem(), "pool") is None
    assert preset_warning(EDGE, problem_family("small", 1), "small") is None
    warning = preset_warning(DSN24, problem_family("small", 1), "small_1")
    assert warning.startswith("warning: the checkpoint was trained on preset dsn24 scenarios")
    assert "problem small_1 looks like edge (edge-like" in warning
    large = preset_warning(EDGE, problem_family("large", 1), "large_1")
    assert "trained on preset edge scenarios (edge-like, 3-12 devices" in large
    assert "problem large_1 looks like edge_large" in large
    assert "looks like dsn24 (dsn24-like" in preset_warning(EDGE, pool_problem(), "pool")
    too_long = preset_warning(DSN24, pool_problem(9), "long")
    assert "looks like dsn24_large" in too_long and "1 chains of 9 fragments" in too_long


def test_optimize_warns_once(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    args = [f"ckpt_path={tiny_checkpoint}", f"problem={EXAMPLE}", "scorer=surrogate"]
    args += ["budget_s=null", "budget_evals=10", "top_k=1", *SIM_ARGS]
    code, _, err = run_command(
        optimize_main, *args, f"hydra.run.dir={tmp_path}", monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 0, err
    lines = [line for line in err.splitlines() if "trained on preset" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("warning: the checkpoint was trained on preset dsn24 scenarios")
    assert "problem problem_small looks like edge" in lines[0]
