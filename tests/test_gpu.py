"""Models on other devices: every tensor a forward makes follows the batch (checked on the CPU),
and, where there is a CUDA GPU, training with trainer=gpu and scoring there as on the CPU."""

import numpy as np
import pytest
import torch
from conftest import train_config
from hydra import compose, initialize_config_dir
from tests_helpers import ROOT, random_scenario
from torch_geometric.data import Batch

from chainnet.cli.common import CONF
from chainnet.cli.train import train
from chainnet.learn.averaging import WeightEMA
from chainnet.learn.features import scenario_graph
from chainnet.learn.module import QoSModule
from chainnet.learn.surrogate import Surrogate
from chainnet.scenario import Scenario

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU here (torch.cuda.is_available() is False)"
)
# Compared where the GPU and the CPU may round differently; loss_ratio = 1 - throughput_ratio is
# left out (near 0, a relative comparison of it is meaningless).
COMPARED = ["throughput", "response_time", "accuracy", "throughput_ratio", "response_ratio"]
KINDS = ["dsn24", "exp_fcfs", "general_ps", "mixed_memory_regions", "exits", "dsn24"]


@pytest.mark.parametrize("model", ["chainnet_gin", "chainnet_gat", "gin", "mlp"])
def test_every_tensor_of_a_forward_follows_the_batch_not_the_default_device(model):
    """With the default device elsewhere ("meta": tensors without data), a forward on a CPU batch
    gives the same outputs: a tensor made without `device=` would land there and change them. On
    a GPU such a tensor would be on the CPU, beside a batch on the GPU."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={model}", "model.net.hidden=8"])
    module = QoSModule(cfg.model.net, cfg.model.optimizer)
    graphs = [scenario_graph(random_scenario(kind, seed)) for seed, kind in enumerate(KINDS)]
    module.net.normalizer.fit(graphs)
    batch = Batch.from_data_list(graphs)
    net = module.net.eval()
    with torch.no_grad():
        expected = net(batch)
        with torch.device("meta"):
            got = net(batch)
    for want, out in zip(expected, got):  # outputs, pass probabilities, fixed-point runs
        if isinstance(want, torch.Tensor):
            assert out.device.type == "cpu" and torch.equal(out, want)
        else:
            assert out == want


@needs_cuda
def test_trains_with_trainer_gpu_and_scores_on_the_gpu_as_on_the_cpu(tiny, tmp_path):
    cfg = train_config(
        tiny, tmp_path, "trainer=gpu", "trainer.max_epochs=1", "model.net.rounds=1", "test=false"
    )
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "32-true"
    best = train(cfg).best
    scenarios = [Scenario.load(ROOT / "examples/edge_small.yaml"), random_scenario("exits", 3)]
    on_gpu = Surrogate.load(best, device="cuda")
    assert on_gpu.device.type == "cuda"
    gpu = on_gpu.predict(scenarios)
    cpu = Surrogate.load(best).predict(scenarios)
    assert np.isfinite(gpu["throughput"]).all()
    for column in COMPARED:
        np.testing.assert_allclose(gpu[column], cpu[column], rtol=1e-4, err_msg=column)


@needs_cuda
def test_the_weights_average_follows_the_module_to_the_gpu(tiny, tmp_path, monkeypatch):
    """The average is built before the module moves to the GPU; it must follow it there, or every
    step would copy the weights to the CPU and average them there."""
    seen = []
    update = WeightEMA.on_train_batch_end

    def spy(self, trainer, pl_module, *args):
        seen.append({p.device.type for p in self._average_model.parameters()})
        return update(self, trainer, pl_module, *args)

    monkeypatch.setattr(WeightEMA, "on_train_batch_end", spy)
    cfg = train_config(
        tiny, tmp_path, "trainer=gpu", "trainer.max_epochs=1", "model.net.rounds=1", "test=false"
    )
    train(cfg)
    assert seen and all(devices == {"cuda"} for devices in seen)
