"""Mixed policies (`chainnet.optim.mix`): a service's jobs split between alternatives, each a
(placement, exit choice) pair, with probabilities the optimizer chooses; their genes, scenarios,
memory, QoS, search, report, the TC'23 baseline's mix, and bad input in one line."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_batch_graphs import assert_fast_path_is_decoding, candidates
from tests_helpers import ROOT, run_command

from chainnet.cli.optimize import main as optimize_main
from chainnet.learn.models.chainnet import ChainNet
from chainnet.learn.surrogate import Surrogate
from chainnet.optim.baselines import (
    BaselineSettings,
    load_problem,
    load_unaware_placement,
    plan,
    tc23_policy,
)
from chainnet.optim.batch_graphs import CandidateGraphs, predict_candidates
from chainnet.optim.mix import round_to_grid, service_arrays, service_frame, share_grid
from chainnet.optim.objective import objective_value
from chainnet.optim.problem import Problem
from chainnet.optim.scorers import SimulatorScorer, SurrogateScorer
from chainnet.optim.search import run_search
from chainnet.optim.space import SearchSpace
from chainnet.parsing import ScenarioError
from chainnet.scenario import Scenario
from chainnet.sim import SimulatorSettings, make_engine

DIGITS = ROOT / "examples/problem_digits.yaml"
DIGITS_MIX = ROOT / "examples/problem_digits_mix.yaml"
SMALL = ROOT / "examples/problem_small.yaml"
FAST = ["simulator.max_arrivals=20000", "progress=false"]


def two_boxes(alternatives: int = 2, rate: float = 1.6, **mix) -> dict:
    """One service of one fragment, two equal devices: all its jobs on one device overload it
    (load 1.6), half on each does not (0.8 each)."""
    return {
        "name": "boxes",
        "devices": [{"name": "a", "speed": 1.0, "capacity": 4, "ram": 100},
                    {"name": "b", "speed": 1.0, "capacity": 4, "ram": 100}],
        "services": [{"name": "s", "arrival_rate": rate, "alternatives": alternatives, **mix,
                      "fragments": [{"name": "net", "work": 1.0, "memory": 60,
                                     "job_memory": 5, "distribution": "exp",
                                     "accuracy": 0.9}]}],
        "objective": {"kind": "min_loss"},
    }  # fmt: skip


def candidate(space: SearchSpace, devices: list[int], row: int) -> np.ndarray:
    """The placement genes `devices` (alternative after alternative) and share row `row`."""
    c = np.zeros(len(space.domains), dtype=np.int64)
    c[: space.n_placement] = devices
    c[space.n_decisions] = row
    return c


def simulate(space: SearchSpace, c: np.ndarray, seed: int = 1) -> pd.DataFrame:
    settings = SimulatorSettings(max_arrivals=200_000, precision=0.01)
    res = make_engine(space.scenario(c), seed, settings, "fast").run()
    return service_frame(space.problem, res.chain_frame())


# ---- genes and grids ----------------------------------------------------------------------------
def test_the_share_grid_is_every_split_once():
    assert share_grid(2, 0.25).tolist() == [[1, 0], [0.75, 0.25], [0.5, 0.5]]
    grid = share_grid(3, 0.25)
    assert grid[0].tolist() == [1, 0, 0] and len(grid) == 4  # 1 | .75 .25 | .5 .5 | .5 .25 .25
    assert np.allclose(grid.sum(1), 1) and (np.diff(grid, axis=1) <= 0).all()
    assert len({tuple(r) for r in share_grid(4, 0.1)}) == len(share_grid(4, 0.1))
    assert share_grid(2, 0.25, (0.3, 0.7)).tolist() == [[0.3, 0.7]]  # fixed by hand
    # the LP's weights on the grid: largest remainders, summing to 1
    assert round_to_grid(np.array([0.62, 0.38]), 0.25).tolist() == [0.5, 0.5]
    assert round_to_grid(np.array([0.7, 0.2, 0.1]), 0.25).tolist() == [0.75, 0.25, 0.0]
    assert round_to_grid(np.array([0.9, 0.1]), 0.1).tolist() == [0.9, 0.1]


@pytest.mark.parametrize("path", [DIGITS, SMALL])
def test_one_alternative_is_exactly_the_old_problem(path):
    """`alternatives: 1` (the default) changes neither the genes nor the scenarios, and the
    problem file written back has no mix fields."""
    plain = Problem.load(path)
    d = plain.to_dict()
    assert not any("alternatives" in sv or "share_step" in sv for sv in d["services"])
    for sv in d["services"]:
        sv["alternatives"] = 1
    explicit = Problem.from_dict(d, base=path.parent)
    assert explicit == plain
    space = SearchSpace(plain)
    assert not space.mixed and not space.share_genes
    n_frag = sum(len(sv.fragments) for sv in plain.services)
    assert len(space.domains) == n_frag + len(space.exit_genes) == space.n_decisions
    rng = np.random.default_rng(0)
    for _ in range(10):
        c = space.random_candidate(rng)
        sc = space.scenario(c)
        assert [ch.name for ch in sc.chains] == [sv.name for sv in plain.services]
        assert [ch.arrival_rate for ch in sc.chains] == [sv.arrival_rate for sv in plain.services]
        assert SearchSpace(explicit).scenario(c) == sc
        assert "alternatives" not in space.describe(c)


def test_alternatives_copy_the_genes_and_add_one_share_gene():
    plain, mixed = SearchSpace(Problem.load(DIGITS)), SearchSpace(Problem.load(DIGITS_MIX))
    mail = len(plain.problem.services[0].fragments)
    # mail's placement genes twice, its threshold gene twice, then the share gene
    assert mixed.n_placement == plain.n_placement + mail
    assert len(mixed.exit_genes) == len(plain.exit_genes) + 1
    assert len(mixed.domains) == len(plain.domains) + mail + 2
    assert mixed.domains[-1] == 3 and mixed.share_genes[0].service == 0
    assert [e.alternative for e in mixed.exit_genes] == [0, 1, 0]


def test_decoding_gives_routes_with_the_chosen_probabilities():
    space = SearchSpace(Problem.from_dict(two_boxes(alternatives=3, share_step=0.25)))
    rows = space.share_genes[0].shares.tolist()
    assert rows == [[1, 0, 0], [0.75, 0.25, 0], [0.5, 0.5, 0], [0.5, 0.25, 0.25]]
    for r, shares in enumerate(rows):
        sc = space.scenario(candidate(space, [0, 1, 1], r))
        deployed = [(a, p) for a, p in enumerate(shares) if p > 0]
        if len(deployed) == 1:  # one alternative has it all: a plain chain
            assert [(ch.name, ch.arrival_rate) for ch in sc.chains] == [("s", 1.6)]
            continue
        assert [ch.name for ch in sc.chains] == [f"s/r{a}" for a, _ in deployed]
        assert [ch.arrival_rate for ch in sc.chains] == [p * 1.6 for _, p in deployed]
        assert {ch.service for ch in sc.chains} == {"s"}
        assert [ch.stages[0].device for ch in sc.chains] == [
            ["a", "b", "b"][a] for a, _ in deployed
        ]
        assert Scenario.from_yaml(sc.to_yaml()) == sc  # a scenario file says the same
    # a scenario file's routes of one service read as the same chains
    routes = {"name": "s", "arrival_rate": 1.6, "routes": [
        {"prob": 0.5, "stages": [{"device": "a", "work": 1.0, "distribution": "exp",
                                  "job_memory": 5, "exit_accuracy": 0.9, "fragment": "net"}]},
        {"prob": 0.5, "stages": [{"device": "b", "work": 1.0, "distribution": "exp",
                                  "job_memory": 5, "exit_accuracy": 0.9, "fragment": "net"}]},
    ]}  # fmt: skip
    sc = space.scenario(candidate(space, [0, 1, 1], 2))
    read = Scenario.from_dict({**sc.to_dict(), "chains": [routes]})
    assert read.chains == sc.chains


def test_the_description_shows_each_alternative():
    space = SearchSpace(Problem.load(DIGITS_MIX))
    c = space.random_candidate(np.random.default_rng(3))
    c[space.n_decisions] = 1  # 0.75 / 0.25
    c = space.repair(c, None)
    d = space.describe(c)
    alts = d["alternatives"]["mail"]
    assert [a["share"] for a in alts] == [0.75, 0.25] and [a["alternative"] for a in alts] == [0, 1]
    for a in alts:
        assert set(a["placement"]) == {f"mail/block{k}" for k in range(1, 5)}
        assert len(a["vector"]) == 3
    assert "mail" not in d["vectors"] and "forms" in d["vectors"]
    assert not any(k.startswith("mail/") for k in d["placement"])
    c[space.n_decisions] = 0  # all on the first: the second is not shown
    assert [a["alternative"] for a in space.describe(c)["alternatives"]["mail"]] == [0]


# ---- memory: a fragment held for several alternatives is held once ------------------------------
def test_a_device_holds_a_fragment_once_for_all_its_alternatives():
    """RAM 100 holds the weights (60) once, not twice: both alternatives on one device fit, and
    an alternative with share 0 holds nothing."""
    space = SearchSpace(Problem.from_dict(two_boxes()))
    same = candidate(space, [0, 0], 2)  # 50/50, both on device a
    weights, job = space.memory_use(same)
    assert weights.tolist() == [60, 0] and job.tolist() == [5, 0] and space.feasible(same)
    assert space.scenario(same).devices[0].memory == 40  # RAM less the weights held once
    split = candidate(space, [0, 1], 2)
    assert space.memory_use(split)[0].tolist() == [60, 60]
    unused = candidate(space, [0, 1], 0)  # the second alternative has share 0
    assert space.memory_use(unused)[0].tolist() == [60, 0]
    assert space.scenario(unused).devices[1].memory is None  # hosts nothing
    # two different fragments do not share: 60 + 60 > 100 on one device
    d = two_boxes()
    d["services"].append(copy.deepcopy(d["services"][0]) | {"name": "t", "alternatives": 1})
    space = SearchSpace(Problem.from_dict(d))
    c = np.zeros(len(space.domains), dtype=np.int64)
    c[space.n_decisions] = 2
    assert not space.feasible(c)  # s (both alternatives) and t all on a
    assert space.feasible(space.repair(c, None))


# ---- QoS of a mix: simulated, per service ------------------------------------------------------
def test_a_mix_of_two_identical_alternatives_is_the_pure_deployment():
    space = SearchSpace(Problem.from_dict(two_boxes(rate=0.7)))
    pure = simulate(space, candidate(space, [0, 0], 0))
    mix = simulate(space, candidate(space, [0, 0], 2))  # 50/50, both alternatives on a
    assert list(mix["chain"]) == ["s"] and mix["arrival_rate"].tolist() == [0.7]
    for key, tol in (("throughput", 0.03), ("loss_ratio", 0.02), ("response_time", 0.15)):
        assert mix[key].iloc[0] == pytest.approx(pure[key].iloc[0], abs=tol), key
    assert mix["accuracy"].iloc[0] == pytest.approx(0.9)


def test_service_qos_aggregates_routes_by_rate_and_throughput():
    chains = pd.DataFrame({
        "chain": ["s/r0", "s/r1", "t"], "service": ["s", "s", "t"],
        "arrival_rate": [3.0, 1.0, 2.0], "throughput": [2.4, 1.0, 1.5],
        "loss_ratio": [0.2, 0.0, 0.25], "response_time": [2.0, 1.0, 0.3],
        "accuracy": [0.9, 0.7, 0.8], "loss_ratio_hw": [0.02, 0.04, 0.01],
    })  # fmt: skip
    problem = Problem.from_dict({**two_boxes(), "services": [
        {"name": "s", "arrival_rate": 4.0, "fragments": [{"work": 1.0}]},
        {"name": "t", "arrival_rate": 2.0, "fragments": [{"work": 1.0}]}]})  # fmt: skip
    out = service_frame(problem, chains)
    assert out["chain"].tolist() == ["s", "t"]
    s, t = out.iloc[0], out.iloc[1]
    assert s["throughput"] == pytest.approx(3.4)
    assert s["loss_ratio"] == pytest.approx((3 * 0.2 + 1 * 0.0) / 4)
    assert s["response_time"] == pytest.approx((2.4 * 2.0 + 1.0 * 1.0) / 3.4)
    assert s["accuracy"] == pytest.approx((2.4 * 0.9 + 1.0 * 0.7) / 3.4)
    # a half-width as its quantity: at most the weighted mean of the routes' (the judge's)
    assert s["loss_ratio_hw"] == pytest.approx((3 * 0.02 + 1 * 0.04) / 4)
    assert out.iloc[1]["loss_ratio_hw"] == 0.01
    assert t[["throughput", "loss_ratio", "response_time", "accuracy"]].tolist() == [
        1.5,
        0.25,
        0.3,
        0.8,
    ]  # fmt: skip  (one chain: its values exactly)
    plain = chains.iloc[2:].reset_index(drop=True)
    assert service_frame(problem, plain) is plain  # no routes: the frame itself


def test_splitting_the_load_beats_both_pure_deployments():
    """All jobs on one device overload it; the search (simulator scorer, 12 candidates: every
    one) finds the split between the two devices, which loses far fewer jobs."""
    space = SearchSpace(Problem.from_dict(two_boxes()))
    scorer = SimulatorScorer(space, SimulatorSettings(max_arrivals=60_000), seed=2)
    pure = [scorer.score([candidate(space, [d, d], 0)])[0] for d in (0, 1)]
    split = scorer.score([candidate(space, [0, 1], 2)])[0]
    assert split.objective < min(p.objective for p in pure) - 0.1
    result = run_search(space, scorer, "exhaustive", None, budget_evals=20)
    best, score = result.top(1)[0]
    assert space.shares_of(best, 0).tolist() == [0.5, 0.5] and best[0] != best[1]
    assert score.objective < min(p.objective for p in pure) - 0.1
    assert len(score.services) == 1 and score.services["service"].tolist() == ["s"]


# ---- the fast path: a chain per deployed alternative, predictions per service ------------------
def mixed_spaces() -> dict[str, SearchSpace]:
    small = Problem.load(SMALL).to_dict()
    small["services"][0] |= {"alternatives": 3, "share_step": 0.5}  # exit tables, copied
    extreme = two_boxes(alternatives=2, rate=1e40, share_step=0.1)  # rates outside [TINY, HUGE]
    return {
        "digits_mix": SearchSpace(Problem.load(DIGITS_MIX)),
        "small_mix": SearchSpace(Problem.from_dict(small)),
        "boxes": SearchSpace(Problem.from_dict(two_boxes(alternatives=4, share_step=0.25))),
        "huge_rate": SearchSpace(Problem.from_dict(extreme)),
    }


@pytest.mark.parametrize("kind", ["digits_mix", "small_mix", "boxes", "huge_rate"])
def test_the_graph_of_mixed_genes_is_the_graph_of_their_routes(kind):
    space = mixed_spaces()[kind]
    scenarios = assert_fast_path_is_decoding(space, candidates(space, 40, seed=4))
    counts = {len(sc.chains) for sc in scenarios}
    assert len(counts) > 1  # candidates with one chain for a service, and with several


def test_the_surrogate_scores_a_mix_per_service():
    space = mixed_spaces()["digits_mix"]
    genes = candidates(space, 24, seed=5)
    torch.manual_seed(0)
    surrogate = Surrogate(ChainNet(hidden=8, rounds=1))
    fast = predict_candidates(surrogate, CandidateGraphs(space), genes, level=None)
    scenarios = [space.scenario(c) for c in genes]
    slow = service_arrays(space.problem, scenarios, surrogate.predict_arrays(scenarios))
    assert len(fast["loss_ratio"]) == 2 * len(genes)  # one entry per service
    for key in slow:
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)
    # a service's entry: its routes' QoS aggregated (arrival-weighted loss, summed throughput)
    arrays = surrogate.predict_arrays(scenarios)
    i = next(i for i, sc in enumerate(scenarios) if len(sc.chains) == 3)
    chains = np.flatnonzero(arrays["scenario"] == i)[:2]  # mail's two routes
    rates = np.array([scenarios[i].chains[k].arrival_rate for k in range(2)])
    assert fast["throughput"][2 * i] == pytest.approx(arrays["throughput"][chains].sum())
    assert fast["loss_ratio"][2 * i] == pytest.approx(
        np.sum(rates * arrays["loss_ratio"][chains]) / rates.sum()
    )
    scorer = SurrogateScorer(space, surrogate)
    scores = scorer.score(list(genes[:3]), keep=True)
    assert scores[0].services["service"].tolist() == ["mail", "forms"]
    obj = objective_value(space.problem, fast["loss_ratio"][:2], fast["accuracy"][:2])[0]
    assert scores[0].objective == obj


# ---- TC'23: the LP's mix deployed where the service has the alternatives ------------------------
def toy(alternatives: int, step: float = 0.25) -> SearchSpace:
    """One service of two fragments on one device, the first with an exit table (the toy of
    tests/test_baselines.py)."""
    return SearchSpace(Problem.from_dict({
        "name": "toy",
        "devices": [{"name": "d", "speed": 2.0, "capacity": 4}],
        "services": [{"name": "s", "arrival_rate": 1.0, "alternatives": alternatives,
                      "share_step": step, "fragments": [
            {"name": "a", "work": 0.4, "exit": [
                {"threshold": 0.9, "exit_prob": 0.2, "accuracy": 0.9},
                {"threshold": 0.5, "exit_prob": 0.7, "accuracy": 0.7},
                {"threshold": 1.0, "exit_prob": 0.0, "accuracy": 0.0}]},
            {"name": "b", "work": 1.2, "distribution": "exp", "accuracy": 0.95}]}],
        "objective": {"kind": "max_accuracy", "max_loss": 0.1},
    }))  # fmt: skip


def test_tc23_deploys_its_mix_when_the_service_has_alternatives():
    one = toy(1)
    c1, r1 = tc23_policy(one, load_unaware_placement(one), 0.08)
    weights = {m["choice"]: m["weight"] for m in r1["s"]["mix"]}
    assert set(weights) == {0.9, 1.0} and "deployed_mix" not in r1["s"]
    assert one.describe(c1)["thresholds"] == {"s/a": 0.9}  # one choice
    space = toy(2, step=0.1)
    c, records = tc23_policy(space, load_unaware_placement(space), 0.08)
    deployed = records["s"]["deployed_mix"]
    expected = round_to_grid(np.array([weights[0.9], weights[1.0]]), 0.1)
    assert {m["choice"]: m["share"] for m in deployed} == pytest.approx(
        dict(zip([0.9, 1.0], expected))
    )
    alts = space.describe(c)["alternatives"]["s"]
    assert [a["thresholds"]["s/a"] for a in alts] == [m["choice"] for m in deployed]
    assert [a["share"] for a in alts] == [m["share"] for m in deployed]
    sc = space.scenario(c)
    assert len(sc.chains) == 2 and {ch.stages[0].exit_prob for ch in sc.chains} == {0.2, 0.0}
    notes = plan(space, "tc23", BaselineSettings(max_loss=0.08)).notes
    assert any("deployed as alternatives" in n for n in notes)
    # the other baselines run one policy: every alternative a copy of the first
    c = plan(space, "exit_last").candidate
    assert space.scenario(c).chains[0].name == "s" and len(space.scenario(c).chains) == 1


def test_tc23_keeps_each_services_mix():
    """A later service's choice leaves the alternatives of an earlier one as deployed."""
    space = SearchSpace(load_problem(DIGITS_MIX))
    p = plan(space, "tc23")
    deployed = p.record["services"]["mail"]["deployed_mix"]
    alts = space.describe(p.candidate)["alternatives"]["mail"]
    assert [a["vector"] for a in alts] == [m["choice"] for m in deployed]
    assert [a["share"] for a in alts] == [m["share"] for m in deployed]
    assert "deployed_mix" not in p.record["services"]["forms"]  # one alternative: one choice


# ---- bad input: one line naming the field and the value -----------------------------------------
@pytest.mark.parametrize(
    "mix, message",
    [
        ({"alternatives": 0}, "services[0].alternatives: got 0; an integer from 1 to 4"),
        ({"alternatives": 5}, "services[0].alternatives: got 5; an integer from 1 to 4"),
        ({"alternatives": "two"}, "services[0].alternatives: got 'two'; expected an integer"),
        ({"alternatives": 1.5}, "services[0].alternatives: got 1.5; expected an integer"),
        ({"share_step": 0}, "services[0].share_step: got 0.0; a number in (0, 1] that divides 1"),
        ({"share_step": 0.3}, "services[0].share_step: got 0.3; a number in (0, 1] that divides"),
        ({"share_step": 1.5}, "services[0].share_step: got 1.5; a number in (0, 1]"),
        ({"shares": [0.7, 0.2]}, "services[0].shares: got [0.7, 0.2]; assignment probabilities "
                                 "must sum to 1 (they sum to 0.9)"),
        ({"shares": [1.0]}, "services[0].shares: got [1.0]; one probability per alternative (2)"),
        ({"shares": [1.2, -0.2]}, "services[0].shares: got [1.2, -0.2]; every probability in"),
        ({"shares": 0.5}, "services[0].shares: got 0.5; expected a list"),
    ],
)  # fmt: skip
def test_bad_mix_fields_are_one_line(mix, message, tmp_path, monkeypatch, capsys):
    d = two_boxes(**{"alternatives": 2, **mix})
    with pytest.raises(ScenarioError) as err:
        Problem.from_dict(d)
    assert message in str(err.value) and "\n" not in str(err.value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    code, _, out = run_command(
        optimize_main, f"problem={path}", "scorer=simulator", "budget_evals=1", *FAST,
        f"hydra.run.dir={tmp_path / 'run'}", monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    lines = [x for x in out.splitlines() if x.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], out


def test_fixed_shares_are_deployed_as_given():
    space = SearchSpace(Problem.from_dict(two_boxes(shares=[0.7, 0.3])))
    assert space.domains[-1] == 1  # nothing to choose
    sc = space.scenario(candidate(space, [0, 1], 0))
    assert [ch.arrival_rate for ch in sc.chains] == [0.7 * 1.6, 0.3 * 1.6]


# ---- the optimize command ----------------------------------------------------------------------
def test_the_optimize_command_reports_each_alternative(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    args = [f"problem={DIGITS_MIX}", "scorer=simulator", "budget_evals=20", "seed=1"]
    code, out, err = run_command(
        optimize_main, *args, *FAST, f"hydra.run.dir={run}", monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 0, err
    assert "jobs split between alternatives: mail (2)" in out
    result = json.loads((run / "result.json").read_text())
    alts = result["alternatives"]["mail"]
    assert sum(a["share"] for a in alts) == pytest.approx(1.0)
    assert all(f"alternative {a['alternative']}, share {a['share']:g}" in out for a in alts)
    assert [s["service"] for s in result["simulated"]] == ["mail", "forms"]
    best = Scenario.load(run / "best_scenario.yaml")
    mail = [ch for ch in best.chains if ch.service == "mail"]
    assert [ch.arrival_rate for ch in mail] == pytest.approx([a["share"] * 2.4 for a in alts])
