"""experiments/search_budget.py: the issue's targets, and a tiny resumable run (the shared
resuming and quiet-machine rules are tested in test_study.py)."""

import importlib
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))  # as `python experiments/search_budget.py` runs
sb = importlib.import_module("search_budget")


def test_resume_keys_are_problem_budget_strategy(tmp_path):
    rows = sb.rows_of(tmp_path)
    for strategy, contended in (("hybrid", False), ("surrogate", True)):
        row = {"problem": "p", "budget_s": 10.0, "strategy": strategy, "objective": 0.1}
        rows.append({**row, "contended": contended})
    table = rows.read()
    assert list(table.columns) == sb.COLUMNS  # the saved table keeps every column, in order
    keys = [("p", 10, s) for s in sb.STRATEGIES] + [("p", 60, "hybrid")]
    assert rows.pending(keys, table) == keys[1:]  # a budget given as 10 matches the saved 10.0


def table(delta: float, hw: float = 0.01) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of 2 small and 8 large problems at 10 and 60 s: every simulator-only strategy
    returns 0.5 (judge half-width `hw`), hybrid 0.5 + `delta`; the small optima are 0.45."""
    rows = []
    problems = [("small", f"s{i}") for i in range(2)] + [("large", f"l{i}") for i in range(8)]
    for family, problem in problems:
        for budget in (10.0, 60.0):
            for strategy in sb.STRATEGIES:
                value = 0.5 + delta if strategy == "hybrid" else 0.5
                rows.append(
                    {
                        "problem": problem, "family": family, "budget_s": budget,
                        "strategy": strategy, "objective": value, "judge_hw": hw,
                        "scored": 10, "simulations": 5, "contended": False,
                    }
                )  # fmt: skip
    optima = pd.DataFrame({"problem": ["s0", "s1"], "optimum": [0.45, 0.45]})
    return pd.DataFrame(rows), optima


def verdicts(delta: float) -> dict[str, bool]:
    return {t["key"]: t["met"] for t in sb.evaluate_targets(sb.with_regret(*table(delta)))}


def test_targets_met_and_missed():
    # hybrid 0.45: as good and strictly better everywhere, at the small optima
    assert verdicts(-0.05) == {"1 at 10 s": True, "1 at 60 s": True, "2": True, "3": True}
    # within the judge's half-width: as good, not strictly better; 0.055 from the optimum
    assert verdicts(0.005) == {"1 at 10 s": True, "1 at 60 s": True, "2": False, "3": False}
    # worse beyond the half-width everywhere
    assert verdicts(0.05) == {"1 at 10 s": False, "1 at 60 s": False, "2": False, "3": False}
    df = sb.with_regret(*table(-0.05))
    assert df.loc[df["problem"] == "s0", "reference"].eq(0.45).all()  # the exhaustive optimum
    assert df.loc[df["problem"] == "l0", "reference"].eq(0.45).all()  # else the best returned
    summary = sb.summary_table(df)
    large = summary[(summary["family"] == "large") & (summary["budget_s"] == 60.0)]
    assert large.set_index("strategy")["worst_regret"].round(6).to_dict() == {
        "hybrid": 0.0, "simulator": 0.05, "simulator_coarse": 0.05, "surrogate": 0.05,
    }  # fmt: skip


def test_tiny_study_resumes_without_redoing(tiny_checkpoint, tmp_path, monkeypatch):
    # others' load: quiet before the first row, busy during it, quiet ever after
    loads = iter([0.0, 5.0])
    monkeypatch.setattr(sb.LoadMeter, "others", lambda self: next(loads, 0.0))
    out = tmp_path / "study"
    args = [
        "--ckpt", str(tiny_checkpoint), "--families", "small", "--per-family", "1",
        "--seed", "424246",  # a small problem of 4 feasible candidates
        "--budgets", "1", "--budget-evals", "4", "--top-k", "2", "--max-arrivals", "20000",
        "--max-load", "1", "--probe-s", "0.01", "--out", str(out),
    ]  # fmt: skip
    sb.main(args)
    rows = pd.read_csv(out / "search_budget.csv")
    assert len(rows) == 5 and rows["contended"].tolist() == [True] + [False] * 4
    assert rows["strategy"].iloc[0] == rows["strategy"].iloc[1] == "hybrid"  # redone at once
    assert sorted(rows["strategy"].iloc[1:]) == sorted(sb.STRATEGIES)
    assert (rows["problem"] == "small_424246").all()
    assert rows["judge_hw"].gt(0).all() and rows["objective"].notna().all()
    optima = pd.read_csv(out / "optima.csv")
    assert len(optima) == 1 and optima["candidates"].iloc[0] == 4
    assert (rows["objective"] >= optima["optimum"].iloc[0] - 1e-12).all()
    before = {f: (out / f).read_text() for f in ("search_budget.csv", "optima.csv")}
    sb.main(args)  # everything is done: nothing is run or appended again
    assert {f: (out / f).read_text() for f in before} == before
    assert (out / "summary.md").read_text().startswith("| family | budget_s | strategy |")
    assert (out / "search_budget.png").stat().st_size > 0


def test_bad_input_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sb.parse(["--families", "small"])
    assert "--ckpt: required" in capsys.readouterr().err
    (tmp_path / "search_budget.csv").write_text("problem,budget_s,scorer\np,10,simulator\n")
    with pytest.raises(SystemExit, match="not a table of this study .*use another --out"):
        sb.main(["--summarize-only", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="error: ckpt_path: .*none.ckpt does not exist"):
        sb.main(["--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "new")])


def test_the_markdown_table_gives_counts_as_whole_numbers():
    table = pd.DataFrame(
        {"strategy": ["hybrid"], "scored": [20507.5], "median_regret": [0.01234], "problems": [8]}
    )
    assert sb.markdown(table).splitlines()[-1] == "| hybrid | 20,508 | 0.0123 | 8 |"
