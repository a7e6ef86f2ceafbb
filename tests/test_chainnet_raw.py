"""The ChainNet DSN'24 raw reader: values against the raw text, the dataset's rules, errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from tests_helpers import PUBLISHED

from chainnet.dataset.published import (
    DERIVED_FILES,
    LABEL_FILES,
    ChainNetFormatError,
    ChainNetSample,
    check_derived_features,
    read_chainnet_split,
)

VAL = PUBLISHED
N = 200
needs_data = pytest.mark.published


@pytest.fixture(scope="module")
def samples() -> list[ChainNetSample]:
    return read_chainnet_split(VAL, limit=N)


def _first_lines(name: str, count: int) -> list[list[str]]:
    with open(VAL / "raw" / name) as f:
        return [next(f).split() for _ in range(count)]


@needs_data
def test_counts_agree_with_raw_files(samples: list[ChainNetSample]) -> None:
    assert len(samples) == N
    nodes = [int(r[0]) for r in _first_lines("numNodes.txt", N)]
    classes = [int(r[0]) for r in _first_lines("numClasses.txt", N)]
    for k, s in enumerate(samples):
        assert s.index == k
        assert s.scenario.name == f"chainnet_val_{k}"
        assert len(s.scenario.devices) == nodes[k]
        assert len(s.scenario.chains) == classes[k]
        assert set(s.labels) == set(LABEL_FILES)
        assert all(len(v) == classes[k] for v in s.labels.values())


@needs_data
def test_first_sample_matches_raw_text(samples: list[ChainNetSample]) -> None:
    m = int(_first_lines("numClasses.txt", 1)[0][0])
    (caps,) = _first_lines("capacity.txt", 1)
    paths = _first_lines("path.txt", m)
    services = _first_lines("service.txt", m)
    gaps = [float(r[0]) for r in _first_lines("arrival.txt", m)]
    sc = samples[0].scenario
    assert [d.name for d in sc.devices] == [f"d{i + 1}" for i in range(len(caps))]
    assert [d.capacity for d in sc.devices] == [int(c) for c in caps]
    assert all(d.speed == 1.0 and d.discipline == "fcfs" for d in sc.devices)
    for j, chain in enumerate(sc.chains):
        assert chain.name == f"c{j}"
        assert [st.device for st in chain.stages] == [f"d{p}" for p in paths[j]]
        assert [st.work for st in chain.stages] == [float(w) for w in services[j]]
        assert all(st.distribution == "det" for st in chain.stages)
        assert chain.arrival_rate == pytest.approx(1.0 / gaps[j], rel=1e-15)
    for key, name in LABEL_FILES.items():
        want = [float(r[0]) for r in _first_lines(name, m)]
        np.testing.assert_array_equal(samples[0].labels[key], want)


@needs_data
def test_arrival_rate_is_reciprocal_of_inter_arrival(samples: list[ChainNetSample]) -> None:
    n_chains = sum(len(s.scenario.chains) for s in samples)
    gaps = [float(r[0]) for r in _first_lines("arrival.txt", n_chains)]
    rates = [c.arrival_rate for s in samples for c in s.scenario.chains]
    np.testing.assert_allclose(np.array(rates) * np.array(gaps), 1.0, rtol=1e-14)


@needs_data
def test_scenarios_follow_the_published_generator_rules(samples: list[ChainNetSample]) -> None:
    for s in samples:
        sc = s.scenario
        assert 1 <= len(sc.chains) <= 3
        hosted = Counter(st.device for c in sc.chains for st in c.stages)
        assert set(hosted) == {d.name for d in sc.devices}, "every device is used"
        assert all(1 <= k <= 3 for k in hosted.values()), "1-3 fragments per device"
        assert all(1 <= d.capacity <= 50 for d in sc.devices)
        for c in sc.chains:
            assert 2 <= len(c.stages) <= 6
            assert len({st.device for st in c.stages}) == len(c.stages), "no device twice"


@needs_data
def test_derived_features_match_our_schema() -> None:
    worst = check_derived_features(VAL, limit=N)
    assert set(worst) == set(DERIVED_FILES)
    assert all(v < 1e-6 for v in worst.values()), worst


@needs_data
def test_raw_folder_itself_is_accepted(samples: list[ChainNetSample]) -> None:
    again = read_chainnet_split(VAL / "raw", limit=3)
    assert [s.scenario for s in again] == [s.scenario for s in samples[:3]]


# ---- errors, on a tiny raw folder built here so they always run -------------------------------

# Two samples: 3 devices / 2 chains, then 2 devices / 1 chain.
TINY = {
    "numNodes.txt": "3 \n2\n",
    "numClasses.txt": "2\n1\n",
    "capacity.txt": "4 1 7  \n2 3\n",
    "arrival.txt": "2.0\n0.5\n4\n",
    "path.txt": "1 2 3 \n3 1\n2 1\n",
    "service.txt": "0.5 1.0 1.5  \n0.25 0.75\n1 2\n",
}
LABELS = {
    "throughput.txt": "0.5\n1.9\n0.25\n",
    "responseTime.txt": "3.0\n1.0\n3.0\n",
    "tputRatio.txt": "1\n0.95\n1\n",
    "resptRatio.txt": "1\n1\n1\n",
}


def _tiny(tmp_path: Path, labels: bool = True, **override: str) -> Path:
    raw = tmp_path / "mysplit" / "raw"
    raw.mkdir(parents=True)
    for name, text in {**TINY, **(LABELS if labels else {}), **override}.items():
        (raw / name).write_text(text)
    return raw


def test_tiny_split_reads(tmp_path: Path) -> None:
    out = read_chainnet_split(_tiny(tmp_path).parent)
    assert [s.scenario.name for s in out] == ["chainnet_mysplit_0", "chainnet_mysplit_1"]
    sc = out[0].scenario
    assert [d.capacity for d in sc.devices] == [4, 1, 7]
    assert [st.device for st in sc.chains[1].stages] == ["d3", "d1"]
    assert sc.chains[1].arrival_rate == 2.0
    np.testing.assert_array_equal(out[1].labels["throughput"], [0.25])


def test_unlabelled_split_has_empty_labels(tmp_path: Path) -> None:
    out = read_chainnet_split(_tiny(tmp_path, labels=False), limit=1)
    assert len(out) == 1 and out[0].labels == {}


def test_missing_file_is_named(tmp_path: Path) -> None:
    raw = _tiny(tmp_path)
    (raw / "service.txt").unlink()
    with pytest.raises(ChainNetFormatError) as err:
        read_chainnet_split(raw)
    assert "service.txt" in str(err.value) and str(raw) in str(err.value)


def test_partial_labels_name_the_missing_ones(tmp_path: Path) -> None:
    raw = _tiny(tmp_path)
    (raw / "tputRatio.txt").unlink()
    with pytest.raises(ChainNetFormatError, match="tputRatio.txt"):
        read_chainnet_split(raw)


def test_truncated_path_file_is_named(tmp_path: Path) -> None:
    raw = _tiny(tmp_path, **{"path.txt": "1 2 3\n3 1\n"})
    with pytest.raises(ChainNetFormatError) as err:
        read_chainnet_split(raw)
    msg = str(err.value)
    assert "path.txt line 3" in msg and "expected 3" in msg and "sample 1" in msg


def test_short_service_row_is_named(tmp_path: Path) -> None:
    raw = _tiny(tmp_path, **{"service.txt": "0.5 1.0 1.5\n0.25\n1 2\n"})
    with pytest.raises(ChainNetFormatError) as err:
        read_chainnet_split(raw)
    msg = str(err.value)
    assert "service.txt line 2" in msg and "expected 2 values" in msg and "got 1" in msg


def test_capacity_row_must_match_num_nodes(tmp_path: Path) -> None:
    raw = _tiny(tmp_path, **{"capacity.txt": "4 1 7\n2\n"})
    with pytest.raises(ChainNetFormatError, match=r"capacity.txt line 2: expected 2 values"):
        read_chainnet_split(raw)
