"""Checkpoints and the surrogate (issue 13): damaged, non-finite or foreign checkpoints are refused
in one line wherever they are read; predictions stay physically possible, finite, and say when
their inputs lie outside the ranges the model was trained on; wrong types and refused settings
are named."""

import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import train_config
from tests_helpers import KINDS, random_scenario, run_command

from chainnet import Surrogate
from chainnet.cli.eval import main as eval_main
from chainnet.cli.score import main as score_main
from chainnet.cli.train import main as train_main
from chainnet.cli.train import train
from chainnet.dataset.store import read_table
from chainnet.learn.data import QoSDataset, split_of
from chainnet.learn.evaluation import predict_graphs, within_limits
from chainnet.learn.features import graph_batch
from chainnet.learn.module import QoSModule
from chainnet.learn.surrogate import (
    CheckpointError,
    RangesUnknownWarning,
    RangeTally,
    physical_limits,
)
from chainnet.scenario import Device, Region, Scenario, ServiceChain, Stage
from chainnet.sim import SimulatorSettings, simulate

# ---- helpers -------------------------------------------------------------------------------------


def flip_a_weight_byte(src: Path, dst: Path) -> Path:
    """A copy of `src` with one bit changed in the middle of its largest tensor (the zip's CRC
    of that member no longer matches; the file still opens)."""
    data = bytearray(Path(src).read_bytes())
    with zipfile.ZipFile(src) as archive:
        info = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    name_len, extra_len = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x01
    dst.write_bytes(bytes(data))
    return dst


def rewrite(src, dst, fn) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    fn(ckpt)
    torch.save(ckpt, dst)
    return dst


def set_first(ckpt, key: str, value: float) -> None:
    ckpt["state_dict"][key].view(-1)[0] = value


def without_ranges(ckpt) -> None:
    for key in [k for k in ckpt["state_dict"] if k.startswith("ranges.")]:
        del ckpt["state_dict"][key]


class _Payload:
    target: Path

    def __reduce__(self):
        return (open, (str(_Payload.target), "w"))


def train_split_scenarios(tiny) -> list[Scenario]:
    samples = read_table(tiny, "samples")
    train_rows = samples[split_of(samples["sample"].to_numpy(), (0.8, 0.1, 0.1)) == 0]
    return [Scenario.from_json(t) for t in train_rows.sort_values("sample")["scenario"]]


def flood(rate: float = 1e9) -> Scenario:
    """Device a serves 1 / 0.5 = 2 jobs per time unit; b, 2 / 1 = 2."""
    return Scenario(
        [Device("a", capacity=5, speed=1.0), Device("b", capacity=5, speed=2.0)],
        [ServiceChain("x", rate, [Stage("a", 0.5), Stage("b", 1.0)])],
        name="flood",
    )


def no_room(region: bool = False) -> Scenario:
    """Chain x needs 2 units of memory at its first stage, where 1 is all there is; chain y
    exits before that stage with probability 0.4."""
    devices = [
        Device("a", capacity=5, speed=1.0, memory=None if region else 1.0),
        Device("b", capacity=5, speed=1.0),
    ]
    regions = [Region("r", ("a", "b"), memory=1.0)] if region else []
    big = {"job_memory": 2.0, "exit_accuracy": 0.9}
    chains = [
        ServiceChain("x", 0.5, [Stage("a", 1.0, **big), Stage("b", 1.0, exit_accuracy=0.9)]),
        ServiceChain(
            "y", 0.5, [Stage("b", 0.5, exit_prob=0.4, exit_accuracy=0.6), Stage("a", 1.0, **big)]
        ),
    ]
    with warnings.catch_warnings():  # the scenario may warn that nothing is admitted there
        warnings.simplefilter("ignore")
        return Scenario(devices, chains, regions, name="no_room")


# ---- 1. damaged checkpoints ----------------------------------------------------------------------


def test_a_checkpoint_with_changed_or_missing_bytes_is_refused_everywhere(
    tiny, tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    flipped = flip_a_weight_byte(tiny_checkpoint, tmp_path / "flipped.ckpt")
    with pytest.raises(CheckpointError, match="damaged checkpoint: the bytes of .* CRC"):
        Surrogate.load(flipped)
    with pytest.raises(CheckpointError, match="damaged"):
        QoSModule.load_from_checkpoint(flipped, weights_only=True)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(Path(tiny_checkpoint).read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="damaged .*truncated"):
        Surrogate.load(truncated)
    scenarios = tmp_path / "one.yaml"
    scenarios.write_text(flood(1.0).to_yaml())
    for ckpt in (flipped, truncated):
        code, _, err = run_command(
            score_main, f"ckpt_path={ckpt}", f"scenarios={scenarios}", f"out={tmp_path / 'p.csv'}",
            f"hydra.run.dir={tmp_path / 'run'}", monkeypatch=monkeypatch, capsys=capsys,
        )  # fmt: skip
        assert code == 2 and "damaged" in err and err.count("\n") == 1, err
        code, _, err = run_command(
            eval_main, f"ckpt_path={ckpt}", f"data.root={tiny}",
            f"paths.output_dir={tmp_path / 'eval'}", f"hydra.run.dir={tmp_path / 'run'}",
            monkeypatch=monkeypatch, capsys=capsys,
        )  # fmt: skip
        assert code == 2 and "damaged" in err and err.count("\n") == 1, err
    assert not (tmp_path / "p.csv").exists()


# ---- 2. non-finite weights -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("net.enc.chain.0.weight", float("nan"), "net.enc.chain.0.weight holds NaN or infinite"),
        ("net.normalizer.fragment_std", float("inf"), "fragment_std holds NaN or infinite"),
        ("ranges.high", float("nan"), "ranges.high holds NaN or infinite"),
        ("net.normalizer.chain_std", 0.0, "normalizer.chain_std holds a scale <= 0"),
    ],
)
def test_non_finite_weights_are_refused_at_load(tiny_checkpoint, tmp_path, key, value, expected):
    bad = rewrite(tiny_checkpoint, tmp_path / "bad.ckpt", lambda c: set_first(c, key, value))
    with pytest.raises(CheckpointError, match=expected):
        Surrogate.load(bad)


# ---- 3. resuming from something that is not a training checkpoint --------------------------------


def test_resuming_from_a_bad_checkpoint_stops_in_one_line(
    tiny, tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    text = tmp_path / "notes.ckpt"
    text.write_text("my notes, not a checkpoint\n")
    _Payload.target = tmp_path / "pwned"
    plain_pickle = tmp_path / "plain.pkl"
    plain_pickle.write_bytes(pickle.dumps({"state_dict": _Payload()}))
    zipped_pickle = tmp_path / "zipped.ckpt"
    torch.save({"hyper_parameters": {}, "state_dict": {}, "x": _Payload()}, zipped_pickle)
    nan = rewrite(
        tiny_checkpoint, tmp_path / "nan.ckpt",
        lambda c: set_first(c, "net.enc.chain.0.weight", float("nan")),
    )  # fmt: skip
    scoring_only = rewrite(
        tiny_checkpoint, tmp_path / "scoring.ckpt",
        lambda c: [c.pop(k) for k in list(c) if k not in ("hyper_parameters", "state_dict")],
    )  # fmt: skip
    old_features = rewrite(
        tiny_checkpoint, tmp_path / "v1.ckpt",
        lambda c: c["hyper_parameters"].__setitem__("feature_version", 1),
    )  # fmt: skip
    cases = [
        (text, [], "not a chainnet checkpoint"),
        (old_features, [], "feature version 1"),
        (plain_pickle, [], "not a chainnet checkpoint"),
        (zipped_pickle, [], "not one safe to load"),
        (nan, [], "NaN or infinite"),
        (scoring_only, [], "holds no training state"),
        (tiny_checkpoint, ["model.net.hidden=16"], "do not fit this run's model"),
        (tmp_path, [], "a folder"),
    ]
    for ckpt, extra, expected in cases:
        code, _, err = run_command(
            train_main, f"ckpt_path={ckpt}", f"data.root={tiny}", "model.net.hidden=8",
            "model.net.rounds=1", "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
            f"paths.output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'run'}", *extra,
            monkeypatch=monkeypatch, capsys=capsys,
        )  # fmt: skip
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and expected in err and len(lines) == 1, (ckpt, err)
        assert lines[0].startswith("error: "), err
    assert not _Payload.target.exists()  # the payloads never ran
    assert not list((tmp_path / "out").glob("checkpoints/*"))  # nothing was trained


# ---- 4. physically possible predictions ----------------------------------------------------------


def test_throughput_never_exceeds_the_arrival_rate_nor_what_the_path_serves(tiny_checkpoint):
    # the network says a ratio above 2 / rate at both rates (its prior is clamped at 1e-3)
    df = Surrogate.load(tiny_checkpoint).predict([flood(1e9), flood(1e5)])
    assert (df["throughput"] <= 2.0 + 1e-12).all(), df
    assert np.allclose(df["throughput"], 2.0)  # both overloaded: the bound is what they get
    assert np.allclose(df["loss_ratio"], 1.0 - 2.0 / df["arrival_rate"])
    assert np.allclose(df["throughput"], df["throughput_ratio"] * df["arrival_rate"])
    assert np.isfinite(df["response_time"]).all()


@pytest.mark.parametrize("region", [False, True])
def test_a_stage_whose_memory_cannot_hold_one_job_admits_none(tiny_checkpoint, region):
    sc = no_room(region)
    df = Surrogate.load(tiny_checkpoint).predict(sc).set_index("chain_name")
    x, y = df.loc["x"], df.loc["y"]
    assert x["throughput"] == 0.0 and x["loss_ratio"] == 1.0  # the simulator: loss 1
    assert np.isnan(x["response_time"]) and np.isnan(x["accuracy"])  # nothing completes
    # y completes only the jobs that exit before the stage: at most 40 %, at accuracy 0.6
    assert y["throughput"] <= 0.4 * 0.5 + 1e-12 and y["loss_ratio"] >= 0.6 - 1e-12
    assert y["accuracy"] == pytest.approx(0.6)
    sim = simulate(sc, 0, SimulatorSettings(precision=0.05, max_arrivals=20_000)).chain_frame()
    assert list(sim["loss_ratio"].round(6))[0] == 1.0  # the simulator agrees on x
    assert y["throughput"] >= sim["throughput"].iloc[1] - 3 * sim["throughput_hw"].iloc[1] - 0.01


@pytest.mark.parametrize("region", [False, True])
def test_evaluation_scores_what_the_surrogate_gives(region):
    """eval.py and train.py's test report keep predictions physically possible, as the surrogate
    does: a chain that can never complete a job gets throughput 0 and no response ratio, whatever
    the network (or the analytic baseline) said; one within its limits keeps its prediction."""
    sc = no_room(region)
    pred = pd.DataFrame({
        "sample": [7, 7], "chain": [0, 1], "iterations": [3, 3],
        "pred_throughput_ratio": [0.9, 0.9], "pred_response_ratio": [0.8, 0.8],
    })  # fmt: skip
    out = within_limits(pred, pd.DataFrame({"sample": [7], "scenario": [sc.to_json()]}))
    assert out["pred_throughput_ratio"].iloc[0] == 0.0
    assert np.isnan(out["pred_response_ratio"].iloc[0])
    assert out["pred_throughput_ratio"].iloc[1] <= 0.4 + 1e-12  # only the jobs exiting before
    assert out["pred_response_ratio"].iloc[1] == 0.8
    pred.loc[1, "pred_throughput_ratio"] = 0.3  # possible: unchanged
    out = within_limits(pred, pd.DataFrame({"sample": [7], "scenario": [sc.to_json()]}))
    assert out["pred_throughput_ratio"].iloc[1] == 0.3


def test_the_bound_holds_in_simulation():
    """The throughput bound is never below what the simulator measures, on overloaded scenarios
    of every kind (exits, memory, regions, processor sharing, shared devices)."""
    settings = SimulatorSettings(precision=0.05, max_arrivals=20_000, warmup_arrivals=500)
    tight = 0
    for kind in KINDS:
        for seed in range(4):
            base = random_scenario(kind, seed).to_dict()
            for ch in base["chains"]:
                ch["arrival_rate"] *= 20.0  # overloaded: the bound matters
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sc = Scenario.from_dict(base)
            bound = physical_limits([sc]).throughput
            sim = simulate(sc, seed, settings).chain_frame()
            measured = sim["throughput"].to_numpy()
            slack = 3 * sim["throughput_hw"].to_numpy() + 0.02 * bound
            assert (measured <= bound + slack).all(), (kind, seed, measured, bound)
            tight += int((measured >= 0.8 * bound).sum())
    assert tight > 0  # the bound is reached by some chains, not vacuous


def test_tiny_and_huge_inputs_give_finite_predictions(tiny_checkpoint):
    s = Surrogate.load(tiny_checkpoint)
    cases = []
    for name, values in [
        ("work", [1e-300, 1e-40, 1e40, 1e300]),
        ("speed", [1e-300, 1e-40, 1e40, 1e300]),
        ("rate", [1e-300, 1e-40, 1e40, 1e300]),
        ("capacity", [10**18, 10**300]),
        ("scv", [1e-300, 1e300]),
        ("memory", [1e-300, 1e300]),
    ]:
        for v in values:
            p = {"work": 1.0, "speed": 1.0, "rate": 0.5, "capacity": 5, "scv": 0.5, "memory": 4.0}
            p[name] = v
            dev = Device("a", capacity=p["capacity"], speed=p["speed"], memory=p["memory"])
            first = Stage(
                "a", p["work"], "general", scv=p["scv"], job_memory=p["memory"] / 4, exit_prob=0.3
            )
            cases.append(
                Scenario([dev], [ServiceChain("x", p["rate"], [first, Stage("a", p["work"])])])
            )
    # a rate and a job memory whose product overflows float64
    dev = Device("a", capacity=5, speed=1.0, memory=1e300)
    job = Stage("a", 1.0, job_memory=1e300, exit_prob=0.3)
    cases.append(Scenario([dev], [ServiceChain("x", 1e300, [job, Stage("a", 1.0)])]))
    graph = graph_batch(cases)
    for node in ("chain", "fragment", "device"):
        assert torch.isfinite(graph[node].x).all(), node
    df = s.predict(cases)
    cols = ["throughput", "loss_ratio", "response_time", "throughput_ratio", "response_ratio"]
    assert np.isfinite(df[cols].to_numpy()).all(), df[cols]
    assert ((df["loss_ratio"] >= 0) & (df["loss_ratio"] <= 1)).all()
    assert (df["throughput"] <= df["arrival_rate"]).all()


def test_in_range_predictions_are_unchanged_by_the_bounds(tiny, tiny_checkpoint):
    """On the scenarios the model was trained on: the graphs hold the plain inputs, and every
    ratio is the network's own output, as eval.py computes it; the bounds act only where the
    network predicts the impossible (and the simulated truth never exceeds them)."""
    s = Surrogate.load(tiny_checkpoint)
    scenarios = train_split_scenarios(tiny)
    g = graph_batch(scenarios)
    rates = [ch.arrival_rate for sc in scenarios for ch in sc.chains for _ in ch.stages]
    assert torch.equal(g["fragment"].rate, torch.tensor(rates, dtype=torch.float32))
    with torch.no_grad():
        out = s.net(g)[0].double().numpy()
    df = s.predict(scenarios)
    bound = physical_limits(scenarios).throughput / df["arrival_rate"].to_numpy()
    inside = out[:, 0] <= bound
    assert inside.mean() > 0.9
    got = df["throughput_ratio"].to_numpy()
    assert np.array_equal(got[inside], out[inside, 0]) and (got <= bound).all()
    assert np.array_equal(df["response_ratio"].to_numpy(), out[:, 1])
    raw = predict_graphs(s.net, QoSDataset(tiny, "train")).sort_values(["sample", "chain"])
    assert np.allclose(got[inside], raw["pred_throughput_ratio"].to_numpy()[inside], atol=1e-6)
    truth = read_table(tiny, "chains").merge(raw[["sample", "chain"]], on=["sample", "chain"])
    truth = truth.sort_values(["sample", "chain"])
    assert (truth["throughput_ratio"].to_numpy() <= bound + 3 * truth["throughput_ratio_hw"]).all()


# ---- 5. out of the training ranges ---------------------------------------------------------------


def test_rows_outside_the_training_ranges_are_flagged_and_say_why(tiny, tiny_checkpoint):
    s = Surrogate.load(tiny_checkpoint)
    own = s.predict(train_split_scenarios(tiny))
    assert own["out_of_range"].dtype == "boolean" and not own["out_of_range"].any()
    assert (own["out_of_range_why"] == "").all()
    far = s.predict([flood(1e9), no_room()])
    assert far["out_of_range"].all()
    assert "offered_load 5e+08 >" in far.loc[0, "out_of_range_why"]
    assert "memory" in " ".join(far.loc[1:, "out_of_range_why"])
    # the ranges travel in the checkpoint, readable with weights_only=True
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    assert bool(ckpt["state_dict"]["ranges.fitted"])


def test_a_checkpoint_without_ranges_loads_with_the_flag_unknown(
    tiny, tiny_run, tmp_path, monkeypatch, capsys
):
    last = tiny_run[1] / "checkpoints/last.ckpt"
    old = rewrite(last, tmp_path / "old.ckpt", without_ranges)
    with pytest.warns(RangesUnknownWarning, match="holds no training ranges"):
        s = Surrogate.load(old)
    df = s.predict(flood())
    assert df["out_of_range"].isna().all() and df["out_of_range_why"].isna().all()
    assert df["throughput"].iloc[0] == pytest.approx(2.0)  # bounds hold all the same
    assert not bool(QoSModule.load_from_checkpoint(old, weights_only=True).ranges.fitted)
    scenarios = tmp_path / "s.yaml"
    scenarios.write_text(flood().to_yaml())
    code, _, err = run_command(
        score_main, f"ckpt_path={old}", f"scenarios={scenarios}", f"out={tmp_path / 'p.csv'}",
        f"hydra.run.dir={tmp_path / 'run'}", monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert code == 0 and err.strip().splitlines() == [
        f"note: {old} holds no training ranges (made before chainnet recorded them); "
        "out_of_range is left empty"
    ]
    # training resumed from it records them
    out = tmp_path / "resumed"
    train(train_config(tiny, out, "test=false", "trainer.max_epochs=3", "model.net.rounds=1",
                       f"ckpt_path={old}"))  # fmt: skip
    assert Surrogate.load(out / "checkpoints/last.ckpt").ranges_known


def test_score_warns_with_the_count_of_rows_out_of_range(
    tiny, tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    inside = train_split_scenarios(tiny)[:2]
    docs = [sc.to_dict() for sc in inside] + [flood().to_dict()]
    path = tmp_path / "deployments.yaml"
    path.write_text(yaml.safe_dump({"scenarios": docs}))
    out = tmp_path / "pred.csv"
    code, stdout, err = run_command(
        score_main, f"ckpt_path={tiny_checkpoint}", f"scenarios={path}", f"out={out}",
        f"hydra.run.dir={tmp_path / 'run'}", monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    n = sum(len(sc.chains) for sc in inside) + 1
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"warning: 1 of {n} chains have inputs outside the training ranges (chain_load"
    ), err
    assert lines[0].endswith("; see the out_of_range column")
    df = pd.read_csv(out)
    assert list(df["out_of_range"]) == [False] * (n - 1) + [True]
    assert "offered_load" in df["out_of_range_why"].iloc[-1]
    assert "out_of_range" in stdout


def test_the_tally_counts_candidates_for_one_optimizer_warning(tiny_checkpoint):
    """What the optimizer prints: candidates (several chains each) with any chain out of range."""
    s = Surrogate.load(tiny_checkpoint)
    tally = RangeTally()
    for batch in ([flood(1e9), flood(1e3)], [flood(1e9)]):
        arrays = s.predict_arrays(batch)
        tally.add(arrays["out_of_range"], arrays["out_of_range_why"], per_item=1)
    assert tally.items == 3 and tally.flagged == 3
    line = tally.warning("candidates", "their predictions are extrapolations")
    assert line.startswith("warning: 3 of 3 candidates have inputs outside the training ranges (")
    assert line.endswith("); their predictions are extrapolations")
    assert RangeTally().warning() is None


# ---- 6. wrong types ------------------------------------------------------------------------------


def test_predict_names_a_wrong_argument(tiny_checkpoint):
    s = Surrogate.load(tiny_checkpoint)
    sc = flood(1.0)
    for bad, kind in [
        (None, "NoneType"), ({"devices": []}, "dict"), ("deployments.yaml", "str"),
        (Path("deployments.yaml"), "PosixPath"), (3, "int"), (b"x", "bytes"),
    ]:  # fmt: skip
        for call in (s.predict, s.predict_arrays):
            with pytest.raises(TypeError, match=f"scenarios: a Scenario or a list .* got {kind}"):
                call(bad)
    with pytest.raises(TypeError, match=r"Scenario\.load\(path\)"):
        s.predict("deployments.yaml")
    with pytest.raises(TypeError, match=r"scenarios\[1\]: a Scenario, got dict"):
        s.predict([sc, sc.to_dict()])
    with pytest.raises(TypeError, match="batch_size: an integer >= 1, got str"):
        s.predict([sc], batch_size="8")
    assert len(s.predict((x for x in [sc, sc]), batch_size=np.int64(1))) == 2


# ---- 7 and 8. train: a refused setting in one line; the output folder is made --------------------


def test_a_refused_model_setting_is_one_line_naming_it(tiny, tmp_path, monkeypatch, capsys):
    for setting, expected in [
        ("model.net.hidden=0", "error: model.net.hidden: got 0; must be an integer >= 1"),
        ("model.net.device_agg=sum", "error: model.net.device_agg: got 'sum'"),
        ("model=mlp model.net.layers=0", "error: model.net.layers: got 0"),
        ("model.net.tol=abc", "error: model.net.tol: got 'abc'; must be a number >= 0"),
        ("model.floor=0", "error: model.floor: got 0; must be a number > 0"),
        ("data.batch_size=0", "error: data.batch_size: got 0; must be an integer >= 1"),
        ("data.fractions=[0.5,0.6,0]", "error: data.fractions: got [0.5, 0.6, 0.0]"),
        ("model.optimizer.lr=-1", "error: model.optimizer: Invalid learning rate: -1"),
    ]:
        code, _, err = run_command(
            train_main, f"data.root={tiny}", "trainer.max_epochs=1", "test=false", *setting.split(),
            f"paths.output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'run'}",
            monkeypatch=monkeypatch, capsys=capsys,
        )  # fmt: skip
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(expected), err


def test_train_and_eval_make_their_output_folder(
    tiny, tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "not" / "yet"
    code, _, err = run_command(
        train_main, "debug=fdr", f"data.root={tiny}", "model.net.hidden=8",
        f"paths.output_dir={out}", f"hydra.run.dir={tmp_path / 'run'}",
        monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    assert (out / "test_metrics_by_load.csv").is_file()
    code, _, err = run_command(
        eval_main, f"ckpt_path={tiny_checkpoint}", f"data.root={tiny}",
        f"paths.output_dir={tmp_path / 'eval' / 'deeper'}", f"hydra.run.dir={tmp_path / 'run2'}",
        monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "eval" / "deeper" / "metrics.csv").is_file()
