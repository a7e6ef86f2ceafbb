"""The baselines (`chainnet.optim.baselines`): exit last, a fixed threshold, TC'23's queueing policy
and the load-unaware placement, as functions and as strategies of `python -m chainnet.optimize`."""

import json

import numpy as np
import pytest
import yaml
from tests_helpers import ROOT, run_command

from chainnet.cli.optimize import main as optimize_main
from chainnet.optim.baselines import (
    BASELINES,
    BaselineSettings,
    blocking,
    exit_last,
    exit_mixture,
    fixed_threshold,
    load_problem,
    load_unaware_placement,
    mix_lp,
    plan,
    service_loss,
    tc23_policy,
)
from chainnet.optim.problem import Problem
from chainnet.optim.space import SearchSpace
from chainnet.queueing import exact as q

DIGITS = ROOT / "examples/problem_digits.yaml"
SMALL = ROOT / "examples/problem_small.yaml"
FAST = ["simulator.max_arrivals=20000", "progress=false"]


@pytest.fixture(scope="module")
def digits() -> SearchSpace:
    return SearchSpace(load_problem(DIGITS))


def one_device(rate: float = 2.0, capacity: int = 4, discipline: str = "fcfs") -> SearchSpace:
    """One service of two fragments on one device; the first has an exit table."""
    return SearchSpace(
        Problem.from_dict(
            {
                "name": "toy",
                "devices": [{"name": "d", "speed": 2.0, "capacity": capacity,
                             "discipline": discipline}],
                "services": [{"name": "s", "arrival_rate": rate, "fragments": [
                    {"name": "a", "work": 0.4, "exit": [
                        {"threshold": 0.9, "exit_prob": 0.2, "accuracy": 0.9},
                        {"threshold": 0.5, "exit_prob": 0.7, "accuracy": 0.7},
                        {"threshold": 1.0, "exit_prob": 0.0, "accuracy": 0.0},
                    ]},
                    {"name": "b", "work": 1.2, "distribution": "exp", "accuracy": 0.95},
                ]}],
                "objective": {"kind": "max_accuracy", "max_loss": 0.1},
            }
        )
    )  # fmt: skip


def test_exit_last_lets_no_job_leave_early(digits):
    c = exit_last(digits, load_unaware_placement(digits))
    scenario = digits.scenario(c)
    assert all(st.exit_prob == 0 for ch in scenario.chains for st in ch.stages)
    assert digits.describe(c)["vectors"] == {"mail": [1.0] * 3, "forms": [1.0] * 3}
    toy = one_device()
    assert toy.describe(exit_last(toy, load_unaware_placement(toy)))["thresholds"] == {"s/a": 1.0}


def test_fixed_threshold_picks_that_threshold_or_the_nearest(digits):
    c = fixed_threshold(digits, load_unaware_placement(digits), 0.8)
    assert digits.describe(c)["vectors"] == {"mail": [0.8] * 3, "forms": [0.8] * 3}
    c = fixed_threshold(digits, load_unaware_placement(digits), 0.93)  # the profile has 0.95
    assert digits.describe(c)["vectors"]["mail"] == [0.95] * 3
    toy = one_device()
    for t, row in ((0.5, 0.5), (0.6, 0.5), (0.8, 0.9)):
        c = fixed_threshold(toy, load_unaware_placement(toy), t)
        assert toy.describe(c)["thresholds"] == {"s/a": row}


def test_load_unaware_puts_each_fragment_on_the_fastest_device_that_fits(digits):
    c = load_unaware_placement(digits)
    assert digits.feasible(c)
    placement = digits.describe(c)["placement"]
    # box2 (speed 2.5) holds mail's blocks 2-4; forms' then go to box1 (1.5), and its block4,
    # too big for what box1 has left, to box3 (1.0); the gateway keeps both block1s
    mail = ["gateway", "box2", "box2", "box2"]
    assert [placement[f"mail/block{k}"] for k in (1, 2, 3, 4)] == mail
    assert [placement[f"forms/block{k}"] for k in (1, 2, 3, 4)] == [
        "gateway", "box1", "box1", "box3"
    ]  # fmt: skip
    # every fragment is on the fastest device where it fitted beside those placed before
    speeds = [d.speed for d in digits.problem.devices]
    dev = digits.device_of(c)
    for g in np.flatnonzero(digits.movable):
        for faster in (d for d in range(len(speeds)) if speeds[d] > speeds[dev[g]]):
            trial = c.copy()
            trial[g] = faster
            later = np.arange(digits.n_placement) > g
            trial[: digits.n_placement][later & digits.movable] = dev[g]  # out of the way
            weights = digits.weights[(digits.device_of(trial) == faster) & ~later]
            assert weights.sum() > digits.ram[faster] - 1.0  # no room for it and one job


def test_the_lp_mixes_two_choices_at_the_loss_limit():
    # accurate but lossy (0.95, loss 0.2) and cheap (0.8, loss 0): at a limit of 0.05 the mix
    # puts w on the first with 0.2 w = 0.05, w = 0.25
    w = mix_lp(np.array([0.95, 0.8]), np.array([0.2, 0.0]), 0.05)
    assert w == pytest.approx([0.25, 0.75])
    assert mix_lp(np.array([0.95, 0.8]), np.array([0.2, 0.0]), 0.5) == pytest.approx([1, 0])
    assert mix_lp(np.array([0.95, 0.8]), np.array([0.2, 0.1]), 0.05) is None  # none meets it


def test_the_blocking_step_is_chainnet_queueing():
    assert blocking(1.5, 0.5, 0.3, 5) == q.macgregor_smith_loss(0.75, 5, 0.3)
    # undefined for deterministic service at rho >= 4: the exact M/D/1/K chain
    assert blocking(10.0, 0.5, 0.0, 5) == q.md1k(10.0, 0.5, 5).loss_ratio
    assert blocking(1.5, 0.5, 0.3, 5, ps=True) == pytest.approx(q.mm1k(1.5, 2.0, 5).loss_ratio)
    assert blocking(0.0, 0.5, 0.3, 5) == 0.0


def test_tc23_service_time_is_the_mixture_of_the_exit_stages():
    toy = one_device(rate=2.0, capacity=4)
    c = load_unaware_placement(toy)
    c[toy.n_placement] = 0  # exit_prob 0.2 after a
    share, acc = exit_mixture(toy, c, 0)
    assert share == pytest.approx([0.2, 0.8]) and acc == pytest.approx(0.2 * 0.9 + 0.8 * 0.95)
    ta, tb = 0.4 / 2.0, 1.2 / 2.0  # a: det; b: exp (variance tb**2)
    mean = 0.2 * ta + 0.8 * (ta + tb)
    second = 0.2 * ta**2 + 0.8 * ((ta + tb) ** 2 + tb**2)
    expected = q.macgregor_smith_loss(2.0 * mean, 4, second / mean**2 - 1.0)
    assert service_loss(toy, c, 0, share) == pytest.approx(expected)


def test_tc23_deploys_the_most_accurate_choice_of_its_mix_within_the_limit():
    toy = one_device(rate=1.0, capacity=4)  # losses: 0.069 (0.9), 0.016 (0.5), 0.097 (1.0)
    c, records = tc23_policy(toy, load_unaware_placement(toy), 0.08)
    r = records["s"]
    losses = {m["choice"]: m["predicted_loss"] for m in r["mix"]}
    assert r["lp_feasible"] and sum(m["weight"] for m in r["mix"]) == pytest.approx(1.0)
    assert sum(m["weight"] * m["predicted_loss"] for m in r["mix"]) == pytest.approx(0.08)
    assert set(losses) == {0.9, 1.0}  # the upper hull at 0.08: exit at 0.9, or no exit
    assert r["chosen"] == 0.9 and r["predicted_loss"] <= 0.08
    assert toy.describe(c)["thresholds"] == {"s/a": r["chosen"]}
    # a limit no choice meets: the least loss
    c, records = tc23_policy(toy, load_unaware_placement(toy), 0.0)
    assert not records["s"]["lp_feasible"] and records["s"]["chosen"] == 0.5


@pytest.mark.parametrize("policy", BASELINES)
def test_each_baseline_runs_through_the_optimize_command(policy, tmp_path, monkeypatch, capsys):
    run = tmp_path / policy
    args = [f"problem={DIGITS}", "scorer=simulator", f"strategy={policy}", "budget_evals=3"]
    code, out, err = run_command(
        optimize_main, *args, *FAST, f"hydra.run.dir={run}", monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 0, err
    result = json.loads((run / "result.json").read_text())
    assert result["strategy"] == policy and result["scored"] == 1
    assert result["complete"] is False  # one deployment proposed, not the space used up
    assert result["baseline"]["policy"] == policy and f"baseline {policy}" in out
    space = SearchSpace(load_problem(DIGITS))
    expected = space.describe(plan(space, policy).candidate)
    assert result["placement"] == expected["placement"]
    assert result["vectors"] == expected["vectors"]
    if policy == "tc23":
        assert result["baseline"]["max_loss"] == 0.05  # the problem's
        assert set(result["baseline"]["services"]) == {"mail", "forms"}


def test_bad_baseline_inputs_are_one_line(tmp_path, monkeypatch, capsys):
    bare = yaml.safe_load(SMALL.read_text())
    for sv in bare["services"]:
        for fr in sv["fragments"]:
            fr.pop("exit", None)
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(bare))
    cases = [
        ([f"problem={DIGITS}", "strategy=fixed_threshold", "baseline.threshold=1.5"],
         "baseline.threshold: got 1.5"),
        ([f"problem={DIGITS}", "strategy=fixed_threshold", "baseline.threshold=0"],
         "baseline.threshold: got 0"),
        ([f"problem={DIGITS}", "strategy=tc23", "baseline.max_loss=1.0"],
         "baseline.max_loss: got 1.0"),
        ([f"problem={path}", "strategy=exit_last"], "strategy=exit_last: problem problem_small"),
        ([f"problem={path}", "strategy=tc23"], "has no early exit"),
        ([f"problem={SMALL}", "strategy=exit_last"], "classify/stem has no exit choice"),
        ([f"problem={DIGITS}", "strategy=tc23", "scorer=hybrid"], "is a baseline"),
    ]  # fmt: skip
    for args, message in cases:
        run = f"hydra.run.dir={tmp_path / 'run'}"
        code, _, err = run_command(
            optimize_main, *args, "scorer=simulator" if "scorer=hybrid" not in args else "seed=0",
            "budget_evals=1", *FAST, run, monkeypatch=monkeypatch, capsys=capsys,
        )  # fmt: skip
        lines = [x for x in err.splitlines() if x.startswith("error:")]
        assert code == 2 and len(lines) == 1 and message in lines[0], (args, err)
    with pytest.raises(ValueError, match="baseline.max_loss"):
        BaselineSettings(max_loss=-0.1)
    with pytest.raises(ValueError, match="a baseline is one of"):
        plan(SearchSpace(load_problem(DIGITS)), "anneal")


def test_tc23_models_a_spread_service_on_its_bottleneck_device():
    """a on d1, b on d2, whose memory left after b's weights (2) holds one job of 1.5: the queue
    at d2 (K = 1) loses more than d1's, so it gives the loss."""
    space = SearchSpace(
        Problem.from_dict(
            {
                "devices": [{"name": "d1", "speed": 2.0, "capacity": 4},
                            {"name": "d2", "speed": 2.0, "capacity": 8, "ram": 10}],
                "services": [{"name": "s", "arrival_rate": 1.0, "fragments": [
                    {"name": "a", "work": 0.4, "exit": [{"threshold": 0.9, "exit_prob": 0.2}]},
                    {"name": "b", "work": 1.2, "memory": 8, "job_memory": 1.5},
                ]}],
            }
        )
    )  # fmt: skip
    c = np.array([0, 1, 0])
    share, _ = exit_mixture(space, c, 0)
    expected = 0.8 * blocking(0.8, 0.6, 0.0, 1)  # the jobs that reach b, one at a time
    assert expected > blocking(1.0, 0.2, 0.0, 4)  # more than at d1
    assert service_loss(space, c, 0, share) == pytest.approx(expected)
