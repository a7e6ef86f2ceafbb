"""experiments/early_exit.py and chainnet.optim.profile_problems: problems at a load, random
profile problems, the profiles' cache, resuming, the issue's targets, and a tiny end-to-end run."""

import importlib
import json
import os
import sys
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chainnet.eenn.profile import Profile, load_profile
from chainnet.optim.baselines import with_all_vectors
from chainnet.optim.generators import system_load
from chainnet.optim.profile_problems import (
    LOAD,
    at_load,
    load_doc,
    problem_of,
    profile_problem,
    profile_problems,
    stratified_loads,
    with_alternatives,
)
from chainnet.optim.space import SearchSpace
from chainnet.sim import SimulatorSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))  # as `python experiments/early_exit.py` runs
ee = importlib.import_module("early_exit")
study = importlib.import_module("study")


def test_at_load_hits_the_requested_load_by_one_factor():
    doc = load_doc(ROOT / "examples/problem_digits.yaml")
    problem = problem_of(doc)
    rates = np.array([sv["arrival_rate"] for sv in doc["services"]])
    for load in (0.5, 1.0, 1.5):
        scaled = at_load(doc, load, problem)
        new = np.array([sv["arrival_rate"] for sv in scaled["services"]])
        # one factor for all rates, and the load is linear in it
        assert np.allclose(new / rates, load / system_load(problem), rtol=1e-12)
    assert system_load(problem_of(at_load(doc, 1.5))) == pytest.approx(1.5, rel=1e-12)
    assert [sv["arrival_rate"] for sv in doc["services"]] == list(rates)  # input left alone
    with pytest.raises(ValueError, match=r"^load: got 0; a number > 0$"):
        at_load(doc, 0)


@pytest.fixture(scope="module")
def two():
    return profile_problems(2, seed=3)


def test_random_loads_are_stratified_from_light_to_overloaded():
    for seed in range(5):
        loads = stratified_loads(8, seed)
        assert min(loads) < 0.5 and max(loads) > 1.0  # light and overloaded, always
        assert all(LOAD[0] <= x <= LOAD[1] for x in loads)
        assert np.array_equal(loads, stratified_loads(8, seed))
    assert not np.array_equal(stratified_loads(8, 0), stratified_loads(8, 1))


def test_profile_problems_are_valid_and_reproducible(two):
    drawn = stratified_loads(2, 3)
    loads = [system_load(problem_of(d)) for d in two]
    assert np.allclose(loads, drawn)  # at the loads drawn
    for doc in two:
        space = SearchSpace(problem_of(doc))  # valid, and some placement fits the RAM
        p = space.problem
        assert p.devices[0].name == "gateway" and 3 <= len(p.devices) <= 5
        assert 1 <= len(p.services) <= 3
        assert all(sv.gateway == "gateway" and sv.exit_vectors for sv in p.services)
    # the same seed and load: the same (the load drawn, not its value recomputed from the problem,
    # which may differ from it in the last bit and so move the arrival rates by one)
    assert profile_problem(4, load=float(drawn[1])) == two[1]
    assert [d["name"] for d in two] == ["profile_3", "profile_4"]
    assert two[0]["devices"] != two[1]["devices"]


def test_profile_problem_refuses_bad_input_in_one_line():
    with pytest.raises(ValueError, match=r"^seed: got -1; an integer >= 0$"):
        profile_problem(-1)
    with pytest.raises(ValueError, match=r"^profile: got 'nope.yaml'; no such file$"):
        profile_problem(0, "nope.yaml")
    with pytest.raises(ValueError, match=r"^random problems: got 0; an integer >= 1$"):
        profile_problems(0, 1)


def test_all_vectors_and_alternatives_are_set_on_every_service(two):
    doc = two[0]
    wide = with_all_vectors(doc)
    assert all(sv["profile"]["vectors"] == "all" for sv in wide["services"])
    assert with_alternatives(doc, 1) == doc
    assert all(sv["alternatives"] == 3 for sv in with_alternatives(doc, 3)["services"])
    assert all("alternatives" not in sv for sv in doc["services"])
    with pytest.raises(ValueError, match=r"^alternatives: got 0; an integer >= 1$"):
        with_alternatives(doc, 0)


def test_profiles_are_parsed_once_until_their_file_changes(tmp_path, monkeypatch):
    digits = load_profile(ROOT / "examples/profiles/digits.yaml")
    small = replace(digits, vectors=digits.vectors[:2])
    path = small.save(tmp_path / "p.yaml")
    reads, read = [], Profile.load.__func__
    monkeypatch.setattr(Profile, "load", classmethod(lambda c, p: reads.append(p) or read(c, p)))
    a, b = load_profile(path), load_profile(tmp_path / "." / "p.yaml")
    assert len(reads) == 1 and a == b == small  # the same file, however named: parsed once
    a.training["epochs"] = -1  # a caller's change stays its own
    assert load_profile(path).training == small.training
    with pytest.raises(FrozenInstanceError):
        a.blocks[0].flops = 0.0  # the rest is frozen
    replace(digits, vectors=digits.vectors[:3]).save(path)  # rewritten: read again
    assert len(load_profile(path).vectors) == 3 and len(reads) == 2
    mtime = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(mtime, mtime))  # touched, the same size: read again
    assert load_profile(path) == replace(digits, vectors=digits.vectors[:3]) and len(reads) == 3


def test_resume_skips_done_rows_and_redoes_contended_and_failed_ones(tmp_path, monkeypatch):
    case = ee.Case("p", "random", 1.2, {})
    monkeypatch.setattr(ee, "cases", lambda args: [case])
    calls = []

    def fake(kind):
        def run(case, policy, *rest):
            calls.append(policy)
            ref = rest[0] if kind == "ours" else None
            return {"loss": 0.1, "accuracy": 0.9, "own_loss": 0.2 if ref is None else ref}

        return run

    monkeypatch.setattr(ee, "run_baseline", fake("baseline"))
    monkeypatch.setattr(ee, "run_ours", fake("ours"))
    rows = ee.rows_of(tmp_path)
    for policy, status, contended in (
        ("exit_last", "ok", False),  # done
        ("tc23", "error: boom", False),  # failed: redone
        ("ours", "ok", False),  # done, but redone: tc23, redone, may change its loss target
        ("ours_min_loss", "ok", True),  # contended: redone
    ):
        rows.append({"problem": "p", "policy": policy, "status": status,
                     "contended": contended, "own_loss": 0.05})  # fmt: skip
    args = ee.parse(["--out", str(tmp_path), "--max-load", "100", "--probe-s", "0.01"])
    df = ee.run_study(args, tmp_path)
    assert calls == ["fixed_threshold", "tc23", "load_unaware", "ours", "ours_min_loss"]
    assert sorted(df["policy"]) == sorted(ee.POLICIES) and len(df) == len(ee.POLICIES)
    assert (df["status"] == "ok").all() and not df["contended"].astype(bool).any()
    ours = df.set_index("policy").loc["ours"]
    assert ours["own_loss"] == 0.05  # the best baseline's own loss: the lowest, kept from before
    calls.clear()
    ee.run_study(args, tmp_path)
    assert calls == []  # everything done


def frame(rows):
    cols = ["problem", "kind", "load", "policy", "loss", "loss_hw", "accuracy", "accuracy_hw"]
    return pd.DataFrame([dict(zip(cols, r), status="ok") for r in rows])


def test_targets_met_and_missed_on_a_hand_made_table():
    base = [("exit_last", 0.20, 0.91), ("tc23", 0.10, 0.80), ("fixed_threshold", 0.30, 0.95)]
    rows = []
    for name, load, ours_loss, ours_acc in (
        ("met", 1.2, 0.04, 0.85),  # best: tc23 (loss 0.10): 60 % less loss, more accurate
        ("too_lossy", 1.2, 0.06, 0.85),  # 40 % less loss only
        ("just_short", 1.2, 0.051, 0.85),  # 49 % less: the reduction is a point estimate
        ("less_accurate", 1.2, 0.04, 0.70),
    ):
        rows += [(name, "random", load, p, lo, 0.001, a, 0.001) for p, lo, a in base]
        rows.append((name, "random", load, "ours", ours_loss, 0.001, ours_acc, 0.001))
    light = [("exit_last", 0.010, 0.97), ("tc23", 0.012, 0.80)]  # load < 1, little loss
    for name, ours_loss in (("light_within_hw", 0.011), ("light_worse", 0.02)):
        rows += [(name, "digits", 0.5, p, lo, 0.001, a, 0.001) for p, lo, a in light]
        rows.append((name, "digits", 0.5, "ours", ours_loss, 0.001, 0.97, 0.001))
    t = ee.evaluate_targets(frame(rows)).set_index("problem")
    assert t.loc["met", "best_baseline"] == "tc23" and t.loc["met", "reduction"] == pytest.approx(
        0.6
    )
    assert t.loc["met", "met"] and t.loc["met", "met_reduction"] and t.loc["met", "overloaded"]
    assert not t.loc["just_short", "met"] and not t.loc["just_short", "met_reduction"]
    assert not t.loc["too_lossy", "met"] and "loss not 50% below" in t.loc["too_lossy", "missed"]
    assert not t.loc["less_accurate", "met"]
    assert t.loc["less_accurate", "missed"] == "accuracy below tc23's"
    assert not t.loc["light_within_hw", "overloaded"]
    assert t.loc["light_within_hw", "met_reduction"] is None  # not overloaded: not applicable
    assert t.loc["light_within_hw", "met"]  # 0.001 above exit_last: within sqrt(2) x 0.001
    assert not t.loc["light_worse", "met"] and not t.loc["light_worse", "never_worse"]
    assert t.loc["light_worse", "missed"] == "loss above exit_last's; loss above tc23's"
    md = ee.markdown(frame(rows), ee.evaluate_targets(frame(rows)))
    assert "| met | 1.20 |" in md and "missed: accuracy below tc23's" in md


def test_a_tiny_study_runs_end_to_end_and_resumes(tmp_path, capsys):
    argv = ["--loads", "1.0", "--random", "1", "--budget", "0", "--budget-evals", "3",
            "--max-arrivals", "20000", "--judge-arrivals", "20000", "--max-load", "100",
            "--probe-s", "0.01", "--out", str(tmp_path)]  # fmt: skip
    ee.main(argv)
    df = pd.read_csv(tmp_path / "early_exit.csv")
    assert len(df) == 2 * len(ee.POLICIES) and (df["status"] == "ok").all()
    assert df["loss"].between(0, 1).all() and df["accuracy"].between(0.5, 1).all()
    assert (df["loss_hw"] >= 0).all()
    for name in ("summary.csv", "summary.md", "early_exit.png"):
        assert (tmp_path / name).stat().st_size > 0
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert sorted(set(summary["policy"])) == ["ours", "ours_min_loss"] and len(summary) == 4
    assert "never worse than a baseline on" in capsys.readouterr().out
    # the judge: one simulation of the deployment saved, with its own seed, the same again
    case = ee.cases(ee.parse(argv))[0]
    row = df[(df["problem"] == case.name) & (df["policy"] == "tc23")].iloc[0]
    genes = np.array(json.loads(row["candidate"]))
    again = ee.judge(ee.CaseProblems(case).baselines, genes, SimulatorSettings(max_arrivals=20000))
    assert again["loss"] == pytest.approx(row["loss"], rel=1e-9, abs=1e-12)
    assert study.EVAL_SEED not in (ee.SEARCH_SEED, ee.CONFIRM_SEED)
    ee.main(argv)  # every row done: nothing runs again
    assert "  exit_last" not in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "early_exit.csv").equals(df)
    with pytest.raises(SystemExit, match="holds a study run with budget_evals=3, not 4"):
        ee.main([*argv[:7], "4", *argv[8:]])


def test_our_objectives_aim_at_the_target_reduction():
    assert ee.ours_objective("ours", 0.2, 0.5, 100.0) == {
        "kind": "max_accuracy", "max_loss": 0.1, "penalty": 100.0,
    }  # fmt: skip
    assert ee.ours_objective("ours_min_loss", float("nan"), 0.5, 100.0) == {"kind": "min_loss"}
    with pytest.raises(ValueError, match="ours: no baseline ran on this problem"):
        ee.ours_objective("ours", float("nan"), 0.5, 100.0)
