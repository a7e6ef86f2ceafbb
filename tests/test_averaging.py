"""The weights' moving average: what validation, checkpoints and a resumed run see."""

import pytest
import torch
from conftest import train_config as config
from torch.optim.swa_utils import AveragedModel
from torch_geometric.loader import DataLoader

from chainnet.cli.train import build, train
from chainnet.learn.averaging import WeightEMA, warmed_ema
from chainnet.learn.checkpoint import CheckpointError, check_resume, read_checkpoint
from chainnet.learn.data import QoSDataset
from chainnet.learn.intervals import nonconformity, scenario_max_load
from chainnet.learn.module import QoSModule

# the default callbacks average the weights; a faster decay for runs of a few steps
EMA = "callbacks.weight_averaging.decay=0.9"


@pytest.fixture(scope="module")
def ema_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("ema_run")
    cfg = config(tiny, out, EMA, "model.net.rounds=1", "trainer.max_epochs=1")
    return train(cfg), out


def _validation(module, data):
    """`module`'s predictions on the validation split of `data`, its targets and the scenarios'
    largest offered loads."""
    module.eval()
    preds, trues, loads = [], [], []
    with torch.no_grad():
        for batch in DataLoader(QoSDataset(data, "val"), batch_size=8):
            preds.append(module(batch)[0])
            trues.append(batch["chain"].y)
            loads.append(scenario_max_load(batch))
    return torch.cat(preds), torch.cat(trues), torch.cat(loads).numpy()


def test_checkpoints_hold_the_average_and_the_weights_being_trained(ema_run):
    trained, out = ema_run
    ckpt = read_checkpoint(out / "checkpoints/last.ckpt")
    average, current = ckpt["state_dict"], ckpt["current_model_state"]
    assert average.keys() == current.keys()
    weights = [k for k in average if average[k].is_floating_point() and "normalizer" not in k]
    weights = [k for k in weights if not k.startswith(("ranges.", "intervals."))]
    assert any(not torch.equal(average[k], current[k]) for k in weights)
    # the recorded buffers are the module's, exactly: never averaged
    for key in average:
        if key.startswith(("ranges.", "intervals.", "net.normalizer.")):
            assert torch.equal(average[key], current[key]), key
    assert bool(average["intervals.fitted"]) and bool(average["net.normalizer.fitted"])
    # training ended on the average: the module returned is the best checkpoint's (tested)
    loaded = QoSModule.load_from_checkpoint(trained.best, weights_only=True)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, trained.module.state_dict()[name]), name


def test_validation_scores_the_average_and_calibrates_its_intervals(tiny, ema_run):
    """The epoch's validation metric and the checkpoint's intervals are those of its own
    (averaged) weights, with the module's normaliser, as without averaging."""
    trained, out = ema_run
    module = QoSModule.load_from_checkpoint(out / "checkpoints/last.ckpt", weights_only=True)
    pred, true, load = _validation(module, tiny)
    ok = torch.isfinite(true[:, 0]) & (true[:, 0] != 0)
    mape = ((pred[ok, 0] - true[ok, 0]).abs() / true[ok, 0]).mean()
    assert float(mape) == pytest.approx(trained.metrics["val/mape_throughput_ratio"], rel=1e-5)
    refit = type(module.intervals)().fit(nonconformity(pred, true), load)
    assert torch.allclose(refit.half_width, module.intervals.half_width, rtol=1e-6, atol=1e-9)
    assert torch.equal(refit.count, module.intervals.count)


def test_training_ends_on_the_average_with_the_last_intervals(tiny, tmp_path):
    """Without checkpoints, the module training leaves is the average, with the intervals the
    last validation fitted on it."""
    cfg = config(tiny, tmp_path, EMA, "model.net.rounds=1", "trainer.max_epochs=1", "test=false",
                 "callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null",
                 "++trainer.enable_checkpointing=false")  # fmt: skip
    module = train(cfg).module
    pred, true, load = _validation(module, tiny)
    refit = type(module.intervals)().fit(nonconformity(pred, true), load)
    assert bool(module.intervals.fitted)
    assert torch.allclose(refit.half_width, module.intervals.half_width, rtol=1e-6, atol=1e-9)


def _moved_weights(last, tmp_path):
    """`last` with the weights being trained moved by 1 in one tensor: (file, that tensor's key)."""
    ckpt = read_checkpoint(last)
    key = next(k for k in ckpt["current_model_state"] if k.endswith("weight"))
    ckpt["current_model_state"][key] = ckpt["current_model_state"][key] + 1.0
    torch.save(ckpt, tmp_path / "moved.ckpt")
    return tmp_path / "moved.ckpt", key


@pytest.mark.parametrize("averaging", [True, False])
def test_a_run_resumes_from_the_weights_being_trained(tiny, ema_run, tmp_path, averaging):
    """With averaging, training goes on from the weights being trained and the average goes on
    from the saved one; resumed without averaging, training still goes on from those weights."""
    moved, key = _moved_weights(ema_run[1] / "checkpoints/last.ckpt", tmp_path)
    before = read_checkpoint(moved)
    cfg = config(tiny, tmp_path / "run", EMA if averaging else "callbacks.weight_averaging=null",
                 "model.net.rounds=1", "test=false", "trainer.max_epochs=2",
                 f"ckpt_path={moved}")  # fmt: skip
    train(cfg)
    after = read_checkpoint(tmp_path / "run/checkpoints/last.ckpt")
    assert after["epoch"] == before["epoch"] + 1
    weights = after["current_model_state"] if averaging else after["state_dict"]
    # a few Adam steps of 0.001 from the moved weights, far from the saved average
    assert (weights[key] - before["current_model_state"][key]).abs().max() < 0.05
    assert (weights[key] - before["state_dict"][key]).abs().min() > 0.5
    if averaging:  # the average went on for the new steps, rather than restarting
        steps = after["global_step"] - before["global_step"]
        n_before = int(before["averaging_state"]["n_averaged"])
        assert steps > 0 and int(after["averaging_state"]["n_averaged"]) == n_before + steps


def test_resuming_refuses_weights_being_trained_that_are_not_finite(ema_run, tmp_path):
    moved, key = _moved_weights(ema_run[1] / "checkpoints/last.ckpt", tmp_path)
    ckpt = read_checkpoint(moved)
    ckpt["current_model_state"][key][0] = float("nan")
    torch.save(ckpt, moved)
    module = QoSModule.load_from_checkpoint(ema_run[1] / "checkpoints/last.ckpt", weights_only=True)
    with pytest.raises(CheckpointError, match=f"current_model_state.{key} holds NaN"):
        check_resume(moved, module)


@pytest.mark.parametrize("decay", [0, 1, 1.5, True, "x"])
def test_a_bad_decay_is_named(decay):
    with pytest.raises(ValueError, match="callbacks.weight_averaging.decay"):
        build({"_target_": "chainnet.learn.averaging.WeightEMA", "decay": decay},
              "callbacks.weight_averaging")  # fmt: skip
    assert WeightEMA(0.99)


def test_the_decay_warms_up_so_a_short_run_averages_its_last_steps():
    """After n updates the average moves by 1 - min(decay, (1 + n) / (10 + n)) towards the
    weights: checked by hand on a one-weight model through torch's AveragedModel."""
    model = torch.nn.Linear(1, 1, bias=False)
    average = AveragedModel(model, avg_fn=warmed_ema(0.999))
    expected = None
    for step in range(2000):
        with torch.no_grad():
            model.weight.fill_(float(step))
        average.update_parameters(model)
        if expected is None:
            expected = float(step)  # the first update copies the weights
        else:
            keep = min(0.999, (1 + step) / (10 + step))  # `step` updates made before this one
            expected = keep * expected + (1 - keep) * step
        got = float(average.module.weight)
        assert got == pytest.approx(expected, rel=1e-5), step
    # after 20 steps the average lies among the last few weights, not near the first ones
    short = AveragedModel(model, avg_fn=warmed_ema(0.999))
    for step in range(20):
        with torch.no_grad():
            model.weight.fill_(float(step))
        short.update_parameters(model)
    assert 14 < float(short.module.weight) < 19


def test_null_trains_without_the_average(tiny, tmp_path):
    cfg = config(tiny, tmp_path, "callbacks.weight_averaging=null", "model.net.rounds=1",
                 "test=false", "trainer.max_epochs=1")  # fmt: skip
    trained = train(cfg)
    ckpt = read_checkpoint(trained.best)
    assert "current_model_state" not in ckpt and "averaging_state" not in ckpt
    for name, value in trained.module.state_dict().items():  # the last step's weights
        assert torch.equal(value, ckpt["state_dict"][name]), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_the_average_still_moves_late_in_low_precision(dtype):
    """The decay is computed in float64: in bfloat16 0.999 rounds to 1 (the average would stop)
    and in float16 the update count overflows past 65,504 (it would turn NaN)."""
    average = warmed_ema(0.999)
    mean, value = torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype)
    for n in (6_000, 100_000):
        moved = average(mean, value, torch.tensor(n))
        assert moved.dtype == dtype and torch.isfinite(moved).all()
        step = 1 - min(0.999, (1 + n) / (10 + n))
        assert float(moved[0]) == pytest.approx(step, rel=0.01)
