"""`python -m datagen`: reproducible, resumable, verifiable datasets."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tests_helpers import FAST, FAST_ARGS, PRESET, PUBLISHED, ROOT, run_command

from chainnet.dataset.store import DatasetError, read_table, verify
from chainnet.dataset.tables import TABLES
from chainnet.sim import SimulatorSettings
from datagen.__main__ import main as datagen_main
from datagen.generate import generate
from datagen.presets import PresetError


def make(out, n=12, workers=1, **kw):
    return generate(
        n=n, seed=7, out=out, preset=PRESET, settings=FAST, shard_size=4, workers=workers, **kw
    )


def checksums(root) -> dict:
    return json.loads((Path(root) / "manifest.json").read_text())["shards"]


def digests(root) -> dict:
    return {k: v["sha256"] for k, v in checksums(root).items()}


def test_layout_is_readable_with_plain_pandas(tmp_path):
    summary = make(tmp_path / "ds")
    assert summary["samples"] == 12
    chains = pd.read_parquet(tmp_path / "ds/chains")
    stages = pd.read_parquet(tmp_path / "ds/stages")
    assert set(chains["sample"]) == set(range(12))
    joined = stages.merge(chains, on=["sample", "chain"], suffixes=("_stage", "_chain"))
    assert len(joined) == len(stages)
    assert {"throughput_ratio", "response_time", "loss_ratio_hw"} <= set(chains.columns)
    manifest = json.loads((tmp_path / "ds/manifest.json").read_text())
    assert manifest["complete"] and manifest["counts"]["samples"] == 12
    assert manifest["identity"]["scenario"]["name"] == "dsn24"
    assert manifest["identity"]["simulator"]["precision"] == 0.1
    assert set(manifest["created_with"]) == {"git_revision", "package_version"}
    assert all(shard["code"] == manifest["created_with"] for shard in manifest["shards"].values())
    assert verify(tmp_path / "ds") == []


def test_same_data_whatever_the_number_of_workers(tmp_path):
    make(tmp_path / "one", workers=1)
    make(tmp_path / "two", workers=2)
    assert digests(tmp_path / "one") == digests(tmp_path / "two")


def test_same_data_whatever_the_engine(tmp_path):
    make(tmp_path / "fast", engine="fast")
    make(tmp_path / "simpy", engine="simpy")
    assert digests(tmp_path / "fast") == digests(tmp_path / "simpy")


def test_dask_executor_on_a_local_cluster_gives_the_same_data(tmp_path):
    pytest.importorskip("dask.distributed")
    from dask.distributed import LocalCluster

    make(tmp_path / "local", n=8)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        make(tmp_path / "dask", n=8, executor="dask", dask_address=cluster.scheduler_address)
    assert digests(tmp_path / "local") == digests(tmp_path / "dask")


def test_resume_never_overwrites_and_does_no_work_twice(tmp_path):
    make(tmp_path / "ds")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*.parquet")}
    summary = make(tmp_path / "ds")
    assert summary["simulated_now"] == 0
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*.parquet")}
    assert before == after


def _datagen(out, *extra):
    # The SimPy engine (same data as the fast one) keeps the run long enough to be killed mid-way.
    return subprocess.Popen(
        [sys.executable, "-m", "datagen", "n=24", "shard_size=4", "seed=7", "workers=1",
         f"out={out}", "hydra.run.dir=" + str(out) + "_logs", "simulator.engine=simpy",
         *FAST_ARGS, *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_shards(out: Path, count: int, proc, timeout=60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if len(checksums(out)) >= count:
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no shard written in time")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the command the kill tests interrupt."""
    out = tmp_path_factory.mktemp("ref") / "reference"
    proc = _datagen(out)
    assert proc.wait() == 0, proc.communicate()
    return out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_run_resumes_to_the_same_dataset(tmp_path, sig, reference):
    out = tmp_path / "killed"
    proc = _datagen(out)
    _wait_for_shards(out, 2, proc)
    proc.send_signal(sig)
    code = proc.wait()
    stderr = proc.communicate()[1]
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 130, stderr
        assert "run the same command again" in stderr and "Traceback" not in stderr
    done = len(checksums(out))
    assert 2 <= done < 6
    # What is on disk after the kill is consistent, only unfinished (a kill during a shard's
    # renames leaves files its record claims, which the next run finishes).
    problems = [p for p in verify(out) if "interrupted write" not in p]
    assert [p.split(":")[0] for p in problems] == ["incomplete"]
    again = _datagen(out)
    assert again.wait() == 0, again.communicate()
    assert digests(out) == digests(reference)
    for table in TABLES:
        pd.testing.assert_frame_equal(read_table(out, table), read_table(reference, table))
    # No temporary file left (the lock file stays; the system releases a dead run's lock).
    assert not [p for p in out.rglob(".*") if p.is_file() and p.name != ".lock"]


def test_an_interrupted_shard_write_is_made_again(tmp_path):
    make(tmp_path / "ds")
    reference = digests(tmp_path / "ds")
    # What a kill during a shard's renames leaves: its record under `writing` (the manifest names
    # the files before they appear), one file renamed (here damaged), the others still aside.
    manifest = json.loads((tmp_path / "ds/manifest.json").read_text())
    manifest["writing"] = {"2": manifest["shards"].pop("2")}
    manifest["complete"] = False
    (tmp_path / "ds/manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "ds/chains/part-00002.parquet").write_bytes(b"half a file")
    for table in ("samples", "stages", "devices"):
        part = tmp_path / "ds" / table / "part-00002.parquet"
        part.rename(part.with_name(".part-00002.parquet.tmp"))
    summary = make(tmp_path / "ds")
    assert summary["simulated_now"] == 4
    assert verify(tmp_path / "ds") == [] and digests(tmp_path / "ds") == reference
    assert not list((tmp_path / "ds").rglob(".part-*"))


def test_verify_reports_corruption(tmp_path):
    make(tmp_path / "ds")
    victim = tmp_path / "ds/stages/part-00001.parquet"
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    (tmp_path / "ds/devices/part-00000.parquet").unlink()
    problems = verify(tmp_path / "ds")
    assert any("stages/part-00001.parquet does not match" in p for p in problems)
    assert any("devices/part-00000.parquet is missing" in p for p in problems)
    proc = subprocess.run(
        [sys.executable, "-m", "datagen.verify", f"out={tmp_path / 'ds'}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1 and "2 problem(s)" in proc.stderr


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"n": -1}, DatasetError, "n: got -1"),
        ({"workers": 0}, DatasetError, "workers: got 0"),
        ({"executor": "spark"}, DatasetError, "executor: got 'spark'"),
        ({"preset": {**PRESET, "capacity": [60, 50]}}, PresetError, "min 60 is above max 50"),
        ({"preset": {**PRESET, "kind": "mesh"}}, PresetError, "scenario.kind"),
        ({"preset": {**PRESET, "chain_length": [2, 12]}}, PresetError, "device_pool"),
    ],
)
def test_bad_config_stops_before_any_work(tmp_path, change, error, message):
    kw = {"n": 4, "seed": 1, "out": tmp_path / "ds", "preset": PRESET, "settings": FAST}
    kw.update(change)
    with pytest.raises(error, match=message):
        generate(**kw)
    assert not (tmp_path / "ds").exists()


def test_folder_of_another_config_is_refused(tmp_path):
    make(tmp_path / "ds")
    with pytest.raises(DatasetError, match=r"another config \(seed: 7 in the folder, 8 now"):
        generate(n=12, seed=8, out=tmp_path / "ds", preset=PRESET, settings=FAST, shard_size=4,
                 workers=1)  # fmt: skip
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty and holds no manifest"):
        make(other)


def test_a_larger_n_extends_the_dataset_a_smaller_one_is_refused(tmp_path):
    make(tmp_path / "ds", n=10)  # shards of 4: the last one holds 2 samples
    summary = make(tmp_path / "ds", n=14)
    assert summary["simulated_now"] == 6  # the short shard made whole, and one more
    make(tmp_path / "fresh", n=14)
    assert digests(tmp_path / "ds") == digests(tmp_path / "fresh")  # byte for byte
    assert verify(tmp_path / "ds") == []
    with pytest.raises(DatasetError, match=r"n: got 8; .* with n=14\. Give n=14"):
        make(tmp_path / "ds", n=8)
    assert digests(tmp_path / "ds") == digests(tmp_path / "fresh")  # untouched


def test_command_line_errors_are_clean(tmp_path, monkeypatch, capsys):
    proc = subprocess.run(  # once as a user types it, in a process of its own
        [sys.executable, "-m", "datagen", f"out={tmp_path / 'x'}", "n=-5"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "n: got -5" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    for args, expected in [
        (["scenario=nope"], "scenario: got 'nope'; one of dsn24, dsn24_large, edge, edge_large"),
        (["scenario.capacity=[9,3]"], "min 9 is above max 3"),
    ]:
        args = [f"out={tmp_path / 'x'}", f"hydra.run.dir={tmp_path / 'run'}", *args]
        code, _, err = run_command(datagen_main, *args, monkeypatch=monkeypatch, capsys=capsys)
        assert code != 0 and expected in err, err
    assert not (tmp_path / "x").exists()


def test_from_dataset_resimulates_keeping_sample_ids(tmp_path):
    make(tmp_path / "src", n=8)
    # Same seed and settings: the labels are reproduced exactly from the stored scenarios.
    generate(n=None, seed=7, out=tmp_path / "same", preset=None, settings=FAST, shard_size=4,
             from_dataset=tmp_path / "src")  # fmt: skip
    for table in TABLES:
        pd.testing.assert_frame_equal(
            read_table(tmp_path / "same", table), read_table(tmp_path / "src", table)
        )
    finer = SimulatorSettings(precision=0.05, max_arrivals=30_000, warmup_arrivals=1000)
    generate(n=None, seed=7, out=tmp_path / "finer", preset=None, settings=finer, shard_size=4,
             from_dataset=tmp_path / "src")  # fmt: skip
    a, b = read_table(tmp_path / "src", "chains"), read_table(tmp_path / "finer", "chains")
    assert a[["sample", "chain", "arrival_rate"]].equals(b[["sample", "chain", "arrival_rate"]])
    assert not a["response_time"].equals(b["response_time"])


SPLIT = PUBLISHED


@pytest.mark.published
def test_import_chainnet_then_resimulate(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "datagen.import_chainnet", f"src={SPLIT}",
         f"out={tmp_path / 'val'}", "progress=false"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    chains = read_table(tmp_path / "val", "chains")
    assert len(chains) == 19_908
    first = (SPLIT / "raw/tputRatio.txt").read_text().split()[0]
    assert chains.loc[0, "throughput_ratio"] == pytest.approx(float(first))
    manifest = json.loads((tmp_path / "val/manifest.json").read_text())
    assert "deterministic" in manifest["identity"]["semantics"]["service"]
    generate(n=6, seed=0, out=tmp_path / "resim", preset=None, settings=FAST, shard_size=3,
             from_dataset=tmp_path / "val")  # fmt: skip
    ours = read_table(tmp_path / "resim", "chains")
    theirs = chains[chains["sample"] < 6].reset_index(drop=True)
    assert ours[["sample", "chain"]].equals(theirs[["sample", "chain"]])
    assert (ours["throughput_ratio"] - theirs["throughput_ratio"]).abs().median() < 0.02


def test_import_names_missing_files(tmp_path):
    raw = tmp_path / "split/raw"
    raw.mkdir(parents=True)
    (raw / "numNodes.txt").write_text("2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "datagen.import_chainnet", f"src={tmp_path / 'split'}",
         f"out={tmp_path / 'out'}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "service.txt" in proc.stderr and "path.txt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_kill_before_the_first_shard_leaves_a_resumable_folder(tmp_path):
    # What a kill during the very first steps can leave: table folders, partial files, no manifest.
    out = tmp_path / "ds"
    (out / "chains").mkdir(parents=True)
    (out / "chains/.part-00000.parquet.tmp").write_bytes(b"partial")
    (out / ".manifest.json.tmp").write_bytes(b"{")
    make(out)
    assert verify(out) == []


def test_damaged_recorded_shards_are_made_again(tmp_path):
    make(tmp_path / "ds")
    reference = digests(tmp_path / "ds")
    (tmp_path / "ds/chains/part-00001.parquet").unlink()
    victim = tmp_path / "ds/stages/part-00002.parquet"
    victim.write_bytes(victim.read_bytes()[:-4] + b"XXXX")
    summary = make(tmp_path / "ds")
    assert summary["simulated_now"] == 8
    assert digests(tmp_path / "ds") == reference and verify(tmp_path / "ds") == []


def test_two_runs_never_write_one_folder(tmp_path):
    from chainnet.dataset.store import DatasetStore

    first = DatasetStore(tmp_path / "ds", {"n": 1}, 4)
    try:
        with pytest.raises(DatasetError, match="another run is writing"):
            make(tmp_path / "ds")
    finally:
        first.close()


def test_verify_reports_an_unfinished_or_malformed_dataset(tmp_path):
    make(tmp_path / "ds")
    manifest = json.loads((tmp_path / "ds/manifest.json").read_text())
    del manifest["shards"]["2"]
    (tmp_path / "ds/manifest.json").write_text(json.dumps(manifest))
    assert any(p.startswith("incomplete: 8 of 12") for p in verify(tmp_path / "ds"))
    (tmp_path / "ds/manifest.json").write_text("[1, 2]")
    assert "not a valid" in verify(tmp_path / "ds")[0]


def test_from_dataset_refuses_an_unfinished_source(tmp_path):
    make(tmp_path / "src", n=8)
    manifest = json.loads((tmp_path / "src/manifest.json").read_text())
    manifest["n"] = 12  # 8 of 12 samples made: the run was stopped before its end
    (tmp_path / "src/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="from_dataset: .*8 of 12 samples"):
        generate(n=None, seed=7, out=tmp_path / "re", preset=None, settings=FAST,
                 from_dataset=tmp_path / "src")  # fmt: skip


def test_out_must_be_a_folder_and_import_shard_size_positive(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        make(tmp_path / "file")
    from datagen.import_chainnet import import_split

    for bad in (0, -5):
        with pytest.raises(DatasetError, match="shard_size"):
            import_split(SPLIT, tmp_path / "imp", shard_size=bad)
    assert not (tmp_path / "imp").exists()


def test_a_parallel_run_ends_quietly(tmp_path):
    # Pool workers once inherited the parent's SIGTERM handler and printed a traceback each time
    # the pool ended them.
    for _ in range(2):  # a new run, then a run with nothing left to do
        proc = subprocess.run(
            [sys.executable, "-m", "datagen", "n=8", "shard_size=4", "workers=2",
             f"out={tmp_path / 'ds'}", "hydra.run.dir=" + str(tmp_path / "logs"), *FAST_ARGS],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0
        assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr


def test_scripts_use_the_command_line_defaults():
    from hydra import compose, initialize_config_dir

    from chainnet.configs import CONF, settings_from
    from datagen.defaults import cli_defaults, preset

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="datagen")
    settings, engine, shard_size = cli_defaults()
    assert (settings, engine) == settings_from(cfg.simulator)
    assert shard_size == cfg.shard_size
    assert preset("dsn24") == dict(cfg.scenario)
    with pytest.raises(ValueError, match="no preset 'mesh'"):
        preset("mesh")
