"""experiments/study.py, what the studies share: rows saved as they are done and resumed
(contended and failed rows redone), the quiet-machine wait and contended flag, and the judge."""

import argparse
import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from chainnet.optim.generators import problem_family
from chainnet.optim.space import SearchSpace
from chainnet.sim import SimulatorSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))  # as `python experiments/<study>.py` runs
study = importlib.import_module("study")


class FakeMeter(study.LoadMeter):
    """Others' load read from a list, one value per probe or per timed run; no sleeping."""

    def __init__(self, loads):
        super().__init__(probe_s=0.0)
        self.loads, self.probes = list(loads), 0

    def probe(self):
        self.probes += 1
        return self.loads.pop(0)

    def others(self):
        return self.loads.pop(0)


def test_rows_resume_skipping_done_keys_and_redoing_contended_and_failed_ones(tmp_path):
    rows = study.Rows(tmp_path / "rows.csv", ["k", "n", "status", "contended", "x"], ["k", "n"])
    assert rows.read().empty and rows.pending([("a", 1)], rows.read()) == [("a", 1)]
    for k, status, contended in (
        ("a", "ok", False),  # done
        ("b", "ok", True),  # contended: to redo
        ("c", "error: boom", False),  # failed: to redo
        ("d", "ok", True),
        ("d", "ok", False),  # redone, then clean: done
        ("e", "ok", False),
        ("e", "error: again", False),  # its last row failed: to redo
    ):
        rows.append({"k": k, "n": 1.0, "status": status, "contended": contended, "x": "a, b"})
    table = rows.read()
    assert len(table) == 7 and list(table.columns) == rows.columns
    assert (tmp_path / "rows.csv").read_text().count("k,n,status") == 1  # one header
    keys = [(k, 1) for k in "abcdef"]
    assert rows.pending(keys, table) == [("b", 1), ("c", 1), ("e", 1), ("f", 1)]
    final = study.final_rows(table, rows.key)
    assert sorted(final["k"]) == ["a", "d"] and not final["contended"].any()
    assert final["x"].eq("a, b").all()  # a comma inside a value survives
    assert study.latest(table, rows.key).set_index("k").loc["e", "status"] == "error: again"


def test_rows_without_status_or_contended_column_and_a_foreign_table(tmp_path):
    optima = study.Rows(tmp_path / "optima.csv", ["problem", "optimum"], ["problem"])
    optima.append({"problem": "s0", "optimum": 0.4})
    assert optima.pending([("s0",), ("s1",)], optima.read()) == [("s1",)]
    other = study.Rows(tmp_path / "optima.csv", ["problem", "objective"], ["problem"])
    with pytest.raises(ValueError, match=r"optima.csv: not a table of this study \(no objective"):
        other.read()


def test_timed_waits_for_a_quiet_machine_and_flags_contended_runs(capsys):
    meter = FakeMeter([2.0, 1.5, 0.3, 0.1])  # busy, busy, quiet; then 0.1 during the run
    result, record = study.timed(lambda: 42, meter, max_load=0.7)
    assert result == 42 and meter.probes == 3
    assert record["load_before"] == 0.3 and record["load_during"] == 0.1
    assert not record["contended"] and record["wall_s"] >= 0
    assert capsys.readouterr().out.count("waiting for a quiet machine") == 1  # said once
    _, record = study.timed(lambda: None, FakeMeter([0.0, 0.9]), max_load=0.7)
    assert record["contended"]  # others used 0.9 CPUs during the run
    _, record = study.timed(lambda: None, FakeMeter([5.0] * 50 + [0.0]), 0.7, max_wait=0.0)
    assert record["contended"] and record["load_before"] == 5.0  # it gave up waiting
    meter = FakeMeter([3.0])
    _, record = study.timed(lambda: None, meter, 0.7, wait=False)
    assert meter.probes == 0 and math.isnan(record["load_before"]) and not record["contended"]


def test_a_run_shorter_than_a_tick_is_measured_over_the_probe_time(monkeypatch):
    """/proc/stat counts in ticks of 10 ms: one tick landing in a run of microseconds is not
    hundreds of CPUs busy (it made a test's instant fake rows read as contended)."""
    ticks = iter([100.0, 100.01])  # one tick of others' time between start and others()
    monkeypatch.setattr(study, "busy_cpu_seconds", lambda: next(ticks))
    monkeypatch.setattr(study, "own_cpu_seconds", lambda: 1.0)
    meter = study.LoadMeter(probe_s=0.05)
    meter.start()
    load = meter.others()
    assert 0.0 < load <= 0.01 / 0.05 + 1e-9  # 0.2 CPUs at most, not 0.01 / a few microseconds


def test_the_real_meter_counts_others_not_this_process():
    meter = study.LoadMeter(probe_s=0.1)
    meter.start()
    sum(i * i for i in range(2_000_000))  # this process busy: not others' load
    assert 0.0 <= meter.others() < 50.0
    assert study.busy_cpu_seconds() > 0 and study.own_cpu_seconds() > 0


def test_quiet_options_are_shared_and_checked(capsys):
    ap = argparse.ArgumentParser()
    study.add_quiet_options(ap)
    args = ap.parse_args([])
    assert (args.max_load, args.probe_s) == (study.MAX_LOAD, study.PROBE_S)
    with pytest.raises(SystemExit):
        ap.parse_args(["--probe-s", "0"])
    assert "--probe-s: got 0; a number > 0" in capsys.readouterr().err


def test_the_judge_is_one_seeded_simulation_with_half_widths():
    space = SearchSpace(problem_family("small", 424_246, "min_loss"))
    candidate = next(iter(space.enumerate_feasible()))
    settings = SimulatorSettings(max_arrivals=20_000)
    a, b = study.judge(space, candidate, settings), study.judge(space, candidate, settings)
    assert a == b  # one seed: the same verdict again
    assert a["objective"] == a["loss"]  # min_loss
    assert 0 <= a["loss"] <= 1 and 0 <= a["accuracy"] <= 1
    assert a["judge_hw"] > 0 and a["loss_hw"] >= 0 and a["accuracy_hw"] > 0
    # the objective is the loss here: its half-width is the loss's, at most the weighted sum
    assert a["judge_hw"] <= a["loss_hw"] + 1e-12
    assert np.isfinite([a[k] for k in a]).all()
