"""The README's Python examples run as written (those that need no trained checkpoint)."""

import re

import pytest
from tests_helpers import ROOT

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
RUNNABLE = [b for b in BLOCKS if "<" not in b and "data/dsn24" not in b]


def test_the_readme_has_runnable_examples():
    assert len(RUNNABLE) >= 2


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.splitlines()[0][:40] for b in RUNNABLE])
def test_readme_example_runs(block, monkeypatch):
    monkeypatch.chdir(ROOT)
    exec(compile(block, "README.md", "exec"), {})


def test_the_readme_shows_only_figures_the_repository_holds():
    # a figure under an ignored folder (experiments/results/) shows on no fresh clone
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    assert figures
    missing = [f for f in figures if not (ROOT / f).is_file() or "results/" in f]
    assert not missing
