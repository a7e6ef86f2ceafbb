"""Datasets: nothing lost (a run deletes only its own files), nothing read silently wrong (readers
check what `datagen.verify` checks), and workers that end quietly with their parent (issue 13)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tests_helpers import FAST, FAST_ARGS, PRESET, ROOT, run_command

from chainnet.cli.eval import main as eval_main
from chainnet.dataset.store import DatasetError, DatasetStore, read_table, verify
from chainnet.dataset.tables import TABLES
from chainnet.learn.data import QoSDataset
from datagen.__main__ import main as datagen_main
from datagen.generate import generate
from datagen.verify import main as verify_main


def make(out, n=8, **kw):
    kw = {"workers": 1, "progress": False, **kw}
    return generate(n=n, seed=7, out=out, preset=PRESET, settings=FAST, shard_size=4, **kw)


def files_of(root: Path) -> dict[str, bytes]:
    """Every file under `root` (the lock aside) and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def shard_digests(root: Path) -> dict:
    shards = json.loads((root / "manifest.json").read_text())["shards"]
    return {k: v["sha256"] for k, v in shards.items()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A complete dataset of 8 samples in 2 shards; tests work on copies of it."""
    out = tmp_path_factory.mktemp("integrity") / "ds"
    make(out)
    return out


@pytest.fixture
def ds(dataset, tmp_path) -> Path:
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy, ignore=shutil.ignore_patterns(".lock", "processed"))
    return copy


def flip_a_byte(path: Path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


# Case 1: a folder of part files without a manifest is refused, and nothing in it is touched.


def test_part_files_without_a_manifest_are_refused_and_kept(ds, tmp_path, monkeypatch, capsys):
    (ds / "manifest.json").unlink()
    before = files_of(ds)
    with pytest.raises(DatasetError, match=r"holds no manifest\.json .*chains/part-00000\.parquet"):
        make(ds)
    assert files_of(ds) == before
    args = [f"out={ds}", "n=8", "shard_size=4", "seed=7", f"hydra.run.dir={tmp_path / 'run'}"]
    code, _, err = run_command(
        datagen_main, *args, *FAST_ARGS, monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "no manifest.json" in err
    assert files_of(ds) == before


def test_a_first_run_killed_early_leaves_a_folder_that_can_still_be_used(tmp_path):
    # Only what an interrupted first run can leave: our temporary files, the lock, empty folders.
    out = tmp_path / "ds"
    (out / "samples").mkdir(parents=True)
    (out / "stages").mkdir()
    (out / "stages/.part-00000.parquet.tmp").write_bytes(b"partial")
    (out / ".manifest.json.tmp").write_bytes(b"{")
    (out / ".lock").write_text("")
    make(out)
    assert verify(out) == []


# Case 2: resuming deletes only our own temporary files; anything else stops the run, named.


@pytest.mark.parametrize(
    "name, content",
    [("samples/notes.txt", b"my notes"), ("chains/part-00099.parquet", None)],
)
def test_resume_stops_on_a_file_it_did_not_write_and_deletes_nothing(ds, name, content):
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest.update(n=12, complete=False)  # an unfinished dataset: the run has work to do
    (ds / "manifest.json").write_text(json.dumps(manifest))
    stray = ds / name
    stray.write_bytes(content or (ds / "chains/part-00000.parquet").read_bytes())
    before = files_of(ds)
    with pytest.raises(DatasetError, match=name.replace(".", r"\.") + ".*Nothing was changed"):
        make(ds, n=12)
    assert files_of(ds) == before  # nothing deleted, nothing written


def test_our_temporary_files_are_removed_on_resume(ds):
    for table in TABLES:
        (ds / table / ".part-00001.parquet.tmp").write_bytes(b"half")
    (ds / "chains/.notes").write_text("hidden, not read by pandas: left alone")
    make(ds)
    assert not list(ds.rglob(".part-*.tmp"))
    assert (ds / "chains/.notes").read_text().startswith("hidden")
    assert verify(ds) == []


def test_a_kill_between_a_shards_renames_and_its_record_loses_nothing(tmp_path, monkeypatch):
    """The shard's files are renamed into place, the run dies before the manifest records them:
    the next run recognises them as its own interrupted write and finishes byte for byte."""
    reference = tmp_path / "ref"
    make(reference, n=12)
    real_replace = os.replace

    def dying_replace(src, dst):
        real_replace(src, dst)
        if str(dst).endswith("stages/part-00001.parquet"):
            raise KeyboardInterrupt  # a kill right after this rename

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(Exception):  # noqa: B017 (the interrupt, however the run reports it)
        make(tmp_path / "ds", n=12)
    monkeypatch.undo()
    assert (tmp_path / "ds/stages/part-00001.parquet").exists()
    summary = make(tmp_path / "ds", n=12)
    assert summary["samples"] == 12
    assert shard_digests(tmp_path / "ds") == shard_digests(reference)
    assert verify(tmp_path / "ds") == []


# Case 3: verify and every reader refuse a stray part file, a damaged shard, an unfinished dataset.


def test_verify_flags_a_stray_part_file(ds, monkeypatch, capsys, tmp_path):
    shutil.copy(ds / "samples/part-00000.parquet", ds / "samples/part-00099.parquet")
    assert len(pd.read_parquet(ds / "samples")) == 12  # what plain pandas would read: 4 too many
    problems = verify(ds)
    assert any("samples/part-00099.parquet" in p for p in problems), problems
    code, out, err = run_command(
        verify_main,
        f"out={ds}",
        f"hydra.run.dir={tmp_path / 'run'}",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 1 and "samples/part-00099.parquet" in err and "every shard" not in out


@pytest.mark.parametrize("fault", ["bit flip", "truncated", "stray part", "unfinished", "missing"])
def test_read_table_refuses_what_verify_refuses(ds, fault):
    shard = ds / "chains/part-00001.parquet"
    if fault == "bit flip":
        flip_a_byte(shard)
    elif fault == "truncated":
        shard.write_bytes(shard.read_bytes()[:-50])
    elif fault == "stray part":
        shutil.copy(shard, ds / "chains/part-00007.parquet")
    elif fault == "missing":
        shard.unlink()
    else:
        manifest = json.loads((ds / "manifest.json").read_text())
        manifest["n"] = 12  # extended, and not finished yet
        (ds / "manifest.json").write_text(json.dumps(manifest))
    assert verify(ds)
    with pytest.raises(DatasetError, match=str(ds)):
        read_table(ds, "chains")


def test_a_partial_read_is_explicit_and_still_checked(ds):
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest["n"] = 12
    (ds / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="incomplete"):
        read_table(ds, "samples")
    assert read_table(ds, "samples", allow_incomplete=True)["sample"].tolist() == list(range(8))
    flip_a_byte(ds / "samples/part-00000.parquet")
    with pytest.raises(DatasetError, match="samples/part-00000.parquet"):
        read_table(ds, "samples", allow_incomplete=True)


def test_training_data_refuses_a_damaged_dataset_even_when_cached(ds):
    QoSDataset(ds, "train")  # processed and cached while the dataset was sound
    flip_a_byte(ds / "stages/part-00000.parquet")
    with pytest.raises(DatasetError, match="stages/part-00000.parquet"):
        QoSDataset(ds, "train")


def test_eval_refuses_a_stray_part_file_in_one_line(
    tiny, tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    data = tmp_path / "data"
    shutil.copytree(tiny, data, ignore=shutil.ignore_patterns(".lock", "processed"))
    shutil.copy(data / "samples/part-00000.parquet", data / "samples/part-00099.parquet")
    for extra in ([f"ckpt_path={tiny_checkpoint}"], ["analytic=true"]):
        code, _, err = run_command(
            eval_main,
            *extra,
            f"data.root={data}",
            "data.fractions=[0,0,1]",
            f"hydra.run.dir={tmp_path / 'run'}",
            monkeypatch=monkeypatch,
            capsys=capsys,
        )
        assert code == 2 and err.count("\n") == 1, err
        assert "samples/part-00099.parquet" in err


# Case 4: from_dataset without n takes the whole source; scenario overrides are refused.


def test_from_dataset_without_n_takes_the_whole_source(dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "re"
    args = [f"from_dataset={dataset}", f"out={out}", "seed=7", "shard_size=4"]
    code, _, err = run_command(
        datagen_main,
        *args,
        *FAST_ARGS,
        f"hydra.run.dir={tmp_path / 'run'}",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 0, err
    assert shard_digests(out) == shard_digests(dataset)  # same seed, settings: same bytes


@pytest.mark.parametrize(
    "override", ["scenario.capacity=[50,1]", "scenario.capacity=[1,20]", "scenario=edge"]
)
def test_from_dataset_refuses_scenario_overrides(dataset, tmp_path, override, monkeypatch, capsys):
    args = [f"from_dataset={dataset}", f"out={tmp_path / 're'}", override]
    code, _, err = run_command(
        datagen_main,
        *args,
        f"hydra.run.dir={tmp_path / 'run'}",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 2 and err.count("\n") == 1, err
    assert override.split("=")[0] in err and "from_dataset" in err
    assert not (tmp_path / "re").exists()


def test_from_dataset_needs_an_out_folder(dataset, tmp_path, monkeypatch, capsys):
    # The default out, data/<preset>, would take the re-simulated set into the preset's dataset.
    monkeypatch.chdir(tmp_path)
    code, _, err = run_command(
        datagen_main,
        f"from_dataset={dataset}",
        f"paths.root_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 2 and "out: give the folder" in err, err
    assert not (tmp_path / "data").exists()


def test_n_left_out_resumes_with_the_recorded_n(dataset, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(dataset, out, ignore=shutil.ignore_patterns(".lock", "processed"))
    summary = generate(
        n=None, seed=7, out=out, preset=PRESET, settings=FAST, shard_size=4, progress=False
    )
    assert summary["samples"] == 8 and summary["simulated_now"] == 0


# Case 5: workers end quietly, and at once, when their parent is killed.


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_quietly_when_their_parent_is_killed(tmp_path):
    out, log = tmp_path / "ds", tmp_path / "stderr"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "datagen", "n=40", "shard_size=2", "workers=2",
             f"out={out}", f"hydra.run.dir={tmp_path / 'run'}", "simulator.engine=simpy",
             *FAST_ARGS],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            manifest = out / "manifest.json"
            if manifest.exists() and json.loads(manifest.read_text() or "{}").get("shards"):
                break
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert proc.poll() is None and len(workers) == 2, log.read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.05)
        survivors = [w for w in workers if _alive(w)]
        for w in survivors:
            os.kill(w, signal.SIGKILL)
        time.sleep(0.5)  # let anything a dying worker writes reach the file
    assert not survivors, "workers outlived their parent by more than 5 s"
    text = log.read_text()
    assert "Traceback" not in text and "BrokenPipeError" not in text, text


def test_a_store_record_names_its_pending_files_before_they_appear(tmp_path, monkeypatch):
    """Write order: files under temporary names, then their intended record, then the renames."""
    store = DatasetStore(tmp_path / "ds", {"seed": 0}, 2)
    seen = []
    real_replace = os.replace

    def watching_replace(src, dst):
        if str(dst).endswith(".parquet"):
            seen.append(json.loads((tmp_path / "ds/manifest.json").read_text()).get("writing"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching_replace)
    try:
        store.write_shard(0, {t: pd.DataFrame({"sample": [0, 1]}) for t in TABLES}, {})
    finally:
        monkeypatch.undo()
        store.close()
    assert seen and all(w and "0" in w for w in seen)
    manifest = json.loads((tmp_path / "ds/manifest.json").read_text())
    assert "0" in manifest["shards"] and not manifest.get("writing")


def test_a_manifest_cannot_point_a_run_outside_its_tables(ds, tmp_path):
    # A run deletes recorded files it finds damaged: a hand-edited record must not reach outside.
    outside = tmp_path / "precious.parquet"
    outside.write_bytes(b"not yours")
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest["shards"]["1"]["sha256"]["../precious.parquet"] = "0" * 64
    (ds / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="not a valid .*'../precious.parquet'"):
        make(ds)
    assert outside.read_bytes() == b"not yours"
    assert "not a valid" in verify(ds)[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["+bogus=1"], "bogus: unknown setting"),
        (["+scenario.capacty=[1,5]"], "scenario.capacty: unknown setting"),
        (["progress=maybe"], "progress: got 'maybe'"),
    ],
)
def test_datagen_refuses_settings_it_would_ignore(tmp_path, args, message, monkeypatch, capsys):
    out = tmp_path / "ds"
    code, _, err = run_command(
        datagen_main,
        f"out={out}",
        "n=2",
        *args,
        f"hydra.run.dir={tmp_path / 'run'}",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.slow
def test_fault_injection_ends_byte_identical(tmp_path):
    proc = subprocess.run(
        [sys.executable, "experiments/fault_injection.py", "--kills", "4", "--rounds", "1",
         "--n", "30", "--out", str(tmp_path / "faults.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "faults.json").read_text())
    assert result["final_dataset_identical_to_uninterrupted_run"]
    assert result["counts"]["kills in a row on one dataset"] == 4
