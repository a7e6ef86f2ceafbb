"""`python -m chainnet.simulate`: composes, runs, writes its tables, reports bad input cleanly."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from tests_helpers import run_command

from chainnet.cli.common import CONF
from chainnet.cli.simulate import main, run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/edge_small.yaml"


def test_simulate_example_writes_tables(tmp_path, capsys):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            config_name="simulate",
            overrides=[f"scenario_file={EXAMPLE}", "simulator.precision=0.05", "progress=false"],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    chains = run(cfg)
    assert list(chains["chain"]) == ["detect", "classify/r0", "classify/r1"]
    assert (chains["throughput"] > 0).all()
    saved = pd.read_csv(tmp_path / "chains.csv")
    assert saved["response_time"].tolist() == chains["response_time"].tolist()
    assert len(pd.read_csv(tmp_path / "stages.csv")) == 6
    assert "per-chain QoS" in capsys.readouterr().out


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "chainnet.simulate", *args, "hydra.run.dir=" + str(ROOT / "logs/t")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_bad_input_is_one_clear_line_without_traceback(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices: [{capacity: 2}]\nchains: [{arrival_rate: -1, stages: []}]\n")
    proc = _cli(f"scenario_file={bad}")  # once as a user types it, in a process of its own
    assert proc.returncode == 2, proc.stderr
    assert "chains[0].arrival_rate: got -1" in proc.stderr and "Traceback" not in proc.stderr
    for args, expected in [
        (["scenario_file=missing.yaml"], "no such file"),
        ([], "Missing mandatory value: scenario_file"),
        ([f"scenario_file={EXAMPLE}", "simulator.precision=0"], "simulator.precision"),
        ([f"scenario_file={EXAMPLE}", "simulator.precision=abc"], "expected a number"),
        ([f"scenario_file={EXAMPLE}", "seed=abc"], "seed: got 'abc'"),
        ([f"scenario_file={EXAMPLE}", "+simulator.foo=1"], "simulator.foo: unknown setting"),
    ]:
        args = [*args, f"hydra.run.dir={tmp_path / 'run'}"]
        code, _, err = run_command(main, *args, monkeypatch=monkeypatch, capsys=capsys)
        assert code == 2, (args, err)
        assert expected in err, (args, err)
