"""The problem families of `problem_family`: sizes, determinism, gateways, RAM that binds, exits,
and loads from light to overloaded; small ones searchable exhaustively, large ones valid."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from chainnet.optim.generators import (
    FAMILIES,
    mean_work,
    problem_family,
    ram_binds,
    system_load,
)
from chainnet.optim.problem import Problem
from chainnet.optim.space import COUNT_LIMIT, EXHAUSTIVE_LIMIT, SearchSpace
from chainnet.sim import SimulatorSettings, simulate

SEEDS = range(30)


@pytest.fixture(scope="module")
def drawn():
    return {name: [problem_family(name, s) for s in SEEDS] for name in FAMILIES}


@pytest.mark.parametrize(
    "name, devices, services, fragments",
    [("small", (3, 4), (2, 2), (2, 3)), ("medium", (4, 8), (2, 4), (2, 5)),
     ("large", (20, 40), (6, 12), (3, 8))],
)  # fmt: skip
def test_each_family_has_its_sizes(drawn, name, devices, services, fragments):
    problems = drawn[name]
    n_dev = [len(p.devices) for p in problems]
    n_srv = [len(p.services) for p in problems]
    n_frag = [len(sv.fragments) for p in problems for sv in p.services]
    assert devices[0] <= min(n_dev) and max(n_dev) <= devices[1] and len(set(n_dev)) > 1
    assert services[0] <= min(n_srv) and max(n_srv) <= services[1]
    assert (min(n_frag), max(n_frag)) == fragments


def test_the_same_seed_gives_the_same_problem_and_others_differ():
    for name in FAMILIES:
        assert problem_family(name, 7) == problem_family(name, 7)
        assert problem_family(name, 7) != problem_family(name, 8)
    assert problem_family("small", 7).name == "small_7"


def test_a_problem_is_the_same_in_another_process():
    code = "from chainnet.optim.generators import problem_family as f; print(f('medium', 5))"
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            env=os.environ | {"PYTHONHASHSEED": str(h)},
            capture_output=True, text=True, check=True,
        ).stdout
        for h in (1, 2)
    ]  # fmt: skip
    assert runs[0] == runs[1] == f"{problem_family('medium', 5)}\n"


def test_small_problems_can_be_searched_exhaustively(drawn):
    for p in drawn["small"]:
        space = SearchSpace(p)
        assert space.size <= COUNT_LIMIT <= EXHAUSTIVE_LIMIT
        assert 0 < space.n_feasible < space.size  # something fits, and RAM rules some out


def test_large_problems_are_valid_and_their_deployments_simulate(drawn):
    settings = SimulatorSettings(precision=0.2, max_arrivals=5000, warmup_arrivals=500)
    for i, p in enumerate(drawn["large"]):
        assert Problem.from_dict(yaml.safe_load(yaml.safe_dump(p.to_dict()))) == p
        space = SearchSpace(p)
        assert space.size > 1e30
        if i < 2:  # a random feasible deployment is a scenario the simulator runs
            genes = space.random_candidate(np.random.default_rng(i))
            result = simulate(space.scenario(genes), i, settings)
            assert len(result.chains) == len(p.services)


def test_gateways_fix_the_first_fragment_on_a_slow_small_device(drawn):
    for problems in drawn.values():
        for p in problems:
            devices = {d.name: d for d in p.devices}
            for sv in p.services:
                gw = devices[sv.gateway]
                assert sv.gateway.startswith("gw") and gw.speed <= 1.0 and gw.ram <= 2048
                load = sum(
                    s.arrival_rate * s.fragments[0].work for s in p.services if s.gateway == gw.name
                )
                assert load / gw.speed <= 0.7 + 1e-9  # no placement could relieve a gateway
            space = SearchSpace(p)
            assert space.fixed.sum() == len(p.services)


def test_ram_binds_the_fastest_devices_and_rules_out_random_placements(drawn):
    for name, problems in drawn.items():
        infeasible = []
        for i, p in enumerate(problems):
            assert ram_binds(p)
            fastest = max(p.devices, key=lambda d: d.speed)
            assert sum(fr.memory for sv in p.services for fr in sv.fragments) > fastest.ram
            space, rng = SearchSpace(p), np.random.default_rng(i)
            draws = [rng.integers(0, space.domains) for _ in range(50)]
            infeasible.append(np.mean([not space.feasible(c) for c in draws]))
        assert min(infeasible) > 0 and np.mean(infeasible) > 0.3, (name, infeasible)


def test_exits_sit_on_about_half_of_the_non_final_fragments(drawn):
    for name, problems in drawn.items():
        flags = [bool(fr.exit) for p in problems for sv in p.services for fr in sv.fragments[:-1]]
        assert 0.35 < np.mean(flags) < 0.65, name
        for p in problems:
            assert all(not sv.fragments[-1].exit for sv in p.services)


def test_loads_range_from_light_to_overloaded(drawn):
    for name, problems in drawn.items():
        loads = [system_load(p) for p in problems]
        assert min(loads) < 0.5 and max(loads) > 1.0, (name, loads)
        assert all(0.1 < x < 1.6 for x in loads)


def test_load_counts_the_least_exiting_rows():
    p = problem_family("medium", 3)
    sv = next(sv for sv in p.services if any(fr.exit for fr in sv.fragments))
    assert mean_work(sv) < sum(fr.work for fr in sv.fragments)
    work = sum(s.arrival_rate * mean_work(s) for s in p.services)
    assert system_load(p) == pytest.approx(work / sum(d.speed for d in p.devices))


def test_max_accuracy_objective():
    p = problem_family("medium", 2, objective="max_accuracy")
    assert p.objective.kind == "max_accuracy" and p.objective.max_loss == 0.05
    assert [sv.fragments for sv in p.services] == [
        sv.fragments for sv in problem_family("medium", 2).services
    ]


@pytest.mark.parametrize(
    "args, message",
    [(("huge", 0), "family: got 'huge'; one of large, medium, small"),
     (("small", -1), "seed: got -1; expected an integer >= 0"),
     (("small", 1.5), "seed: got 1.5; expected an integer >= 0"),
     (("small", 0, "fast"), "objective: got 'fast'; one of min_loss, max_accuracy")],
)  # fmt: skip
def test_bad_arguments_are_one_clear_line(args, message):
    with pytest.raises(ValueError) as err:
        problem_family(*args)
    assert str(err.value) == message


def test_the_readme_shows_what_the_families_print(capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "ram_binds" in b)
    exec(compile(block, "README.md", "exec"), {})
    shown = [line[2:] for line in block.splitlines() if line.startswith("# ")]
    assert capsys.readouterr().out.splitlines() == shown and len(shown) == 3
