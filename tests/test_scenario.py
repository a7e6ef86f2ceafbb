"""The scenario schema: round trips, derived facts, one clear error for each kind of bad input."""

import math

import pytest

from chainnet.scenario import Device, Region, Scenario, ScenarioError, ServiceChain, Stage

EDGE = {
    "name": "edge",
    "devices": [
        {"name": "cam", "capacity": 4, "speed": 2.0, "memory": 512},
        {"name": "gw", "capacity": 10, "discipline": "ps"},
    ],
    "regions": [{"name": "rack", "devices": ["cam", "gw"], "capacity": 12, "memory": 900}],
    "chains": [
        {
            "name": "detect",
            "arrival_rate": 0.5,
            "stages": [
                {"device": "cam", "work": 1.0, "job_memory": 64, "exit_prob": 0.4,
                 "exit_accuracy": 0.7},
                {"device": "gw", "work": 2.0, "distribution": "general", "scv": 2.5,
                 "exit_accuracy": 0.9},
            ],
        },
        {
            "name": "classify",
            "arrival_rate": 1.0,
            "routes": [
                {"prob": 0.25, "stages": [{"device": "cam", "work": 0.5, "distribution": "exp"}]},
                {"prob": 0.75, "stages": [{"device": "gw", "work": 0.5}]},
            ],
        },
    ],
}  # fmt: skip


def edge() -> Scenario:
    return Scenario.from_dict(EDGE)


def test_round_trip_json_and_yaml(tmp_path):
    sc = edge()
    assert Scenario.from_json(sc.to_json()) == sc
    assert Scenario.from_yaml(sc.to_yaml()) == sc
    for suffix, text in ((".json", sc.to_json()), (".yaml", sc.to_yaml())):
        path = tmp_path / f"s{suffix}"
        path.write_text(text)
        assert Scenario.load(path) == sc


def test_routes_split_a_service_into_chains_with_split_rates():
    sc = edge()
    names = [c.name for c in sc.chains]
    assert names == ["detect", "classify/r0", "classify/r1"]
    assert [c.service for c in sc.chains] == ["detect", "classify", "classify"]
    assert sc.chains[1].arrival_rate == pytest.approx(0.25)
    assert sc.chains[2].arrival_rate == pytest.approx(0.75)


def test_derived_facts():
    sc = edge()
    detect = sc.chains[0]
    assert sc.mean_service_time(detect.stages[0]) == pytest.approx(0.5)  # work 1 / speed 2
    assert sc.visit_probabilities(detect) == pytest.approx([1.0, 0.6])
    assert detect.stages[1].service_scv == 2.5
    loads = sc.offered_loads()
    # cam: 0.5 * 1 * 0.5 + 0.25 * 0.5 / 2 ; gw: 0.5 * 0.6 * 2 + 0.75 * 0.5
    assert loads == pytest.approx([0.25 + 0.0625, 0.6 + 0.375])


def test_scenario_built_in_code_is_validated_like_a_file():
    with pytest.raises(ScenarioError, match=r"chains\[0\]\.stages\[0\]\.device"):
        Scenario([Device("a", 1)], [ServiceChain("c", 1.0, [Stage("nope", 1.0)])])


def _broken(path, value):
    """EDGE with the field at `path` (keys and indices) replaced by `value` (or removed)."""
    import copy

    d = copy.deepcopy(EDGE)
    node = d
    for key in path[:-1]:
        node = node[key]
    if value is _REMOVE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


_REMOVE = object()


@pytest.mark.parametrize(
    "path, value, where, allowed",
    [
        (("chains", 0, "stages", 0, "device"), "phone", "chains[0].stages[0].device", "no such"),
        (("chains", 0, "arrival_rate"), -1.0, "chains[0].arrival_rate", "> 0"),
        (("chains", 0, "arrival_rate"), math.nan, "chains[0].arrival_rate", "finite"),
        (("chains", 0, "stages", 0, "exit_prob"), 1.5, "stages[0].exit_prob", "[0, 1]"),
        (("chains", 0, "stages", 1, "exit_prob"), 0.2, "stages[1].exit_prob", "last stage"),
        (("chains", 0, "stages", 0, "exit_accuracy"), -0.1, "exit_accuracy", "[0, 1]"),
        (("devices", 0, "capacity"), 0, "devices[0].capacity", ">= 1"),
        (("devices", 0, "capacity"), 2.5, "devices[0].capacity", "integer"),
        (("devices", 0, "speed"), math.inf, "devices[0].speed", "finite"),
        (("devices", 1, "discipline"), "lifo", "devices[1].discipline", "fcfs"),
        (("devices", 1, "name"), "cam", "devices[1].name", "unique"),
        (("chains", 0, "stages"), [], "chains[0].stages", "at least one stage"),
        (("chains", 0, "stages", 0, "work"), 0.0, "stages[0].work", "> 0"),
        (("chains", 0, "stages", 0, "work"), "fast", "stages[0].work", "number"),
        (("chains", 0, "stages", 0, "colour"), "red", "stages[0].colour", "unknown key"),
        (("chains", 0, "stages", 1, "scv"), _REMOVE, "stages[1].scv", "scv > 0"),
        (("chains", 0, "stages", 0, "scv"), 1.0, "stages[0].scv", "only set for"),
        (("chains", 0, "stages", 0, "job_memory"), -5, "stages[0].job_memory", ">= 0"),
        (("chains", 1, "routes", 0, "prob"), 0.5, "chains[1].routes", "sum to 1"),
        (("regions", 0, "devices", 1), "cloud", "regions[0].devices[1]", "no such"),
        (("regions", 0, "capacity"), _REMOVE, "regions[0]", None),
        (("devices",), [], "devices", "at least one device"),
        (("chains",), "all", "chains", "list"),
        (("colour",), "red", "scenario.colour", "unknown key"),
    ],
)
def test_bad_input_names_field_value_and_rule(path, value, where, allowed):
    data = _broken(path, value)
    if path == ("regions", 0, "capacity"):
        del data["regions"][0]["memory"]
        allowed = "capacity, a memory limit"
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict(data)
    msg = str(err.value)
    assert where in msg
    assert allowed in msg
    assert msg.startswith("scenario.")


def test_missing_required_field_and_bad_documents(tmp_path):
    with pytest.raises(ScenarioError, match=r"devices\[0\]\.capacity: got None; required"):
        Scenario.from_dict({"devices": [{"name": "a"}], "chains": []})
    with pytest.raises(ScenarioError, match="not valid YAML"):
        Scenario.from_yaml("devices: [")
    with pytest.raises(ScenarioError, match="no such file"):
        Scenario.load(tmp_path / "missing.yaml")
    with pytest.raises(ScenarioError, match="expected a mapping"):
        Scenario.from_dict([1, 2, 3])


def test_region_spanning_devices_is_kept():
    sc = edge()
    assert sc.regions == (Region("rack", ("cam", "gw"), capacity=12, memory=900.0),)


def test_yaml_reads_scientific_notation_as_numbers():
    text = "devices: [{capacity: 3}]\n"
    text += "chains: [{arrival_rate: 5e-1, stages: [{device: d0, work: 2E0}]}]"
    sc = Scenario.from_yaml(text)
    assert sc.chains[0].arrival_rate == 0.5 and sc.chains[0].stages[0].work == 2.0
