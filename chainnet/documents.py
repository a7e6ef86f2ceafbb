"""Reading YAML and JSON into plain data, every mistake located by file, line and column.

Scenario files, problem files and the score command's scenario lists are read here. Beyond what
PyYAML and `json` check, a key given twice in one mapping is refused (both would keep the last one
silently), and YAML follows 1.2 for floats (`5e-1` is a number). A mistake is one `DocumentError`
line such as `deploy.yaml, line 6, column 5: duplicate key 'arrival_rate' (first at line 5); ...`.
"""

from __future__ import annotations

import json
import os
import re
from json.decoder import scanstring
from pathlib import Path
from typing import Any

import yaml

from chainnet.parsing import DocumentError, ScenarioError, ScenarioTypeError


class _DuplicateYamlKey(yaml.constructor.ConstructorError):
    pass


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where `5e-1` is a string; YAML 1.2 and users read a float. A key
    given twice in one mapping is an error (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base`: keys given beside it override the merged ones
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first_line
                except TypeError:
                    continue  # an unhashable key: PyYAML's own error follows
                if seen:
                    raise _DuplicateYamlKey(
                        None,
                        None,
                        f"duplicate key {key!r} (first at line {first_line[key] + 1}); a key may "
                        "appear once in a mapping",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


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
    """Parse YAML text (a SafeLoader: no arbitrary objects); raises `yaml.YAMLError`."""
    return yaml.load(text, Loader=_Yaml12Loader)


def _at(where: str, line: int, column: int) -> str:
    return f"{where}, line {line}, column {column}"


def parse_yaml(text: str, where: str) -> Any:
    """YAML text as plain data; a mistake is one `DocumentError` with its line and column."""
    try:
        return yaml_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            cm = exc.context_mark
            started = f" at line {cm.line + 1}, column {cm.column + 1}" if cm else ""
            problem = f"{problem} ({exc.context}{started})"
        loc = _at(where, mark.line + 1, mark.column + 1) if mark else where
        what = "" if isinstance(exc, _DuplicateYamlKey) else "not valid YAML: "
        raise DocumentError(loc, f"{what}{problem}") from None
    except yaml.YAMLError as exc:
        raise DocumentError(where, f"not valid YAML: {' '.join(str(exc).split())}") from None


class _DuplicateKey(Exception):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


def _json_duplicate(text: str) -> tuple[str, int, int] | None:
    """(key, offset, offset of its first occurrence) of the first key repeated within one JSON
    object, in text order. Only run on a document known to hold one (it is a plain scan)."""
    stack: list[dict | None] = []  # per open container: its keys so far (None: an array)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            s, end = scanstring(text, i + 1)
            if stack and stack[-1] is not None and text[end:].lstrip().startswith(":"):
                if s in stack[-1]:
                    return s, i, stack[-1][s]
                stack[-1][s] = i
            i = end
            continue
        if c in "{[":
            stack.append({} if c == "{" else None)
        elif c in "}]" and stack:
            stack.pop()
        i += 1
    return None


def _line_column(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def parse_json(text: str, where: str) -> Any:
    """JSON text as plain data; a mistake (a key given twice in an object included) is one
    `DocumentError` with its line and column."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as exc:
        raise DocumentError(
            _at(where, exc.lineno, exc.colno), f"not valid JSON: {exc.msg}"
        ) from None
    except _DuplicateKey:
        found = _json_duplicate(text)
        if found is None:  # not expected: the hook saw one
            raise DocumentError(where, "a key appears twice in one object") from None
        key, offset, first = found
        line, column = _line_column(text, offset)
        raise DocumentError(
            _at(where, line, column),
            f"duplicate key {key!r} (first at line {_line_column(text, first)[0]}); a key may "
            "appear once in an object",
        ) from None


def load_document(path: str | os.PathLike) -> Any:
    """Parse a JSON (`.json`) or YAML file into plain data, with one clear error for a missing,
    unreadable, empty or invalid file, naming the file (and the line and column)."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise ScenarioTypeError("file", path, "expected a path to a YAML or JSON file")
    if not str(path).strip():
        raise ScenarioError(
            "file", str(path), "no file given; expected a path to a YAML or JSON file"
        )
    path = Path(path)
    if path.is_dir():
        raise DocumentError(str(path), "is a folder, not a file; give a YAML or JSON file")
    if not path.is_file():
        raise ScenarioError("file", str(path), "no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(str(path), f"is not a text file (UTF-8): {exc.reason}") from None
    if path.suffix.lower() == ".json" and text.strip():
        data = parse_json(text, str(path))
    else:
        data = parse_yaml(text, str(path))
    if data is None:
        raise DocumentError(str(path), "the file is empty (no document); expected YAML or JSON")
    return data
