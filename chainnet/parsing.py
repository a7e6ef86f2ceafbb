"""Reading user files into plain data, field by field, with the path of every field in errors.

The scenario schema (`chainnet.scenario`) and the problem file (`chainnet.optim.problem`) parse with
these: every helper takes the value and `where` (e.g. `scenario.chains[0].stages[1].work`) and
raises `ScenarioError` naming the field, the value and what is allowed. A value of the wrong type
raises `ScenarioTypeError`, which is both a `ScenarioError` and a `TypeError`; a file that is not a
usable document raises `DocumentError` (see `chainnet.documents`).

Numbers are `numbers.Integral` / `numbers.Real` (so numpy scalars are numbers) but never `bool`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SHOWN = 120  # characters of a value shown in a message


class ScenarioError(ValueError):
    """Invalid scenario input; the message names the field, the value and what is allowed."""

    def __init__(self, where: str, value: Any, allowed: str):
        self.where, self.value, self.allowed = where, value, allowed
        super().__init__(self.text())

    def text(self) -> str:
        shown = repr(self.value)
        if len(shown) > SHOWN:
            shown = shown[: SHOWN - 3] + "..."
        return f"{self.where}: got {shown}; {self.allowed}"

    def within(self, prefix: str) -> ScenarioError:
        """The same error, its field path prefixed (e.g. with the file it was read from)."""
        return type(self)(f"{prefix}{self.where}", self.value, self.allowed)

    def __reduce__(self):  # pickled with its fields (worker processes send errors back)
        return type(self), (self.where, self.value, self.allowed)


class ScenarioTypeError(ScenarioError, TypeError):
    """A value of the wrong type (e.g. a string where a number goes): a `ScenarioError` that is also
    a `TypeError`, so that either `except` catches it."""


class DocumentError(ScenarioError):
    """A file or text that is not a usable document; `where` is the file, line and column."""

    def __init__(self, where: str, problem: str):
        super().__init__(where, None, problem)

    def text(self) -> str:
        return f"{self.where}: {self.allowed}"

    def within(self, prefix: str) -> ScenarioError:
        return DocumentError(f"{prefix}{self.where}", self.allowed)

    def __reduce__(self):
        return DocumentError, (self.where, self.allowed)


class ScenarioWarning(UserWarning):
    """A legal scenario that will not behave as its author likely meant (e.g. a memory that can
    never hold one job); the commands print it as one `warning:` line."""


# ---- parsing: keys and types, with the path of every field ------------------------------------


def mapping(data: Any, where: str, allowed: Sequence[str], required: Sequence[str]) -> dict:
    if not isinstance(data, Mapping):
        expected = (
            f"expected a mapping (keys: {', '.join(allowed)})" if allowed else "expected a mapping"
        )
        if isinstance(data, (list, tuple)):
            expected += ", not a list"
        raise ScenarioTypeError(where, data, expected)
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
        raise ScenarioTypeError(where, data, "expected a list")
    return list(data)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool) or type(v).__name__ == "bool_"  # numpy's bool is no number either


def real(v: Any, where: str) -> int | float:
    """A number as plain Python: an int or float as given, a numpy scalar converted."""
    t = type(v)
    if t is float or t is int:
        return v
    if _is_bool(v) or not isinstance(v, numbers.Real):
        raise ScenarioTypeError(where, v, "expected a number")
    return int(v) if isinstance(v, numbers.Integral) else float(v)


def number(v: Any, where: str) -> float:
    t = type(v)
    return v if t is float else float(v) if t is int else float(real(v, where))


def integer(v: Any, where: str) -> int:
    if type(v) is int:
        return v
    if not _is_bool(v) and isinstance(v, numbers.Integral):
        return int(v)
    if not _is_bool(v) and isinstance(v, numbers.Real) and float(v).is_integer():
        return int(v)
    raise ScenarioTypeError(where, v, "expected an integer")


def text(v: Any, where: str) -> str:
    if type(v) is str:
        return v
    if _is_bool(v) or not isinstance(v, (str, numbers.Integral)):
        raise ScenarioTypeError(where, v, "expected a name (string)")
    return str(v) if isinstance(v, str) else str(int(v))


_PLAIN = {real: (int, float), number: (float,), integer: (int,), text: (str,)}


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


# ---- objects built in code: the same types as files, numpy scalars made plain ------------------


class maybe:  # noqa: N801 (used like the converters it wraps)
    """`conv` for an optional field: None stays None."""

    def __init__(self, conv):
        self.conv = conv

    def __call__(self, v: Any, where: str) -> Any:
        return None if v is None else self.conv(v, where)


def spec(**convs) -> tuple:
    """The field converters of a dataclass (`real`, `text`, `maybe(real)`, ...), for `coerce`."""
    out = []
    for name, conv in convs.items():
        base = conv.conv if isinstance(conv, maybe) else conv
        out.append((name, _PLAIN[base] + ((type(None),) if base is not conv else ()), conv))
    return tuple(out)


def coerce(obj: Any, fields: tuple) -> None:
    """Check the fields of a frozen dataclass `obj` (a `spec`), storing plain Python values; a
    wrong type names `Class.field`. Values that are already plain cost one type test each."""
    for name, plain, conv in fields:
        v = getattr(obj, name)
        if type(v) not in plain:
            new = conv(v, f"{type(obj).__name__}.{name}")
            if new is not v:
                object.__setattr__(obj, name, new)


def items_of(v: Any, cls: type, where: str) -> tuple:
    """`v` as a tuple of `cls` instances; a string, a lone object or another type is named."""
    if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, Iterable):
        raise ScenarioTypeError(where, v, f"expected a list of {cls.__name__}")
    v = tuple(v)
    for i, x in enumerate(v):
        if not isinstance(x, cls):
            hint = (
                " (a dict: read plain data with Scenario.from_dict)"
                if isinstance(x, Mapping)
                else ""
            )
            raise ScenarioTypeError(f"{where}[{i}]", x, f"expected a {cls.__name__}{hint}")
    return v


# ---- the scenario file, field by field (`chainnet.scenario` builds and checks the objects) -------
DEVICE_KEYS = ("name", "capacity", "speed", "memory", "discipline")
STAGE_KEYS = ("device", "work", "distribution", "scv", "job_memory", "exit_prob", "exit_accuracy")
STAGE_KEYS += ("fragment",)
REGION_KEYS = ("name", "devices", "capacity", "memory")
SCENARIO_KEYS = ("name", "devices", "chains", "regions")


def _device(d: Any, where: str, index: int) -> dict:
    d = mapping(d, where, DEVICE_KEYS, ["capacity"])
    return {
        "name": text(d.get("name", f"d{index}"), f"{where}.name"),
        "capacity": integer(d["capacity"], f"{where}.capacity"),
        "speed": number(d.get("speed", 1.0), f"{where}.speed"),
        "memory": maybe(number)(d.get("memory"), f"{where}.memory"),
        "discipline": text(d.get("discipline", "fcfs"), f"{where}.discipline"),
    }


def _stage(s: Any, where: str) -> dict:
    s = mapping(s, where, STAGE_KEYS, ["device", "work"])
    return {
        "device": text(s["device"], f"{where}.device"),
        "work": number(s["work"], f"{where}.work"),
        "distribution": text(s.get("distribution", "det"), f"{where}.distribution"),
        "scv": maybe(number)(s.get("scv"), f"{where}.scv"),
        "job_memory": number(s.get("job_memory", 0.0), f"{where}.job_memory"),
        "exit_prob": number(s.get("exit_prob", 0.0), f"{where}.exit_prob"),
        "exit_accuracy": maybe(number)(s.get("exit_accuracy"), f"{where}.exit_accuracy"),
        "fragment": maybe(text)(s.get("fragment"), f"{where}.fragment"),
    }


def _stages(data: Any, where: str) -> list[dict]:
    return [_stage(s, f"{where}[{k}]") for k, s in enumerate(sequence(data, where))]


def _chains(c: Any, where: str, index: int) -> list[dict]:
    """One chain, or one per route of a service with `routes` (rate: prob x the service's)."""
    c = mapping(c, where, ["name", "arrival_rate", "stages", "routes", "service"], ["arrival_rate"])
    name = text(c.get("name", f"c{index}"), f"{where}.name")
    rate = number(c["arrival_rate"], f"{where}.arrival_rate")
    if ("stages" in c) == ("routes" in c):
        raise ScenarioError(where, sorted(c), "give exactly one of 'stages' or 'routes'")
    if "stages" in c:
        service = maybe(text)(c.get("service"), f"{where}.service")
        stages = _stages(c["stages"], f"{where}.stages")
        return [{"name": name, "arrival_rate": rate, "stages": stages, "service": service}]
    routes = sequence(c["routes"], f"{where}.routes")
    if not routes:
        raise ScenarioError(f"{where}.routes", routes, "a service needs at least one route")
    out, total = [], 0.0
    for r, route in enumerate(routes):
        rw = f"{where}.routes[{r}]"
        route = mapping(route, rw, ["prob", "stages"], ["prob", "stages"])
        p = number(route["prob"], f"{rw}.prob")
        if not 0.0 < p <= 1.0:
            raise ScenarioError(f"{rw}.prob", p, "allowed range is (0, 1]")
        total += p
        stages = _stages(route["stages"], f"{rw}.stages")
        out.append({"name": f"{name}/r{r}", "arrival_rate": p * rate, "stages": stages})
        out[-1]["service"] = name
    if abs(total - 1.0) > 1e-9:
        raise ScenarioError(f"{where}.routes", total, "route probabilities must sum to 1")
    return out


def _region(r: Any, where: str, index: int) -> dict:
    r = mapping(r, where, REGION_KEYS, ["devices"])
    devices = sequence(r["devices"], f"{where}.devices")
    return {
        "name": text(r.get("name", f"region{index}"), f"{where}.name"),
        "devices": tuple(text(d, f"{where}.devices[{k}]") for k, d in enumerate(devices)),
        "capacity": maybe(integer)(r.get("capacity"), f"{where}.capacity"),
        "memory": maybe(number)(r.get("memory"), f"{where}.memory"),
    }


def scenario_fields(data: Any, where: str) -> dict:
    """A scenario's plain data read field by field: `devices`, `chains` (a service's routes made
    one chain each), `regions` as lists of keyword arguments of their classes, and `name`."""
    if isinstance(data, Mapping) and "scenarios" in data and "devices" not in data:
        raise ScenarioError(
            f"{where}.scenarios", data["scenarios"], "a list of scenarios; give one"
        )
    d = mapping(data, where, SCENARIO_KEYS, ["devices", "chains"])
    devices = sequence(d["devices"], f"{where}.devices")
    out: dict[str, Any] = {
        "devices": [_device(x, f"{where}.devices[{i}]", i) for i, x in enumerate(devices)],
        "chains": [],
    }
    for i, x in enumerate(sequence(d["chains"], f"{where}.chains")):
        out["chains"].extend(_chains(x, f"{where}.chains[{i}]", i))
    regions = sequence(d.get("regions") or [], f"{where}.regions")
    out["regions"] = [_region(x, f"{where}.regions[{i}]", i) for i, x in enumerate(regions)]
    out["name"] = text(d.get("name", ""), f"{where}.name")
    return out
