"""Calibrated prediction intervals: the conformal math, the checkpoint that carries them, the
Surrogate's bounds and eval.py's coverage report."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import train_config
from tests_helpers import random_scenario, run_command, without_intervals
from torch_geometric.data import Batch

from chainnet.cli.eval import main as eval_main
from chainnet.cli.train import train
from chainnet.dataset.store import read_table
from chainnet.learn.data import QoSDataset
from chainnet.learn.evaluation import predict_graphs
from chainnet.learn.features import graph_batch, scenario_graph
from chainnet.learn.intervals import (
    BANDS,
    LEVELS,
    OWN,
    POOLED,
    UNBOUNDED,
    PredictionIntervals,
    band_index,
    conformal_quantile,
    grid_level,
    nonconformity,
    scenario_max_load,
)
from chainnet.learn.metrics import coverage, mean_width, qos_metrics
from chainnet.learn.module import QoSModule
from chainnet.learn.surrogate import BOUNDS, Surrogate

# A larger validation split than the default, so that every band has chains to calibrate on.
FRACTIONS = "data.fractions=[0.3,0.6,0.1]"
BAD_LEVELS = [0, 1, 1.5, -0.1, float("nan"), "0.9", True, None]


# ---- the math --------------------------------------------------------------------------------


def test_the_conformal_quantile_is_the_kth_smallest_with_the_finite_sample_correction():
    scores = torch.tensor(np.random.default_rng(0).permutation(np.arange(1.0, 20.0)))  # 1..19
    assert conformal_quantile(scores, 0.9) == 18.0  # k = ceil(20 x 0.9) = 18
    assert conformal_quantile(scores, 0.5) == 10.0  # k = ceil(10) = 10: no rounding up past 10
    assert conformal_quantile(scores, 0.95) == 19.0  # k = 19 = n
    assert conformal_quantile(scores[:18], 0.95) is None  # k = ceil(18.05) = 19 > 18
    assert conformal_quantile(scores[:0], 0.5) is None


def synthetic(rng, n: int):
    """Exchangeable chains: predictions, truths whose errors grow with the load band, loads."""
    load = rng.uniform(0.0, 2.0, n)
    scale = np.array([0.002, 0.01, 0.04, 0.1])[band_index(load)]
    tput = rng.uniform(0.2, 0.8, n)
    resp = rng.uniform(0.1, 1.0, n)
    pred = np.stack([tput, resp], 1)
    true = np.stack([tput + rng.normal(0, scale), resp * np.exp(rng.normal(0, 3 * scale))], 1)
    return pred, true, load


def test_coverage_on_exchangeable_data_is_the_level_in_every_band():
    rng = np.random.default_rng(1)
    pred, true, load = synthetic(rng, 8000)
    intervals = PredictionIntervals().fit(
        nonconformity(torch.tensor(pred), torch.tensor(true)), load
    )
    assert bool(intervals.fitted) and (intervals.source == OWN).all()
    pred, true, load = synthetic(rng, 40000)
    bands = band_index(load)
    for level in (0.8, 0.9, 0.95):
        b = intervals.bounds(pred, load, level)
        for j, q in enumerate(("throughput_ratio", "response_ratio")):
            for band in range(len(BANDS)):  # Mondrian: each band, not only on average
                m = bands == band
                cov = coverage(b[f"{q}_lower"][m], b[f"{q}_upper"][m], true[m, j])
                assert level - 0.02 < cov < level + 0.025, (q, band, level, cov)
    # one pooled quantile would not: it under-covers the overloaded band
    pooled = PredictionIntervals().fit(
        nonconformity(torch.tensor(pred), torch.tensor(true)), np.zeros(len(pred))
    )
    b = pooled.bounds(pred, np.zeros(len(pred)), 0.9)
    top = bands == 3
    lo, hi = b["throughput_ratio_lower"][top], b["throughput_ratio_upper"][top]
    assert coverage(lo, hi, true[top, 0]) < 0.8


def test_a_band_with_too_few_chains_uses_all_bands_and_none_leaves_it_unbounded():
    rng = np.random.default_rng(2)
    scores = torch.tensor(rng.uniform(0, 1, (30, 2)))
    load = np.r_[np.full(25, 0.1), np.full(5, 1.0)]  # bands 0 and 2; nothing in 1 and 3
    intervals = PredictionIntervals().fit(scores, load)
    i = LEVELS.index(0.8)
    assert intervals.count[:, 0].tolist() == [25, 0, 5, 0]
    assert intervals.source[0, 0, i] == OWN  # 25 >= ceil(26 x 0.8) = 21
    assert intervals.source[2, 0, i] == OWN  # 5 >= ceil(6 x 0.8) = 5
    assert intervals.source[2, 0, LEVELS.index(0.9)] == POOLED  # 5 < ceil(6 x 0.9) = 6
    assert intervals.source[1, 0, i] == POOLED
    assert float(intervals.half_width[1, 0, i]) == conformal_quantile(scores[:, 0], 0.8)
    j = LEVELS.index(0.99)  # 30 chains are too few for 99 % anywhere: unbounded
    assert (intervals.source[:, :, j] == UNBOUNDED).all()
    b = intervals.bounds(np.array([[0.5, 0.4]]), np.array([0.1]), 0.99)
    assert b["throughput_ratio_lower"][0] == 0.0 and b["throughput_ratio_upper"][0] == 1.0
    assert b["response_ratio_lower"][0] == 0.0 and np.isinf(b["response_ratio_upper"][0])


def test_a_band_falling_back_to_the_pooled_scores_never_narrows_as_the_level_rises():
    # an overloaded band of 5 large scores among 95 small ones: it has enough for 80 % (its own
    # quantile, large) but not for 90 % (the pooled quantile alone would be small)
    scores = torch.tensor(np.r_[np.full(95, 0.01), np.full(5, 0.5)])[:, None].repeat(1, 2)
    load = np.r_[np.full(95, 0.1), np.full(5, 2.0)]
    intervals = PredictionIntervals().fit(scores, load)
    at = {lv: intervals.half_widths(np.array([3]), lv)[0, 0] for lv in (0.8, 0.9, 0.95)}
    assert intervals.source[3, 0, LEVELS.index(0.9)] == POOLED
    assert at[0.8] == 0.5 and at[0.9] == at[0.95] == 0.5  # the pooled 0.01 would under-cover
    widths = intervals.half_width.numpy()
    assert (np.diff(widths, axis=2) >= 0).all()


def test_a_level_between_grid_points_uses_the_next_higher_one():
    assert LEVELS[grid_level(0.87)] == 0.9 and LEVELS[grid_level(0.9)] == 0.9
    assert LEVELS[grid_level(0.01)] == 0.5
    intervals = PredictionIntervals().fit(torch.rand(500, 2, dtype=torch.float64), np.zeros(500))
    loads = np.zeros(3)
    bands = band_index(loads)
    assert np.array_equal(intervals.half_widths(bands, 0.87), intervals.half_widths(bands, 0.9))
    with pytest.raises(ValueError, match=r"level: got 0.995; .* up to 0.99"):
        grid_level(0.995)
    for bad in BAD_LEVELS:
        with pytest.raises(ValueError, match="level: got"):
            grid_level(bad)


def test_response_ratio_intervals_are_multiplicative_and_unknown_truths_are_left_out():
    pred = torch.tensor([[0.5, 0.2], [0.5, 2.0]])
    true = torch.tensor([[0.4, 0.1], [0.5, float("nan")]])
    s = nonconformity(pred, true)
    assert s[0, 0].item() == pytest.approx(0.1) and s[0, 1].item() == pytest.approx(np.log(2))
    assert torch.isnan(s[1, 1]) and s[1, 0].item() == 0.0
    intervals = PredictionIntervals().fit(torch.full((50, 2), np.log(2.0)), np.zeros(50))
    b = intervals.bounds(np.array([[0.5, 0.2]]), np.zeros(1), 0.9)
    assert b["response_ratio_lower"][0] == pytest.approx(0.1)
    assert b["response_ratio_upper"][0] == pytest.approx(0.4)


def test_an_old_state_without_intervals_loads_unfitted():
    fresh = PredictionIntervals()
    fresh.load_state_dict({})
    assert not bool(fresh.fitted)
    with pytest.raises(ValueError, match="no calibrated intervals"):
        fresh.half_widths(np.zeros(1, dtype=int), 0.9)


def test_the_band_load_of_a_graph_is_the_scenarios_most_loaded_device(tiny):
    scenarios = [random_scenario(kind, seed) for kind in ("exits", "dsn24") for seed in range(4)]
    got = scenario_max_load(graph_batch(scenarios)).numpy()
    want = [max(sc.offered_loads()) for sc in scenarios for _ in sc.chains]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    one = scenario_max_load(scenario_graph(scenarios[0])).numpy()  # a graph without batch vectors
    np.testing.assert_allclose(one, want[: len(one)], rtol=1e-6)
    samples = read_table(tiny, "samples").set_index("sample")["max_offered_load"]
    data = Batch.from_data_list(list(QoSDataset(tiny, "train")))
    want = samples.loc[data.sample[data["chain"].batch].numpy()].to_numpy()
    np.testing.assert_allclose(scenario_max_load(data).numpy(), want, rtol=1e-6)


def test_coverage_and_width_in_the_metrics_table():
    pred = pd.DataFrame(
        {
            "throughput_ratio": [0.5, 0.5, 0.5, 0.5],
            "throughput_ratio_lower": [0.4, 0.4, 0.45, 0.4],
            "throughput_ratio_upper": [0.6, 0.6, 0.55, 0.6],
        }
    )
    true = pd.DataFrame({"throughput_ratio": [0.45, 0.6, 0.6, np.nan]})
    table = qos_metrics(pred, true, np.array([0.1, 0.1, 1.5, 1.5]))
    assert table.loc["all", "coverage_throughput_ratio"] == pytest.approx(2 / 3)  # bounds count
    assert table.loc["<0.5", "coverage_throughput_ratio"] == 1.0
    assert table.loc[">1.2", "coverage_throughput_ratio"] == 0.0
    assert table.loc["all", "width_throughput_ratio"] == pytest.approx((0.2 + 0.2 + 0.1) / 3)
    assert "coverage_response_ratio" not in table
    assert mean_width([0.0], [np.inf], [1.0]) == np.inf


# ---- a trained model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated(tiny, tmp_path_factory):
    """A tiny ChainNet-GIN whose validation split is most of `tiny`: (last checkpoint, its run)."""
    out = tmp_path_factory.mktemp("calibrated")
    train(train_config(tiny, out, "model.net.rounds=1", FRACTIONS, "test=false"))
    return out / "checkpoints/last.ckpt", out


def scenarios():
    return [random_scenario(kind, seed) for kind in ("dsn24", "exits") for seed in range(6)]


def test_every_checkpoint_carries_intervals_calibrated_on_its_own_validation_predictions(
    tiny, calibrated
):
    last, out = calibrated
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # plain tensors only
    assert bool(ckpt["state_dict"]["intervals.fitted"])
    s = Surrogate.load(last)
    assert s.intervals_known
    val = QoSDataset(tiny, "val", (0.3, 0.6, 0.1))
    pred = predict_graphs(s.net, val)
    chains = read_table(tiny, "chains").merge(read_table(tiny, "samples"), on="sample")
    df = pred.merge(chains, on=["sample", "chain"])
    ratios = ["throughput_ratio", "response_ratio"]
    scores = nonconformity(
        torch.tensor(df[[f"pred_{r}" for r in ratios]].to_numpy()),
        torch.tensor(df[ratios].to_numpy()),
    )
    again = PredictionIntervals().fit(scores, df["max_offered_load"].to_numpy())
    assert int(s.intervals.count.sum()) == int(again.count.sum()) > 40
    assert torch.equal(s.intervals.source, again.source)
    torch.testing.assert_close(s.intervals.half_width, again.half_width, rtol=1e-4, atol=1e-6)
    # the best checkpoint carries its own epoch's: the module loads them too
    module = QoSModule.load_from_checkpoint(last, weights_only=True)
    assert torch.equal(module.intervals.half_width, s.intervals.half_width)


def test_predict_gives_bounds_around_the_prediction_that_widen_with_the_level(calibrated):
    s = Surrogate.load(calibrated[0])
    plain = s.predict(scenarios())
    assert not set(BOUNDS) & set(plain.columns)
    wide, narrow = s.predict(scenarios(), level=0.95), s.predict(scenarios(), level=0.8)
    pd.testing.assert_frame_equal(wide[plain.columns], plain)  # the predictions do not change
    for q in ("throughput", "loss_ratio", "response_time", "throughput_ratio", "response_ratio"):
        for df in (wide, narrow):
            ok = df[q].notna()
            assert (df.loc[ok, f"{q}_lower"] <= df.loc[ok, q] + 1e-12).all(), q
            assert (df.loc[ok, q] <= df.loc[ok, f"{q}_upper"] + 1e-12).all(), q
        w = wide[f"{q}_upper"] - wide[f"{q}_lower"]
        n = narrow[f"{q}_upper"] - narrow[f"{q}_lower"]
        assert (w >= n - 1e-12).all() and (w > n).any(), q
    assert (wide["throughput_upper"] <= wide["arrival_rate"] + 1e-12).all()
    assert wide["throughput_ratio_lower"].min() >= 0 and wide["loss_ratio_upper"].max() <= 1
    arrays = s.predict_arrays(scenarios(), level=0.9)
    df = s.predict(scenarios(), level=0.9, batch_size=5)
    for col in BOUNDS:
        np.testing.assert_allclose(arrays[col], df[col].to_numpy(), rtol=1e-5)  # float32 sums
    assert set(BOUNDS) <= set(s.predict_arrays([], level=0.9))
    assert set(BOUNDS) <= set(s.predict([], level=0.9).columns)


def test_a_bad_level_is_one_clear_error(calibrated):
    s = Surrogate.load(calibrated[0])
    for bad in BAD_LEVELS[:-1]:  # None means no intervals
        for call in (s.predict, s.predict_arrays):
            with pytest.raises(ValueError, match="level: got"):
                call(scenarios(), level=bad)


def test_an_old_checkpoint_without_intervals_scores_and_says_so_on_level(
    tiny, calibrated, tmp_path, monkeypatch, capsys
):
    old = without_intervals(calibrated[0], tmp_path / "old.ckpt")
    s = Surrogate.load(old)
    assert not s.intervals_known
    same = Surrogate.load(calibrated[0]).predict(scenarios())
    pd.testing.assert_frame_equal(s.predict(scenarios()), same)
    for call in (s.predict, s.predict_arrays):
        with pytest.raises(ValueError, match="holds no calibrated intervals .*retrain"):
            call(scenarios(), level=0.9)
    assert not bool(QoSModule.load_from_checkpoint(old, weights_only=True).intervals.fitted)
    where = f"hydra.run.dir={tmp_path / 'run'}"
    code, out, err = run_command(
        eval_main,
        f"ckpt_path={old}",
        f"data.root={tiny}",
        where,
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 0 and "holds no calibrated intervals" in err
    assert "coverage_throughput_ratio" not in out


def test_load_puts_the_network_on_a_device_and_refuses_one_it_cannot_use(calibrated):
    s = Surrogate.load(calibrated[0], device=torch.device("cpu"))
    assert s.device == torch.device("cpu")
    with pytest.raises(ValueError, match="device: got 'warp'; a torch device"):
        Surrogate.load(calibrated[0], device="warp")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: got 'cuda'; CUDA is not available"):
            Surrogate.load(calibrated[0], device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_predictions_match_the_cpu(tiny, calibrated):
    cpu, gpu = Surrogate.load(calibrated[0]), Surrogate.load(calibrated[0], device="cuda")
    assert gpu.device.type == "cuda"
    a, b = cpu.predict(scenarios(), level=0.9), gpu.predict(scenarios(), level=0.9)
    numeric = a.select_dtypes("number").columns
    np.testing.assert_allclose(a[numeric], b[numeric], rtol=1e-4, atol=1e-6)
    val = QoSDataset(tiny, "val", (0.3, 0.6, 0.1))
    pd.testing.assert_frame_equal(
        predict_graphs(cpu.net, val), predict_graphs(gpu.net, val), rtol=1e-4, atol=1e-6
    )


def test_eval_reports_coverage_and_width_per_load_band(
    tiny, calibrated, tmp_path, monkeypatch, capsys
):
    args = [f"ckpt_path={calibrated[0]}", f"data.root={tiny}", FRACTIONS, "split=val"]

    def run(name, *extra):
        where = f"hydra.run.dir={tmp_path / name}"
        return run_command(eval_main, *args, *extra, where, monkeypatch=monkeypatch, capsys=capsys)

    code, out, err = run("a")
    assert code == 0, err
    for col in ("coverage_throughput_ratio", "width_throughput_ratio", "coverage_response_ratio"):
        assert col in out
    table = pd.read_csv(tmp_path / "a/metrics.csv", index_col="band")
    cov = table["coverage_throughput_ratio"]
    assert list(table.index) == ["all", *BANDS] and cov.between(0, 1).all()
    weighted = (cov.iloc[1:] * table["chains"].iloc[1:]).sum() / table.loc["all", "chains"]
    assert cov["all"] == pytest.approx(weighted)
    preds = pd.read_csv(tmp_path / "a/predictions.csv")
    assert (preds["pred_throughput_ratio_lower"] <= preds["pred_throughput_ratio"]).all()
    # wider at a higher level; none with level=null or for the analytic baseline
    assert run("b", "level=0.97")[0] == 0
    wider = pd.read_csv(tmp_path / "b/metrics.csv", index_col="band")
    assert (wider["width_throughput_ratio"] >= table["width_throughput_ratio"]).all()
    assert (wider["width_throughput_ratio"] > table["width_throughput_ratio"]).any()
    for name, extra in (("c", "level=null"), ("d", "analytic=true")):
        code, out, _ = run(name, extra)
        assert code == 0 and "coverage_throughput_ratio" not in out
    code, _, err = run("e", "level=1.5")
    assert code == 2 and err.strip().startswith("error: level: got 1.5")
