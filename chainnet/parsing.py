"""Reading user files into plain data, field by field, with the path of every field in errors.

The scenario schema (`chainnet.scenario`) and the problem file (`chainnet.optim.problem`) parse with
these: every helper takes the value and `where` (e.g. `scenario.chains[0].stages[1].work`) and
raises `ScenarioError` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


class ScenarioError(ValueError):
    """Invalid scenario input; the message names the field, the value and what is allowed."""

    def __init__(self, where: str, value: Any, allowed: str):
        self.where, self.value, self.allowed = where, value, allowed
        super().__init__(f"{where}: got {value!r}; {allowed}")


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where `5e-1` is a string; YAML 1.2 and users read a float."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader: no arbitrary objects


def load_document(path: str | Path) -> Any:
    """Parse a JSON or YAML file into plain data, with a clear error for a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError("file", str(path), "no such file")
    try:
        text = path.read_text()
        if path.suffix == ".json":
            return json.loads(text)
        return yaml_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), path.name, f"cannot be parsed: {exc}") from None


# ---- parsing: keys and types, with the path of every field ------------------------------------


def mapping(data: Any, where: str, allowed: Sequence[str], required: Sequence[str]) -> dict:
    if not isinstance(data, Mapping):
        raise ScenarioError(where, data, "expected a mapping")
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ScenarioError(
            f"{where}.{unknown[0]}", data[unknown[0]], f"unknown key; allowed: {', '.join(allowed)}"
        )
    for k in required:
        if k not in data:
            raise ScenarioError(f"{where}.{k}", None, "required field is missing")
    return dict(data)


def sequence(data: Any, where: str) -> list:
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
        raise ScenarioError(where, data, "expected a list")
    return list(data)


def number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ScenarioError(where, v, "expected a number")
    return float(v)


def integer(v: Any, where: str) -> int:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ScenarioError(where, v, "expected an integer")
    return v


def text(v: Any, where: str) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ScenarioError(where, v, "expected a name (string)")
    return str(v)


def optional(v: Any, conv, where: str):
    return None if v is None else conv(v, where)


# ---- ranges --------------------------------------------------------------------------------


def finite(v: float, where: str) -> None:
    if not math.isfinite(v):
        raise ScenarioError(where, v, "must be a finite number")


def positive(v: float, where: str) -> None:
    finite(v, where)
    if v <= 0:
        raise ScenarioError(where, v, "must be > 0")


def probability(v: float, where: str) -> None:
    finite(v, where)
    if not 0.0 <= v <= 1.0:
        raise ScenarioError(where, v, "allowed range is [0, 1]")


def capacity(v: Any, where: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ScenarioError(where, v, "must be an integer >= 1")
