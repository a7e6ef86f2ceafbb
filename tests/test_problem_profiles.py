"""Problems built from early-exit profiles (`chainnet.optim.profiles`): reading, the per-stage exits
derived from the profile's joint fractions, the one threshold-vector gene per service, bad input,
and the example problem searched with the simulator."""

import copy
import functools
import math

import numpy as np
import pytest
import yaml
from tests_helpers import ROOT, run_command

from chainnet.cli.optimize import main as optimize_main
from chainnet.eenn.profile import load_profile
from chainnet.optim.problem import ExitVector, Fragment, HostDevice, Problem, Service
from chainnet.optim.profiles import BYTES_PER_MB, profile_fragments
from chainnet.optim.report import describe_space, report
from chainnet.optim.scorers import SimulatorScorer
from chainnet.optim.search import optimize
from chainnet.optim.space import SearchSpace
from chainnet.parsing import ScenarioError, ScenarioTypeError
from chainnet.sim import SimulatorSettings, make_engine

EXAMPLE = ROOT / "examples/problem_digits.yaml"
PROFILE = ROOT / "examples/profiles/digits.yaml"
QUICK = SimulatorSettings(precision=0.05, max_arrivals=20_000, warmup_arrivals=1000)


@pytest.fixture(scope="module")
def profile():
    return load_profile(PROFILE)


def problem_dict(**profile_fields) -> dict:
    """One gateway, one box, one service written with the digits profile (path from ROOT)."""
    block = {"path": "examples/profiles/digits.yaml", "flops_per_work": 1e5} | profile_fields
    return {
        "name": "p",
        "devices": [
            {"name": "gw", "speed": 0.5, "capacity": 4, "ram": 24},
            {"name": "box", "speed": 2.0, "capacity": 8, "ram": 96},
        ],
        "services": [{"name": "s", "arrival_rate": 1.0, "gateway": "gw", "profile": block}],
        "objective": {"kind": "max_accuracy", "max_loss": 0.05},
    }


def read(d: dict) -> Problem:
    return Problem.from_dict(d, base=ROOT)


def test_the_example_reads_its_profile(profile):
    p = Problem.load(EXAMPLE)
    costs = profile.stage_costs()
    front = profile.front()
    for sv in p.services:
        assert [fr.name for fr in sv.fragments] == ["block1", "block2", "block3", "block4"]
        assert [fr.work for fr in sv.fragments] == [c.flops / 1e5 for c in costs]
        assert [fr.memory for fr in sv.fragments] == [c.weight_bytes / 1024 for c in costs]
        assert [fr.job_memory for fr in sv.fragments] == [c.job_bytes / 1024 for c in costs]
        assert all(fr.exit == () and fr.accuracy is None for fr in sv.fragments)
        assert [v.thresholds for v in sv.exit_vectors] == [
            profile.vectors[i].thresholds for i in front
        ]
    mail, forms = p.services
    assert {fr.distribution for fr in mail.fragments} == {"det"}
    assert {(fr.distribution, fr.scv) for fr in forms.fragments} == {("general", 0.5)}
    # written out in full, and read back the same
    d = p.to_dict()
    assert "profile" not in d["services"][0] and len(d["services"][0]["exit_vectors"]) == 19
    assert Problem.from_dict(d) == p and hash(p)


def test_the_scales_and_the_vector_choice(profile):
    every = read(problem_dict(vectors="all", bytes_per_memory=1000)).services[0]
    assert len(every.exit_vectors) == len(profile.vectors) == 512
    assert [v.thresholds for v in every.exit_vectors] == [v.thresholds for v in profile.vectors]
    assert every.fragments[3].memory == profile.stage_costs()[3].weight_bytes / 1000
    # bytes_per_memory defaults to MB: the problem's usual unit
    fragments, vectors = profile_fragments(profile, 1e5)
    assert fragments[2]["memory"] == profile.stage_costs()[2].weight_bytes / BYTES_PER_MB
    assert len(vectors) == len(profile.front())


def test_a_relative_profile_path_is_read_from_the_problem_folder(tmp_path):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets/digits.yaml").write_text(PROFILE.read_text())
    d = problem_dict()
    d["services"][0]["profile"]["path"] = "nets/digits.yaml"
    (tmp_path / "problem.yaml").write_text(yaml.safe_dump(d))
    assert Problem.load(tmp_path / "problem.yaml") == read(problem_dict())
    with pytest.raises(ScenarioError, match="no such file"):
        Problem.from_dict(d)  # no base: the working directory, which has no nets/


def test_the_stage_exits_give_back_the_joint_fractions_through_the_scenario(profile):
    """For every measured vector: the share of jobs leaving at each stage of the decoded scenario
    (visit probability x exit probability; all who reach the last stage leave there) is the
    profile's fraction, and the accuracy of all jobs is the vector's."""
    space = SearchSpace(read(problem_dict(vectors="all")))
    base = space.random_candidate(np.random.default_rng(0))
    exit_blocks = profile.exit_blocks()
    for i, v in enumerate(profile.vectors):
        c = base.copy()
        c[-1] = i
        chain = space.scenario(c).chains[0]
        visits = space.scenario(c).visit_probabilities(chain)
        leave = [r * st.exit_prob for r, st in zip(visits, chain.stages)]
        leave[-1] = visits[-1]
        np.testing.assert_allclose([leave[b] for b in exit_blocks] + [leave[-1]], v.fractions,
                                   rtol=0, atol=1e-12)  # fmt: skip
        others = [k for k in range(4) if k not in exit_blocks and k != 3]
        assert all(leave[k] == 0 for k in others)
        accuracy = math.fsum(
            share * st.exit_accuracy for share, st in zip(leave, chain.stages) if share > 0
        )
        assert accuracy == pytest.approx(v.accuracy, abs=1e-12)
        expected = [a for _, a in profile.stage_exits(i)]
        expected[-1] = profile.final.accuracy if expected[-1] is None else expected[-1]
        assert [st.exit_accuracy for st in chain.stages] == expected


def test_a_lightly_loaded_deployment_serves_the_profiles_accuracy(profile):
    """Through the simulator: nothing is lost, so the accuracy of served jobs is the vector's."""
    space = SearchSpace(Problem.load(EXAMPLE))
    front = profile.front()
    c = np.array([0, 1, 2, 3, 0, 2, 2, 1, 17, 9])  # mail: [0.8, 0.9, 0.8], forms: [0.7, 0.7, 0]
    assert space.feasible(c)
    light = SimulatorSettings(precision=0.02, max_arrivals=60_000, warmup_arrivals=2000)
    res = make_engine(space.scenario(c), 0, light, "fast").run().chain_frame()
    assert res["loss_ratio"].max() < 0.01
    for k, (name, gene) in enumerate((("mail", 17), ("forms", 9))):
        expected = profile.vectors[front[gene]].accuracy
        assert res["chain"][k] == name
        assert res["accuracy"][k] == pytest.approx(expected, abs=0.01)


def test_one_gene_chooses_each_services_threshold_vector(profile):
    space = SearchSpace(Problem.load(EXAMPLE))
    # four placement genes per service (the gateway fixes the first), then one vector gene each
    assert space.domains.tolist() == [1, 4, 4, 4, 1, 4, 4, 4, 19, 19]
    assert [(e.service, e.fragment, e.genes) for e in space.exit_genes] == [
        (0, None, (0, 1, 2, 3)),
        (1, None, (4, 5, 6, 7)),
    ]
    c = np.array([0, 1, 2, 3, 0, 2, 2, 1, 18, 0])
    sc = space.scenario(c)
    mail, forms = profile.front()[18], profile.front()[0]
    assert [(st.exit_prob, st.exit_accuracy) for st in sc.chains[0].stages] == list(
        profile.stage_exits(mail)
    )
    assert [(st.exit_prob, st.exit_accuracy) for st in sc.chains[1].stages] == [
        *profile.stage_exits(forms)[:3],
        (0.0, profile.final.accuracy),  # no job reaches it
    ]
    assert [st.device for st in sc.chains[0].stages] == ["gateway", "box1", "box2", "box3"]
    decisions = space.describe(c)
    assert decisions["vectors"] == {"mail": [0.8, 0.99, 0.8], "forms": [0.0, 0.0, 0.0]}
    assert decisions["thresholds"] == {}
    line = describe_space(space, "digits")
    assert "8 fragments, 6 exits (2 services choose a threshold vector)" in line


def test_exit_tables_and_threshold_vectors_in_one_problem():
    """An old-style service with a per-exit table beside a profile service: genes in service
    order, each decoded by its own kind."""
    d = problem_dict()
    table = {"name": "t", "arrival_rate": 0.5, "fragments": [
        {"name": "a", "work": 0.2, "memory": 2, "exit": [
            {"threshold": 0.9, "exit_prob": 0.1, "accuracy": 0.8},
            {"threshold": 0.5, "exit_prob": 0.4, "accuracy": 0.7}]},
        {"name": "b", "work": 0.3, "memory": 2, "accuracy": 0.9}]}  # fmt: skip
    d["services"].insert(0, table)
    space = SearchSpace(read(d))
    assert space.domains.tolist() == [2, 2, 1, 2, 2, 2, 2, 19]
    assert [(e.service, e.fragment, e.genes) for e in space.exit_genes] == [
        (0, 0, (0,)),
        (1, None, (2, 3, 4, 5)),
    ]
    c = np.array([1, 1, 0, 1, 1, 1, 1, 5])
    sc = space.scenario(c)
    assert [(st.exit_prob, st.exit_accuracy) for st in sc.chains[0].stages] == [
        (0.4, 0.7),
        (0, 0.9),
    ]
    assert (
        sc.chains[1].stages[0].exit_prob == space.problem.services[1].exit_vectors[5].exit_prob[0]
    )
    assert space.describe(c)["thresholds"] == {"t/a": 0.5}
    assert list(space.describe(c)["vectors"]) == ["s"]


def test_exit_vectors_can_be_written_out_in_code():
    frags = (Fragment("a", 0.5, memory=10), Fragment("b", 1.0, memory=10))
    vectors = (
        ExitVector((0.9,), (0.2, 0.0), (0.95, 0.8)),
        ExitVector((0.5,), (0.6, 0.0), (0.85, 0.9)),
    )
    p = Problem((HostDevice("d", 1.0, 4),), (Service("s", 0.5, frags, exit_vectors=vectors),))
    space = SearchSpace(p)
    assert space.domains.tolist() == [1, 1, 2]
    sc = space.scenario(np.array([0, 0, 1]))
    assert [(st.exit_prob, st.exit_accuracy) for st in sc.chains[0].stages] == [
        (0.6, 0.85),
        (0, 0.9),
    ]
    assert space.describe(np.array([0, 0, 1]))["vectors"] == {"s": [0.5]}
    with pytest.raises(ScenarioTypeError, match=r"ExitVector\.exit_prob\[0\]"):
        ExitVector((0.9,), ("x", 0.0), (None, None))


def set_in(d: dict, path: str, value) -> None:
    """Set (or, with DROP, delete) the field `path` of `d`: keys and list indices joined by dots,
    e.g. services.0.profile.path."""
    *head, last = path.split(".")
    for k in head:
        d = d[int(k)] if k.isdigit() else d[k]
    if value is DROP:
        del d[last]
    else:
        d[int(last) if last.isdigit() else last] = value


DROP = object()
SV = r"services\[0\]"


@pytest.mark.parametrize(
    "path, value, match",
    [
        (
            "services.0.profile.path",
            "nope.yaml",
            rf"{SV}\.profile\.path: got 'nope.yaml'; no such file",
        ),
        (
            "services.0.profile.path",
            "examples/problem_small.yaml",
            rf"{SV}\.profile\.path: profile .*problem_small.yaml\.name: .*unknown key",
        ),
        ("services.0.fragments", [{"work": 1.0}], rf"{SV}\.fragments: .*give one or the other"),
        ("services.0.exit_vectors", [], rf"{SV}\.exit_vectors: .*give one or the other"),
        (
            "services.0.profile.flops_per_work",
            0,
            rf"{SV}\.profile\.flops_per_work: got 0\.0; must be > 0",
        ),
        ("services.0.profile.flops_per_work", -1e5, r"profile\.flops_per_work: got -100000\.0"),
        ("services.0.profile.flops_per_work", DROP, r"profile\.flops_per_work: got None; required"),
        (
            "services.0.profile.bytes_per_memory",
            0,
            rf"{SV}\.profile\.bytes_per_memory: got 0\.0; must be > 0",
        ),
        (
            "services.0.profile.bytes_per_memory",
            "kb",
            r"profile\.bytes_per_memory: got 'kb'; expected a number",
        ),
        (
            "services.0.profile.vectors",
            "best",
            rf"{SV}\.profile\.vectors: got 'best'; one of \('front', 'all'\)",
        ),
        ("services.0.profile.colour", "red", rf"{SV}\.profile\.colour: got 'red'; unknown key"),
        (
            "services.0.profile",
            "examples/profiles/digits.yaml",
            rf"{SV}\.profile: .*expected a mapping",
        ),
        (
            "services.0.profile.distribution",
            "weird",
            rf"{SV}\.profile\.distribution: got 'weird'; one of",
        ),
        (
            "services.0.profile.scv",
            0.5,
            rf"{SV}\.profile\.scv: got 0\.5; set \(> 0\) for 'general'",
        ),
        ("services.0.profile.scv", -1, rf"{SV}\.profile\.scv: got -1\.0; must be > 0"),
        (
            "services.0.profile.bytes_per_memory",
            100,
            rf"{SV}\.fragments\[2\]\.memory: got 237\.2; no placement",
        ),
        (
            "services.0.profile",
            DROP,
            rf"{SV}\.fragments: got None; required field is missing \(or a profile\)",
        ),
    ],
)
def test_bad_profile_services_say_what_and_where(path, value, match):
    d = problem_dict()
    set_in(d, path, value)
    with pytest.raises(ScenarioError, match=match) as err:
        SearchSpace(read(d))
    assert "\n" not in str(err.value)


def test_a_broken_profile_file_is_named_with_its_field(tmp_path):
    broken = yaml.safe_load(PROFILE.read_text())
    broken["blocks"][1]["flops"] = "lots"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    d = problem_dict()
    d["services"][0]["profile"]["path"] = str(tmp_path / "broken.yaml")
    with pytest.raises(ScenarioError) as err:
        read(d)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("problem.services[0].profile.path: profile ") and "broken.yaml" in msg
    assert ".blocks[1].flops: got 'lots'; expected a number" in msg


@functools.cache
def written_out_once() -> dict:
    return read(problem_dict()).to_dict()


def written_out() -> dict:
    """`problem_dict()` written out in full: its service's fragments and exit_vectors."""
    d = copy.deepcopy(written_out_once())
    assert "exit_vectors" in d["services"][0] and "profile" not in d["services"][0]
    return d


VEC = r"services\[0\]\.exit_vectors"


@pytest.mark.parametrize(
    "path, value, match",
    [
        (
            "services.0.fragments.1.exit",
            [{"exit_prob": 0.1}],
            r"fragments\[1\]\.exit: .*takes every fragment's exit",
        ),
        (
            "services.0.fragments.3.accuracy",
            0.9,
            r"fragments\[3\]\.accuracy: .*takes every fragment's exit",
        ),
        (
            "services.0.exit_vectors.2.exit_prob",
            [0.5, 0.5, 0.5],
            rf"{VEC}\[2\]\.exit_prob: .*one per fragment \(4\)",
        ),
        (
            "services.0.exit_vectors.2.accuracy",
            [0.9],
            rf"{VEC}\[2\]\.accuracy: .*one per fragment \(4\)",
        ),
        (
            "services.0.exit_vectors.2.exit_prob.3",
            0.5,
            rf"{VEC}\[2\]\.exit_prob\[3\]: got 0\.5; 0 on the last",
        ),
        (
            "services.0.exit_vectors.2.exit_prob.1",
            1.5,
            rf"{VEC}\[2\]\.exit_prob\[1\]: got 1\.5; allowed range",
        ),
        ("services.0.exit_vectors.2.accuracy.0", -0.1, rf"{VEC}\[2\]\.accuracy\[0\]: got -0\.1"),
        (
            "services.0.exit_vectors.2.accuracy.0",
            None,
            rf"{VEC}\[2\]\.accuracy\[0\]: got None; max_accuracy needs",
        ),
        (
            "services.0.exit_vectors.2.thresholds",
            [0.5, 0.0, 0.0],
            rf"{VEC}\[2\]\.thresholds: .*not a vector given before",
        ),
        (
            "services.0.exit_vectors.2.thresholds",
            [0.7, 0.0],
            rf"{VEC}\[2\]\.thresholds: .*3 thresholds, as the first",
        ),
        ("services.0.exit_vectors.2.thresholds", [], rf"{VEC}\[2\]\.thresholds: got \[\]"),
        ("services.0.exit_vectors.2.colour", 1, rf"{VEC}\[2\]\.colour: got 1; unknown key"),
        ("services.0.exit_vectors.2.accuracy", DROP, rf"{VEC}\[2\]\.accuracy: got None; required"),
    ],
)
def test_bad_exit_vectors_say_what_and_where(path, value, match):
    d = written_out()
    set_in(d, path, value)
    with pytest.raises(ScenarioError, match=match) as err:
        SearchSpace(Problem.from_dict(d))
    assert "\n" not in str(err.value)


def test_where_no_job_reaches_the_final_classifier(profile):
    """Vector [0, 0, 0] sends every job out at the first exit. The middle stages have no accuracy
    (no job leaves there), the last gets the final classifier's on all jobs (it weighs nothing),
    and the simulated accuracy of the service is defined: the first exit's."""
    d = written_out()
    v = d["services"][0]["exit_vectors"][0]
    assert v["exit_prob"] == [1.0, 0.0, 0.0, 0.0]
    assert v["accuracy"] == [profile.exits[0].accuracy, None, None, profile.final.accuracy]
    space = SearchSpace(Problem.from_dict(d))
    c = space.random_candidate(np.random.default_rng(0))
    c[-1] = 0
    res = make_engine(space.scenario(c), 0, QUICK, "fast").run().chain_frame()
    assert res["accuracy"][0] == pytest.approx(profile.exits[0].accuracy, abs=1e-9)
    # the simulator's rule, for max_accuracy: the last stage and every exit need an accuracy
    for k, vector in ((3, 0), (1, 1)):
        bad = written_out()
        bad["services"][0]["exit_vectors"][vector]["accuracy"][k] = None
        with pytest.raises(ScenarioError, match=rf"{VEC}\[{vector}\]\.accuracy\[{k}\]"):
            Problem.from_dict(bad)
        bad["objective"] = {"kind": "min_loss"}
        Problem.from_dict(bad)  # no accuracy needed


def test_a_seeded_search_of_the_example_with_the_simulator(profile):
    space = SearchSpace(Problem.load(EXAMPLE))

    def run():
        scorer = SimulatorScorer(space, QUICK, "fast", seed=0)
        return optimize(space, scorer, "anneal", None, budget_evals=24, seed=3, top_k=3,
                        settings=QUICK)  # fmt: skip

    first, again = run(), run()
    assert len(first.result.scored) == 24
    assert list(first.result.scored) == list(again.result.scored)  # reproducible
    best = first.best_candidate
    vectors = space.describe(best)["vectors"]
    assert set(vectors) == {"mail", "forms"}
    front = {profile.vectors[i].thresholds for i in profile.front()}
    assert all(tuple(v) in front for v in vectors.values())
    text = report(first)
    assert f"  vectors: {vectors}" in text and "thresholds: {}" not in text
    assert np.isfinite(first.best["simulated_objective"])


def test_the_example_through_the_command(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    args = [f"problem={EXAMPLE}", "scorer=simulator", "budget_s=null", "budget_evals=16", "top_k=2"]
    args += ["progress=false", "simulator.max_arrivals=20000", f"hydra.run.dir={run}"]
    code, out, err = run_command(optimize_main, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert (
        "6 exits (2 services choose a threshold vector)" in out and "  vectors: {'mail': [" in out
    )
    result = yaml.safe_load((run / "result.json").read_text())
    assert set(result["vectors"]) == {"mail", "forms"} and result["thresholds"] == {}
