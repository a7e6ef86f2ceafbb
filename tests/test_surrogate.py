"""Scoring with a checkpoint: Surrogate.load / predict, safe loading, and the score CLI."""

import dataclasses
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from tests_helpers import KINDS, ROOT, random_scenario, run_command

from chainnet import Surrogate
from chainnet.cli.score import main as score_main
from chainnet.learn.data import QoSDataset
from chainnet.learn.evaluation import predict_graphs, within_limits
from chainnet.learn.surrogate import CheckpointError
from chainnet.scenario import Device, Scenario, ServiceChain, Stage


def exits_scenario(rate: float = 0.3, speed: float = 1.0) -> Scenario:
    return Scenario(
        [Device("a", capacity=6, speed=speed), Device("b", capacity=4, speed=2 * speed)],
        [
            ServiceChain(
                "x",
                rate,
                [
                    Stage("a", 1.0, exit_prob=0.4, exit_accuracy=0.7),
                    Stage("b", 1.0, exit_accuracy=0.9),
                ],
            ),
            ServiceChain("y", rate / 2, [Stage("b", 0.5), Stage("a", 0.5)]),
        ],
        name="two",
    )


def test_predict_matches_the_evaluation_path(tiny, tiny_checkpoint):
    """The same numbers as eval.py's, scenario by scenario, whatever the batch size."""
    s = Surrogate.load(tiny_checkpoint)
    ds = QoSDataset(tiny, "train")
    from chainnet.dataset.store import read_table

    table = read_table(tiny, "samples")
    ref = within_limits(predict_graphs(s.net, ds), table)  # as eval.py keeps them possible
    samples = table.set_index("sample")
    ids = sorted(set(ref["sample"]))
    scenarios = [Scenario.from_json(samples.loc[i, "scenario"]) for i in ids]
    for batch_size in (1, 7, 1024):
        df = s.predict(scenarios, batch_size=batch_size)
        assert len(df) == len(ref)
        got = df.assign(sample=[ids[i] for i in df["scenario"]])
        merged = got.merge(ref, left_on=["sample", "chain"], right_on=["sample", "chain"])
        assert np.allclose(merged["throughput_ratio"], merged["pred_throughput_ratio"], atol=1e-6)
        assert np.allclose(merged["response_ratio"], merged["pred_response_ratio"], atol=1e-6)


def test_predictions_are_in_the_input_time_units(tiny_checkpoint):
    """Twice the speeds and twice the rates: the same ratios, 2x throughput, half the time."""
    s = Surrogate.load(tiny_checkpoint)
    slow, fast = exits_scenario(0.3, 1.0), exits_scenario(0.6, 2.0)
    a, b = s.predict([slow, fast]).groupby("scenario")
    a, b = a[1].reset_index(drop=True), b[1].reset_index(drop=True)
    assert np.allclose(a["throughput_ratio"], b["throughput_ratio"], rtol=1e-5)
    assert np.allclose(2 * a["throughput"], b["throughput"], rtol=1e-5)
    assert np.allclose(a["response_time"], 2 * b["response_time"], rtol=1e-5)
    assert list(a["chain_name"]) == ["x", "y"] and (a["name"] == "two").all()


def test_accuracy_where_the_chain_defines_it(tiny_checkpoint):
    df = Surrogate.load(tiny_checkpoint).predict(exits_scenario())
    x, y = df.iloc[0], df.iloc[1]
    assert np.isnan(y["accuracy"])  # chain y gives no accuracies
    # between the exit's and the last stage's, weighted by where jobs leave
    assert 0.7 < x["accuracy"] < 0.9
    assert 0 <= x["loss_ratio"] <= 1 and x["throughput"] > 0 and x["response_time"] > 0


def test_every_kind_of_scenario_scores(tiny_checkpoint):
    scenarios = [random_scenario(kind, seed) for kind in KINDS for seed in range(4)]
    df = Surrogate.load(tiny_checkpoint).predict(scenarios)
    assert len(df) == sum(len(sc.chains) for sc in scenarios)
    cols = ["throughput", "loss_ratio", "response_time", "throughput_ratio", "response_ratio"]
    assert np.isfinite(df[cols].to_numpy()).all()


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a chainnet checkpoint"):
        Surrogate.load(junk)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Surrogate.load(tmp_path / "missing.ckpt")


class _Payload:
    def __reduce__(self):
        return (open, (str(_Payload.target), "w"))


def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    _Payload.target = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {}, "state_dict": {}, "x": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="not one safe to load"):
        Surrogate.load(evil)
    assert not _Payload.target.exists()
    # the payload is real: plain unpickling of it runs its code
    pickle.loads(pickle.dumps(_Payload()))
    assert _Payload.target.exists()


def _rewrite(src, dst, fn):
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    fn(ckpt)
    torch.save(ckpt, dst)
    return dst


def test_incompatible_checkpoints_are_named(tiny_checkpoint, tmp_path):
    old = _rewrite(
        tiny_checkpoint, tmp_path / "old.ckpt",
        lambda c: c["hyper_parameters"].__setitem__("feature_version", 1),
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="feature version 1"):
        Surrogate.load(old)
    foreign = _rewrite(
        tiny_checkpoint, tmp_path / "foreign.ckpt",
        lambda c: c["hyper_parameters"]["net"].__setitem__("_target_", "os.system"),
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="'os.system' is not one of"):
        Surrogate.load(foreign)
    resized = _rewrite(
        tiny_checkpoint, tmp_path / "resized.ckpt",
        lambda c: c["hyper_parameters"]["net"].__setitem__("hidden", 5),
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="weights do not fit"):
        Surrogate.load(resized)
    bare = tmp_path / "bare.ckpt"
    torch.save({"weights": torch.zeros(2)}, bare)
    with pytest.raises(CheckpointError, match="no hyper_parameters"):
        Surrogate.load(bare)


def test_score_cli_scores_the_valid_and_names_the_invalid(
    tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    good = exits_scenario().to_dict()
    bad = dataclasses.replace(exits_scenario(), name="broken").to_dict()
    bad["chains"][0]["arrival_rate"] = -1.0
    path = tmp_path / "deployments.yaml"
    path.write_text(yaml.safe_dump({"scenarios": [good, bad, good]}))
    out = tmp_path / "pred.csv"
    proc = subprocess.run(  # once as a user types it, in a process of its own
        [sys.executable, "-m", "chainnet.score", f"ckpt_path={tiny_checkpoint}",
         f"scenarios={path}", f"out={out}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "scenarios[1] (broken)" in proc.stderr and "arrival_rate" in proc.stderr
    import pandas as pd

    df = pd.read_csv(out)
    assert len(df) == 4 and sorted(set(df["scenario"])) == [0, 1]
    for args, expected in [
        ([f"ckpt_path={path}", f"out={out}"], "not a chainnet checkpoint"),
        ([f"ckpt_path={tiny_checkpoint}", f"out={tmp_path}"], "is a folder"),
    ]:
        args = [*args, f"scenarios={path}", f"hydra.run.dir={tmp_path / 'run2'}"]
        code, _, err = run_command(score_main, *args, monkeypatch=monkeypatch, capsys=capsys)
        assert code == 2 and expected in err, (args, err)
