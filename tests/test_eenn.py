"""Early-exit networks and their profiles: block costs, the joint exits against a brute-force
count, the per-stage probabilities of the scenario format, the profile file and its checks, and
`python -m chainnet.profile` end to end (reproducible byte for byte)."""

import math

import numpy as np
import pytest
import torch
import yaml
from sklearn.datasets import load_digits
from tests_helpers import ROOT, run_command
from torch import nn

from chainnet.cli.profile import main
from chainnet.eenn.measure import profile_network
from chainnet.eenn.network import MultiExitNetwork, build, digits, train
from chainnet.eenn.profile import Profile, load_profile
from chainnet.parsing import ScenarioError
from chainnet.scenario import Device, Scenario, ServiceChain, Stage

EXAMPLE = ROOT / "examples/profiles/digits.yaml"


def tiny_net() -> MultiExitNetwork:
    """Three dense blocks, an exit after the first, none after the second."""
    torch.manual_seed(0)
    blocks = [
        nn.Sequential(nn.Linear(64, 16), nn.ReLU()),
        nn.Sequential(nn.Linear(16, 16), nn.ReLU()),
        nn.Linear(16, 8),
    ]
    return MultiExitNetwork(blocks, [nn.Linear(16, 10), None, nn.Linear(8, 10)], ["a", "b", "c"])


@pytest.fixture(scope="module")
def tiny_profile():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(60, 64, generator=gen), torch.randint(0, 10, (60,), generator=gen)
    return profile_network(tiny_net(), x, y, [0.0, 0.11, 0.12, 1.0], "tiny", "random", 0)


class Column(nn.Module):
    """A head whose logits are the ones stored for it in the input: outputs we control."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x[:, self.k]


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 2.0, (300, 3, 4))  # jobs, heads (2 exits, final), classes
    y = rng.integers(0, 4, 300)
    logits[0, 0] = [50.0, -50.0, -50.0, -50.0]  # confidence exactly 1: threshold 1 keeps it
    logits[1, 0] = [0.0, 0.0, -800.0, -800.0]  # exactly 0.5: threshold 0.5 keeps it too
    net = MultiExitNetwork([nn.Identity() for _ in range(3)], [Column(k) for k in range(3)])
    grid = [0.0, 0.4, 0.5, 0.6, 0.8, 1.0]
    profile = profile_network(net, torch.as_tensor(logits), torch.as_tensor(y), grid, "toy", "-", 0)
    return logits, y, profile


def test_a_user_model_is_profiled_block_by_block(tiny_profile):
    p = tiny_profile
    assert [b.name for b in p.blocks] == ["a", "b", "c"]
    assert [b.flops for b in p.blocks] == [2 * 64 * 16, 2 * 16 * 16, 2 * 16 * 8]
    assert [b.weight_bytes for b in p.blocks] == [(64 * 16 + 16) * 4, (16 * 16 + 16) * 4, 136 * 4]
    assert [b.activation_bytes for b in p.blocks] == [16 * 4, 16 * 4, 8 * 4]
    assert [(h.name, h.after, h.flops) for h in p.exits] == [("exit1", "a", 2 * 16 * 10)]
    assert (p.final.name, p.final.after, p.final.flops) == ("classifier", "c", 2 * 8 * 10)
    costs = p.stage_costs()  # the head is folded into the block it follows
    assert [c.flops for c in costs] == [2048 + 320, 512, 256 + 160]
    assert [c.weight_bytes for c in costs] == [(1040 + 170) * 4, 272 * 4, (136 + 90) * 4]
    assert [len(p.vectors), p.jobs, p.thresholds] == [4, 60, (0.0, 0.11, 0.12, 1.0)]
    everyone_early, nobody_early = p.vectors[p.find([0.0])], p.vectors[p.find([1.0])]
    assert (everyone_early.fractions, everyone_early.mean_flops) == ((1.0, 0.0), 2368)
    assert (nobody_early.fractions, nobody_early.mean_flops) == ((0.0, 1.0), 2368 + 512 + 416)
    assert nobody_early.accuracy == p.final.accuracy
    assert everyone_early.accuracy == p.exits[0].accuracy


def test_later_exits_see_only_the_jobs_earlier_exits_let_through(toy):
    logits, y, p = toy
    prob = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    confidence, right = prob.max(-1), prob.argmax(-1) == y[:, None]
    assert len(p.vectors) == 36 and (confidence[0, 0], confidence[1, 0]) == (1.0, 0.5)
    for v in p.vectors:
        counts, good = [0, 0, 0], [0, 0, 0]
        for j in range(len(y)):  # one job at a time: the first exit confident enough takes it
            k = next((k for k in range(2) if confidence[j, k] > v.thresholds[k]), 2)
            counts[k] += 1
            good[k] += int(right[j, k])
        assert v.fractions == tuple(c / len(y) for c in counts), v.thresholds
        assert v.accuracies == tuple(g / c if c else None for g, c in zip(good, counts))
        assert v.accuracy == sum(good) / len(y)
        assert math.fsum(v.fractions) == pytest.approx(1.0, abs=1e-12)
    v = p.vectors[p.find([0.6, 0.6])]  # not the marginal share: exit 1 took some confident jobs
    assert v.fractions[1] < (confidence[:, 1] > 0.6).mean()
    assert p.vectors[p.find([0.0, 0.4])].fractions == (1.0, 0.0, 0.0)


def test_per_stage_exit_probabilities_chain_back_to_the_joint_fractions(toy, tiny_profile):
    for p in (toy[2], tiny_profile):
        for i, v in enumerate(p.vectors):
            exits = p.stage_exits(i)
            assert len(exits) == len(p.blocks) and exits[-1] == (0.0, v.accuracies[-1])
            stages = [Stage("d", 1.0, exit_prob=e, exit_accuracy=a) for e, a in exits]
            sc = Scenario([Device("d", capacity=1)], [ServiceChain("c", 1.0, stages)])
            reach = sc.visit_probabilities(sc.chains[0])
            joint = [reach[b] * exits[b][0] for b in p.exit_blocks()] + [reach[-1]]
            assert joint == pytest.approx(v.fractions, abs=1e-12)
            served = sum(r * e * (a or 0.0) for r, (e, a) in zip(reach, exits))
            assert served + reach[-1] * (exits[-1][1] or 0.0) == pytest.approx(v.accuracy)
    tiny = tiny_profile.stage_exits(tiny_profile.find([0.12]))
    assert tiny[1] == (0.0, None)  # block b has no exit


def test_the_profile_file_round_trips_and_its_front_dominates(tiny_profile, toy, tmp_path):
    for p in (tiny_profile, toy[2]):
        path = p.save(tmp_path / f"{p.model}.yaml")
        assert load_profile(path) == p and Profile.from_dict(p.to_dict()) == p
    p = toy[2]
    front = p.front()
    points = [(v.mean_flops, v.accuracy) for v in p.vectors]
    for i, (flops, acc) in enumerate(points):  # every vector is matched or beaten by the front
        assert any(points[j][0] <= flops and points[j][1] >= acc for j in front)
        if i in front:  # and nothing beats a point of the front
            assert not any(f <= flops and a > acc for f, a in points)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d["vectors"][0].update(fractions=[0.9, 0.0]), "sum to 1 (they sum to 0.9)"),
        (lambda d: d.pop("jobs"), ".jobs: got None; required field is missing"),
        (lambda d: d["blocks"][1].update(flops=-1), "blocks[1].flops: got -1; must be >= 0"),
        (lambda d: d.update(exits=[]), ".exits: got []; no exit"),
        (lambda d: d.update(thresholds=[]), "thresholds: got []; the threshold grid is empty"),
        (lambda d: d["exits"][0].update(after="z"), "exits[0].after: got 'z'; the name of a block"),
        (lambda d: d["final"].update(after="a"), "final.after: got 'a'; the last block"),
        (lambda d: d["vectors"][2].update(thresholds=[0.5]), "thresholds[0]: got 0.5; a value"),
        (lambda d: d["vectors"][0]["accuracies"].__setitem__(0, None), "accuracies[0]: got None"),
        (lambda d: d["vectors"][1].update(mean_flops=7.0), "mean_flops: got 7.0; the fractions"),
        (lambda d: d["vectors"][1].update(accuracy=0.01), "vectors[1].accuracy: got 0.01"),
        (lambda d: d["vectors"].append(dict(d["vectors"][0])), "as in vectors[0]"),
        (lambda d: d["blocks"][0].update(flops="many"), "blocks[0].flops: got 'many'; expected a"),
        (lambda d: d.update(extra=1), ".extra: got 1; unknown key"),
    ],
)
def test_a_bad_profile_file_is_one_line_naming_the_field(tiny_profile, tmp_path, edit, expected):
    data = tiny_profile.to_dict()
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as info:
        load_profile(path)
    assert str(info.value).startswith(f"profile {path}.") and expected in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_bad_networks_and_grids_are_refused_with_one_line():
    head, block = nn.Linear(4, 2), nn.Linear(4, 4)
    with pytest.raises(ScenarioError, match=r"heads: got \[None, 'Linear'\]; no exit"):
        MultiExitNetwork([block, nn.Linear(4, 4)], [None, head])
    with pytest.raises(ScenarioError, match=r"heads: got \['Linear', None\]; the last block needs"):
        MultiExitNetwork([block, nn.Linear(4, 4)], [head, None])
    with pytest.raises(ScenarioError, match=r"heads: got \['Linear'\]; one per block \(2\)"):
        MultiExitNetwork([block, block], [head])
    x, y = torch.rand(5, 64), torch.zeros(5, dtype=torch.long)
    for grid, expected in [
        ([], r"thresholds: got \[\]; the threshold grid is empty"),
        ([0.5, 1.5], r"thresholds\[1\]: got 1.5; allowed range is \[0, 1\]"),
        ([0.5, 0.5], "each threshold once"),
    ]:
        with pytest.raises(ScenarioError, match=expected):
            profile_network(tiny_net(), x, y, grid, "tiny", "-", 0)
    with pytest.raises(ScenarioError, match="at most 100,000"):
        profile_network(build("digits_mlp", 0), x, y, [i / 100 for i in range(50)], "m", "-", 0)
    with pytest.raises(ScenarioError, match="epochs: got 0"):
        train(tiny_net(), x, y, epochs=0, batch_size=4, lr=0.01, seed=0)


def test_the_built_in_networks_and_the_digits():
    split = digits(seed=0, test_fraction=0.3)
    assert (len(split.x_train), len(split.x_test)) == (1257, 540)
    assert float(split.x_test.min()) >= 0.0 and float(split.x_test.max()) <= 1.0
    share = np.bincount(load_digits().target) * 0.3  # stratified: each class in its proportion
    assert torch.bincount(split.y_test).tolist() == pytest.approx(share.tolist(), abs=1)
    cnn = profile_network(
        build("digits_cnn", 0), split.x_test[:20], split.y_test[:20], [0.5], "c", "-", 0
    )
    assert cnn.blocks[0].flops == 2 * 4 * 9 * 64 and cnn.blocks[0].activation_bytes == 4 * 16 * 4
    assert [h.after for h in cnn.exits] == ["block1", "block2", "block3"]
    with pytest.raises(ScenarioError, match="network: got 'resnet'; one of digits_cnn, digits_mlp"):
        build("resnet", 0)


def command(tmp_path, monkeypatch, capsys, *args):
    run = f"hydra.run.dir={tmp_path / 'run'}"
    return run_command(main, *args, run, monkeypatch=monkeypatch, capsys=capsys)


def test_the_command_writes_a_reproducible_profile_and_its_plot(tmp_path, monkeypatch, capsys):
    quick = ["epochs=2", "thresholds=[0.0,0.9,1.0]"]
    outs = [tmp_path / "a/p.yaml", tmp_path / "b/p.yaml", tmp_path / "c/p.yaml"]
    for out, seed, plot in zip(outs, (0, 0, 1), ("true", "true", "false")):
        args = [*quick, f"seed={seed}", f"out={out}", f"plot={plot}"]
        code, stdout, _ = command(tmp_path, monkeypatch, capsys, *args)
        assert code == 0
    assert "front:" in stdout and "accuracy of each head" in stdout and str(outs[2]) in stdout
    assert outs[0].read_bytes() == outs[1].read_bytes()  # the same seed: the same file
    assert outs[0].read_bytes() != outs[2].read_bytes()
    assert not outs[2].with_suffix(".png").exists()  # plot=false
    profile = load_profile(outs[0])
    assert profile.model == "digits_cnn" and profile.seed == 0 and profile.jobs == 540
    assert len(profile.vectors) == 3**3 and profile.training["epochs"] == 2
    assert profile.final.accuracy > 0.5
    png = outs[0].with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["thresholds=[]"], "error: thresholds: got []; the threshold grid is empty"),
        (["network=resnet"], "error: network: got 'resnet'; one of digits_cnn, digits_mlp"),
        (["test_fraction=1.5"], "error: test_fraction: got 1.5; the held-out share"),
        (["out=profiles"], "error: out: got"),
        (["epochs=0"], "error: epochs: got 0; must be an integer >= 1"),
    ],
)
def test_bad_command_input_is_one_line(tmp_path, monkeypatch, capsys, args, expected):
    (tmp_path / "profiles").mkdir()
    monkeypatch.chdir(tmp_path)
    code, _, err = command(tmp_path, monkeypatch, capsys, *args)
    assert code == 2 and err.strip().splitlines() == [err.strip()] and expected in err, err


def test_the_example_profile_is_the_commands_default():
    profile = load_profile(EXAMPLE)
    defaults = yaml.safe_load((ROOT / "conf/profile.yaml").read_text())
    assert (profile.model, profile.seed) == (defaults["network"], defaults["seed"])
    for key in ("epochs", "batch_size", "lr", "test_fraction"):
        assert profile.training[key] == defaults[key], key
    assert list(profile.thresholds) == defaults["thresholds"]
    assert len(profile.vectors) == len(defaults["thresholds"]) ** len(profile.exits)
    assert profile.final.accuracy > profile.exits[0].accuracy
