"""The weights' moving average: what validation, checkpoints and a resumed run see."""

import pytest
import torch
from conftest import train_config as config
from torch.optim.swa_utils import AveragedModel
from torch_geometric.loader import DataLoader

from chainnet.cli.train import build, train
from chainnet.learn.averaging import WeightEMA, warmed_ema
from chainnet.learn.data import QoSDataset
from chainnet.learn.intervals import nonconformity, scenario_max_load
from chainnet.learn.module import QoSModule

# the default callbacks average the weights; a faster decay for runs of a few steps
EMA = "callbacks.weight_averaging.decay=0.9"


@pytest.fixture(scope="module")
def ema_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("ema_run")
    cfg = config(tiny, out, EMA, "model.net.rounds=1")
    return train(cfg), out


def test_checkpoints_hold_the_average_and_the_weights_being_trained(ema_run):
    trained, out = ema_run
    ckpt = torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
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


def test_the_intervals_are_calibrated_on_the_averages_residuals(tiny, ema_run):
    """The last checkpoint's intervals are those of its own (averaged) weights' validation
    residuals, as without averaging."""
    _, out = ema_run
    module = QoSModule.load_from_checkpoint(out / "checkpoints/last.ckpt", weights_only=True)
    module.eval()
    scores, loads = [], []
    with torch.no_grad():
        for batch in DataLoader(QoSDataset(tiny, "val"), batch_size=8):
            pred = module(batch)[0]
            scores.append(nonconformity(pred, batch["chain"].y))
            loads.append(scenario_max_load(batch))
    refit = type(module.intervals)().fit(torch.cat(scores), torch.cat(loads).numpy())
    assert torch.allclose(refit.half_width, module.intervals.half_width, rtol=1e-6, atol=1e-9)
    assert torch.equal(refit.count, module.intervals.count)


def test_a_run_resumes_its_average(tiny, ema_run, tmp_path):
    _, out = ema_run
    last = out / "checkpoints/last.ckpt"
    cfg = config(tiny, tmp_path, EMA, "model.net.rounds=1", "test=false", "trainer.max_epochs=3",
                 f"ckpt_path={last}")  # fmt: skip
    train(cfg)
    before = torch.load(last, map_location="cpu", weights_only=True)
    after = torch.load(tmp_path / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert after["epoch"] == before["epoch"] + 1
    # the saved average went on for one more epoch's steps, rather than restarting from the weights
    steps = after["global_step"] - before["global_step"]
    assert steps > 0
    n_before = int(before["averaging_state"]["n_averaged"])
    assert int(after["averaging_state"]["n_averaged"]) == n_before + steps


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
    ckpt = torch.load(trained.best, map_location="cpu", weights_only=True)
    assert "current_model_state" not in ckpt and "averaging_state" not in ckpt
    for name, value in trained.module.state_dict().items():  # the last step's weights
        assert torch.equal(value, ckpt["state_dict"][name]), name
