"""Bad input to the scenario and problem files, the Python API and the commands' configs: one clear
line naming the field and where it is, never a traceback, never a silently wrong value."""

import json
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from tests_helpers import ROOT, run_command

from chainnet.cli.common import CONF, check_config, check_group_overrides
from chainnet.cli.simulate import main
from chainnet.documents import yaml_load
from chainnet.optim.problem import Problem
from chainnet.parsing import DocumentError, ScenarioTypeError
from chainnet.scenario import Device, Region, Scenario, ScenarioError, ServiceChain, Stage
from chainnet.sim import SimulatorSettings, make_engine, simulate

EXAMPLE = ROOT / "examples/edge_small.yaml"
PROBLEM = ROOT / "examples/problem_small.yaml"
QUICK = ["simulator.precision=0.2", "simulator.max_arrivals=20000", "progress=false"]


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text.strip(), text
    return text


def simulate_command(tmp_path, monkeypatch, capsys, *args):
    out = tmp_path / "run"
    return run_command(
        main, *args, f"hydra.run.dir={out}", monkeypatch=monkeypatch, capsys=capsys
    ), out


# ---- files: duplicate keys, malformed text, folders, empty documents ----
def test_duplicate_yaml_keys_are_refused_naming_the_key_and_the_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(
        "devices:\n  - {name: a, capacity: 2}\nchains:\n  - name: c\n    arrival_rate: 1\n"
        "    arrival_rate: 2\n    stages: [{device: a, work: 1}]\n"
    )
    with pytest.raises(ScenarioError) as exc:
        Scenario.load(path)
    msg = one_line(exc)
    assert "dup.yaml" in msg and "'arrival_rate'" in msg and "line 6" in msg and "line 5" in msg
    with pytest.raises(ScenarioError, match="line 2, column 59: duplicate key 'work'.*line 2"):
        Scenario.from_yaml("devices: [{capacity: 1}]\nchains: [{arrival_rate: 1, stages: [{device: "
                           "d0, work: 1, work: 2}]}]")  # fmt: skip
    problem = tmp_path / "problem.yaml"
    text = PROBLEM.read_text().replace("name: problem_small", "name: a\nname: problem_small")
    problem.write_text(text)
    with pytest.raises(ScenarioError, match="duplicate key 'name'"):
        Problem.load(problem)
    # a YAML merge key is not a duplicate: keys given beside `<<` override the merged ones
    merged = "base: &b {capacity: 2, name: a}\ndevices: [{<<: *b, capacity: 3}]\n"
    data = "chains: [{arrival_rate: 1, stages: [{device: a, work: 1}]}]\n"
    sc = Scenario.from_dict({k: v for k, v in yaml_load(merged + data).items() if k != "base"})
    assert sc.devices[0].capacity == 3


def test_duplicate_json_keys_are_refused_naming_the_key_and_the_line(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text(
        '{"devices": [{"name": "a", "capacity": 2}],\n "chains": [{"name": "c",\n'
        '   "arrival_rate": 1,\n   "stages": [{"device": "a", "work": 1}],\n'
        '   "arrival_rate": 2}]}\n'
    )
    with pytest.raises(ScenarioError) as exc:
        Scenario.load(path)
    msg = one_line(exc)
    assert "dup.json" in msg and "'arrival_rate'" in msg and "line 5" in msg
    # the same key in two different objects is fine; a duplicate deep inside is found
    text = json.dumps(Scenario.load(EXAMPLE).to_dict())
    assert Scenario.from_json(text) == Scenario.load(EXAMPLE)
    with pytest.raises(ScenarioError, match="duplicate key 'work'.*line 1"):
        Scenario.from_json(text.replace('"work": 0.6', '"work": 0.6, "work": 0.7'))


def test_malformed_yaml_keeps_line_and_column_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("devices: [{name: a, capacity: 2}\nchains: []\n")
    with pytest.raises(ScenarioError) as exc:
        Scenario.load(path)
    msg = one_line(exc)
    assert "bad.yaml" in msg and "line 2, column 1" in msg and "expected ',' or ']'" in msg
    with pytest.raises(ScenarioError) as exc:
        Scenario.from_yaml("devices: [\n  {capacity: 2\n")
    assert "line " in one_line(exc) and "column " in str(exc.value)


def test_a_folder_given_for_a_file_is_called_a_folder(tmp_path):
    folder = tmp_path / "scenario.yaml"
    folder.mkdir()
    with pytest.raises(ScenarioError) as exc:
        Scenario.load(folder)
    assert "is a folder" in one_line(exc) and "no such file" not in str(exc.value)
    with pytest.raises(ScenarioError, match="is a folder"):
        Problem.load(folder)
    with pytest.raises(ScenarioError, match="no such file"):
        Scenario.load(tmp_path / "missing.yaml")


def test_empty_documents_and_lists_say_what_is_wrong(tmp_path):
    for text, expected in [
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        ("[]\n", "not a list"),
        ("scenarios: []\n", "a list of scenarios"),
    ]:
        path = tmp_path / "doc.yaml"
        path.write_text(text)
        with pytest.raises(ScenarioError) as exc:
            Scenario.load(path)
        assert expected in one_line(exc), (text, str(exc.value))
    (tmp_path / "p.yaml").write_text("")
    with pytest.raises(ScenarioError, match="is empty"):
        Problem.load(tmp_path / "p.yaml")


# ---- the Python API: numpy scalars accepted, wrong types named ----
def test_numpy_integers_and_floats_are_numbers():
    s = SimulatorSettings(precision=np.float64(0.05), max_arrivals=np.int64(20000))
    assert s.max_arrivals == 20000 and type(s.max_arrivals) is int and type(s.precision) is float
    assert SimulatorSettings(precision=np.float32(0.25)).precision == 0.25
    dev = Device("a", capacity=np.int64(3), speed=np.float32(2.0), memory=np.int32(64))
    assert (type(dev.capacity), type(dev.speed), type(dev.memory)) == (int, float, int)
    stage = Stage("a", np.float64(0.5), job_memory=np.int64(8), exit_prob=np.float64(0.0))
    sc = Scenario([dev], [ServiceChain("c", np.float64(1.0), [stage])])
    assert "np." not in sc.to_yaml() and "numpy" not in sc.to_yaml()
    data = {
        "devices": [{"name": "a", "capacity": np.int64(3), "speed": np.float32(2)}],
        "chains": [
            {"arrival_rate": np.float64(1), "stages": [{"device": "a", "work": np.int8(1)}]}
        ],
    }
    assert Scenario.from_dict(data).devices[0].capacity == 3
    for bad in (True, np.bool_(True)):
        with pytest.raises(ScenarioError, match="capacity"):
            Device("a", capacity=bad)
        with pytest.raises(ValueError, match="max_arrivals"):
            SimulatorSettings(max_arrivals=bad)


def test_the_api_names_the_argument_given_a_wrong_type():
    sc = Scenario.load(EXAMPLE)
    cases = [
        (lambda: Scenario(devices="a", chains=sc.chains), "devices", "list of Device"),
        (lambda: Scenario([{"name": "a", "capacity": 1}], sc.chains), "devices[0]", "Device"),
        (lambda: Scenario(sc.devices, sc.chains[0]), "chains", "list of ServiceChain"),
        (lambda: Device("a", 1, speed="fast"), "speed", "number"),
        (lambda: Device("a", capacity="many"), "capacity", "integer"),
        (lambda: Stage("a", work=None), "work", "number"),
        (lambda: ServiceChain("c", 1.0, stages=[{"device": "a", "work": 1}]), "stages[0]", "Stage"),
        (lambda: Region("r", devices="ab", capacity=2), "devices", "list"),
        (lambda: simulate(str(EXAMPLE)), "scenario", "Scenario.load"),
        (lambda: simulate(sc.to_dict()), "scenario", "Scenario.from_dict"),
        (lambda: simulate(sc, settings={"precision": 0.1}), "settings", "SimulatorSettings"),
        (lambda: make_engine(sc, engine=1), "engine", "fast"),
        (lambda: simulate(sc, debug="yes"), "debug", "True or False"),
        (lambda: Scenario.load(None), "file", "path"),
    ]
    for call, name, expected in cases:
        with pytest.raises((TypeError, ScenarioError)) as exc:
            call()
        msg = one_line(exc)
        assert name in msg and expected in msg, msg
        assert not isinstance(exc.value, AttributeError)


def test_simulator_settings_refuse_wrong_types_and_ranges_in_one_line():
    for kwargs, expected in [
        ({"precision": "0.1"}, "simulator.precision: got '0.1'; expected a number"),
        ({"precision": 1.5}, "simulator.precision: got 1.5"),
        ({"precision": float("nan")}, "simulator.precision"),
        ({"max_arrivals": 1.5}, "simulator.max_arrivals: got 1.5; expected an integer"),
        ({"warmup_arrivals": 0}, "simulator.warmup_arrivals: got 0"),
        ({"min_batches": None}, "simulator.min_batches: got None"),
    ]:
        with pytest.raises(ValueError) as exc:
            SimulatorSettings(**kwargs)
        assert expected in one_line(exc), (kwargs, str(exc.value))
    assert SimulatorSettings(max_arrivals=2e4).max_arrivals == 20000  # 2e4 is an integer


def test_errors_survive_pickling_between_processes():
    """Worker processes (datagen, Dask) send exceptions back pickled: they must arrive whole."""
    for exc in [
        ScenarioError("scenario.devices[0].speed", -1.0, "must be > 0"),
        ScenarioTypeError("Device.speed", "fast", "expected a number"),
        DocumentError("deploy.yaml, line 3, column 1", "duplicate key 'a'"),
    ]:
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and back.where == exc.where


# ---- a memory that can never hold a job: a warning, not silence ----
def test_memory_that_cannot_hold_one_job_warns_naming_device_and_stage(tmp_path, monkeypatch,
                                                                       capsys):  # fmt: skip
    with pytest.warns(UserWarning, match=r"chains\[0\].stages\[0\].*device 'a'.*loss 1"):
        Scenario(
            [Device("a", 2, memory=10)], [ServiceChain("c", 1.0, [Stage("a", 1.0, job_memory=20)])]
        )
    region = Region("rack", ("a",), memory=5)
    with pytest.warns(UserWarning, match="region 'rack'"):
        Scenario(
            [Device("a", 2)], [ServiceChain("c", 1.0, [Stage("a", 1.0, job_memory=8)])], [region]
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Scenario.load(EXAMPLE)  # a scenario whose memory holds its jobs: no warning
        Scenario(
            [Device("a", 2, memory=10)], [ServiceChain("c", 1.0, [Stage("a", 1.0, job_memory=10)])]
        )
    path = tmp_path / "full.yaml"
    path.write_text(EXAMPLE.read_text().replace("job_memory: 64", "job_memory: 300"))
    (code, out, err), _ = simulate_command(
        tmp_path, monkeypatch, capsys, f"scenario_file={path}", *QUICK
    )
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and "camera" in lines[0] and "300" in lines[0], err


# ---- problems ----
def test_a_fragment_whose_job_memory_fits_no_device_is_named():
    data = Problem.load(PROBLEM).to_dict()
    data["services"][1]["fragments"][1]["job_memory"] = 5000
    with pytest.raises(ScenarioError) as exc:
        Problem.from_dict(data)
    msg = one_line(exc)
    assert "services[1].fragments[1]" in msg and "5000" in msg and "got ''" not in msg
    data = Problem.load(PROBLEM).to_dict()
    data["services"][0]["fragments"][0]["memory"] = 1000  # pinned to the gateway (RAM 1024)
    with pytest.raises(ScenarioError, match=r"services\[0\].fragments\[0\].*gateway"):
        Problem.from_dict(data)


# ---- the commands' configs ----
def test_simulate_debug_key_no_longer_clashes_with_train_debug_group(tmp_path, monkeypatch, capsys):
    (code, _, err), _ = simulate_command(
        tmp_path, monkeypatch, capsys, f"scenario_file={EXAMPLE}", "debug=true", *QUICK
    )
    assert code == 2 and "check_limits=true" in err and err.count("\n") == 1, err
    (code, out, err), _ = simulate_command(
        tmp_path, monkeypatch, capsys, f"scenario_file={EXAMPLE}", "check_limits=true", *QUICK
    )
    assert code == 0 and "per-chain QoS" in out, err
    check_group_overrides(["debug=fdr", "trainer.max_epochs=1"], "train")  # train keeps its group
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["debug=fdr"])
    assert cfg.trainer.fast_dev_run is True


def test_a_group_given_a_non_name_is_one_line(tmp_path, monkeypatch, capsys):
    for arg, expected in [("simulator=true", "simulator: got 'true'; one of"),
                          ("paths=3", "paths: got '3'; one of"),
                          ("model=gin", "model: not a setting of this command")]:  # fmt: skip
        (code, _, err), _ = simulate_command(
            tmp_path, monkeypatch, capsys, f"scenario_file={EXAMPLE}", arg, *QUICK
        )
        assert code == 2 and expected in err, (arg, err)
    with pytest.raises(ValueError, match=r"callbacks: got 'null'.*~callbacks leaves the group out"):
        check_group_overrides(["callbacks=null"], "train")  # Hydra's own check: a traceback


def test_simulate_chains_csv_holds_plain_numbers(tmp_path, monkeypatch, capsys):
    (code, _, err), out = simulate_command(
        tmp_path, monkeypatch, capsys, f"scenario_file={EXAMPLE}", *QUICK
    )
    assert code == 0, err
    for name in ("chains.csv", "stages.csv", "devices.csv"):
        text = (out / name).read_text()
        assert "np.float64" not in text and "[" not in text, name
    stages = pd.read_csv(out / "stages.csv")
    assert stages["exit_fraction"].dtype == float and stages["exit_fraction_hw"].dtype == float
    detect = stages[stages["chain"] == "detect"]
    assert detect["exit_fraction"].sum() == pytest.approx(1.0)  # every job leaves somewhere
    assert 0.2 < detect["exit_fraction"].iloc[0] < 0.5  # exit_prob 0.35 before drops


def test_unknown_keys_and_invalid_values_are_refused(tmp_path, monkeypatch, capsys):
    for arg, expected in [
        ("+bogus=1", "bogus: unknown setting"),
        ("++bogus=1", "bogus: unknown setting"),
        ("progress=maybe", "progress: got 'maybe'; expected true or false"),
        ("progress=1", "progress: got 1; expected true or false"),
        ("check_limits=null", "check_limits: got None; expected true or false"),
        ("seed=[1,2]", "seed: got [1, 2]; expected a number"),
        ("scenario_file=[a,b]", "scenario_file: got ['a', 'b']"),
        ("+simulator.foo=1", "simulator.foo: unknown setting"),
        ("+paths.extra=x", "paths.extra: unknown setting"),
    ]:
        (code, _, err), _ = simulate_command(
            tmp_path, monkeypatch, capsys, f"scenario_file={EXAMPLE}", *QUICK, arg
        )
        assert code == 2 and expected in err, (arg, err)


def _compose(name, overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
        check_config(cfg, name, overrides, open_groups=OPEN.get(name, ()))


OPEN = {"train": ("model", "trainer", "callbacks", "logger")}


@pytest.mark.parametrize(
    "name, overrides, expected",
    [
        ("optimize", ["problem=p.yaml", "budget_s=abc"], "budget_s: got 'abc'; expected a number"),
        ("optimize", ["problem=p.yaml", "progress=maybe"], "progress: got 'maybe'"),
        ("datagen", ["+bogus=1"], "bogus: unknown setting"),
        ("datagen", ["+scenario.foo=1"], "scenario.foo: unknown setting"),
        ("datagen", ["scenario.capacity=abc"], "scenario.capacity: got 'abc'; expected a list"),
        ("datagen", ["scenario.capacity=[a,b]"], "scenario.capacity[0]: got 'a'"),
        ("score", ["ckpt_path=c", "scenarios=s", "+show_all=true"], "show_all: unknown setting"),
        ("eval", ["analytic=maybe"], "analytic: got 'maybe'"),
        ("eval", ["+data.foo=1"], "data.foo: unknown setting"),
        ("train", ["+bogus=1"], "bogus: unknown setting"),
        ("train", ["train=maybe"], "train: got 'maybe'"),
        ("import_chainnet", ["src=a", "out=b", "progress=maybe"], "progress: got 'maybe'"),
        ("datagen_verify", ["out=a", "+verbose=true"], "verbose: unknown setting"),
    ],
)
def test_the_generic_config_check_on_every_command(name, overrides, expected):
    with pytest.raises(ValueError) as exc:
        _compose(name, overrides)
    assert expected in one_line(exc)


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("train", ["+trainer.precision=16", "model=chainnet_gat", "+model.net.heads=2"]),
        ("train", ["debug=fdr", "experiment=chainnet_dsn24", "data.fractions=[0.5,0.25,0.25]"]),
        ("train", ["+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor"]),
        ("train", ["hparams_search=chainnet_optuna", "model.net.hidden=32", "logger=wandb"]),
        ("train", ["~callbacks", "~logger", "tags=[a,b]", "seed=null"]),
        ("optimize", ["problem=p.yaml", "budget_s=null", "budget_evals=200", "batch_size=4"]),
        ("datagen", ["scenario=edge", "n=null", "workers=2", "simulator.max_arrivals=2e4"]),
        ("datagen", ["out=${paths.data_dir}/x", "seed=3"]),
        ("simulate", ["scenario_file=x.yaml", "simulator.precision=1", "check_limits=true"]),
    ],
)
def test_the_generic_config_check_lets_legitimate_overrides_through(name, overrides):
    _compose(name, overrides)


def test_the_score_reader_names_an_empty_list_and_a_stray_key(tmp_path):
    from chainnet.cli.score import read_scenarios

    empty = tmp_path / "empty.yaml"
    empty.write_text("scenarios: []\n")
    with pytest.raises(ScenarioError, match="the list of scenarios is empty"):
        read_scenarios(empty)
    stray = tmp_path / "stray.yaml"
    stray.write_text("scenarios: []\nscenario: {}\n")
    with pytest.raises(ScenarioError, match="scenario: got {}; unknown key beside scenarios"):
        read_scenarios(stray)


@pytest.mark.parametrize("speed, work", [(1e200, 1e-200), (1e-300, 1e300)])
def test_a_service_time_that_overflows_or_underflows_is_refused(speed, work):
    """Each number is finite, but work / speed is 0 or inf: the surrogate would divide by it."""
    with pytest.raises(ScenarioError, match=r"chains\[0\].stages\[0\].work: .*finite number > 0"):
        Scenario(
            [Device("a", capacity=2, speed=speed)], [ServiceChain("c", 1.0, [Stage("a", work)])]
        )


@pytest.mark.parametrize(
    "path, value, field",
    [
        (("services", 0, "fragments", 2, "accuracy"), 1.5, r"fragments\[2\].accuracy"),
        (
            ("services", 0, "fragments", 0, "distribution"),
            "weibull",
            r"fragments\[0\].distribution",
        ),
        (("services", 1, "fragments", 0, "scv"), 0.5, r"services\[1\]\.fragments\[0\]\.scv"),
        (("devices", 1, "discipline"), "lifo", r"devices\[1\].discipline"),
    ],
)
def test_problem_mistakes_name_the_problem_field(path, value, field):
    """Caught in the problem file, not later in a generated scenario's terms."""
    d = yaml.safe_load((ROOT / "examples/problem_small.yaml").read_text())
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ScenarioError, match=field):
        Problem.from_dict(d)
