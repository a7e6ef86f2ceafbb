"""What every command-line entry point shares: a user mistake ends in one clear line.

- `user_errors()`: invalid input (scenario, settings, config, files) becomes `error: <one line>`
  and exit code 2; a `ScenarioWarning` is printed as one `warning: <message>` line.
- `command(config_name)`: `hydra.main` for our commands; the task then runs under `user_errors`
  after `check_config`. Before Hydra reads the command line, it refuses a config group that
  belongs to another command (`debug=...` on `chainnet.simulate`: conf/debug/ is train.py's) and a
  group given something that names none of its options (`simulator=true`); Hydra itself ends
  those in a traceback or a multi-line report.
- `check_config(cfg)`: the composed config against what the config files define, with the same
  group choices: a key the files do not have (added with `+key=...`) is refused, and a changed
  value must have the type of its default (true/false for a boolean, a number for a number, a list
  for a list, one value for a string). The YAML files stay the one schema: no dataclass repeats
  them. Groups named in `open_groups` are not checked (train.py's `model`, `trainer`, `callbacks`
  and `logger` take any keyword their classes accept, e.g. `+trainer.precision=16`).
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from chainnet.configs import CONF
from chainnet.scenario import ScenarioError, ScenarioWarning

__all__ = ["CONF", "ConfigError", "check_config", "check_group_overrides", "command", "user_errors"]

SWEEP_SYNTAX = set(",()[]{}*")  # a multirun sweep over a group's options: Hydra expands it


class ConfigError(ValueError):
    """A command-line setting the config files do not define, or a value of the wrong type."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn invalid input (scenario, settings, config, files) into `error: ...` and exit code 2."""
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        try:
            yield
        except (ScenarioError, ValueError, OSError, OmegaConfBaseException) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)


def _one_line_warnings(show: Callable) -> Callable:
    def one_line(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ScenarioWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return one_line


def command(
    config_name: str, hints: Mapping[str, str] | None = None, open_groups: Sequence[str] = ()
) -> Callable:
    """`hydra.main` on conf/`config_name`.yaml for a command's task: `check_group_overrides` runs
    on the command line first (`hints`: a group name -> the advice given when it is not this
    command's), then the task runs under `user_errors` after `check_config(cfg, open_groups)`."""

    def wrap(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @functools.wraps(task)  # Hydra names the job after the task's module, as before
        def checked(cfg: DictConfig) -> Any:
            with user_errors():
                check_config(cfg, open_groups=open_groups)
                return task(cfg)

        hydra_main = hydra.main(version_base="1.3", config_path=CONF, config_name=config_name)(
            checked
        )

        @functools.wraps(task)
        def main() -> Any:
            with user_errors():
                check_group_overrides(sys.argv[1:], _config_name(sys.argv[1:], config_name), hints)
            return hydra_main()

        return main

    return wrap


def _config_name(args: Sequence[str], default: str) -> str:
    """The primary config, as Hydra's `--config-name`/`-cn` would choose it."""
    for i, arg in enumerate(args):
        if arg.startswith("--config-name="):
            return arg.split("=", 1)[1]
        if arg in ("--config-name", "-cn") and i + 1 < len(args):
            return args[i + 1]
    return default


def command_groups(config_name: str) -> set[str]:
    """The config groups in the defaults list of conf/`config_name`.yaml."""
    data = yaml.safe_load((Path(CONF) / f"{config_name}.yaml").read_text()) or {}
    groups = set()
    for entry in data.get("defaults") or []:
        for key in entry if isinstance(entry, dict) else ():
            groups.add(key.removeprefix("override ").strip().lstrip("/").split("@")[0])
    return groups


def _is_group(key: str) -> bool:
    return key.startswith("hydra/") or (Path(CONF) / key).is_dir()


def check_group_overrides(
    args: Sequence[str], config_name: str, hints: Mapping[str, str] | None = None
) -> None:
    """Refuse `group=value` arguments for a group this command does not use, or whose value names
    none of the group's options (`null` included: Hydra ends it in a traceback, and `~group` is
    how a group is left out; a sweep over options is left to Hydra)."""
    groups = command_groups(config_name)
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("~+").split("@")[0]
        if key.startswith("hydra") or not _is_group(key):
            continue
        if key not in groups:
            hint = (hints or {}).get(key, f"conf/{key}/ is a config group of another command")
            raise ConfigError(f"{key}: not a setting of this command ({config_name}); {hint}")
        options = sorted(p.stem for p in (Path(CONF) / key).glob("*.yaml"))
        if value not in options and not SWEEP_SYNTAX & set(value):
            leave_out = f"; ~{key} leaves the group out" if value == "null" else ""
            raise ConfigError(
                f"{key}: got {value!r}; one of {', '.join(options)} (conf/{key}/){leave_out}"
            )


def check_config(
    cfg: DictConfig,
    config_name: str | None = None,
    overrides: Sequence[str] | None = None,
    open_groups: Sequence[str] = (),
) -> None:
    """Refuse keys of `cfg` that the config files do not define and values of another type than
    their default (see the module docstring). By default the config name and the command-line
    overrides are Hydra's, of the running command."""
    if config_name is None or overrides is None:
        hc = HydraConfig.get()
        config_name = config_name or hc.job.config_name
        overrides = list(hc.overrides.task) if overrides is None else overrides
    check_group_overrides(overrides, config_name)
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    groups = [o.input_line for o in parsed if _is_group(o.key_or_group)]
    _compare(_plain(cfg), _plain(_defaults(config_name, groups)), "", tuple(open_groups))


def _defaults(config_name: str, group_overrides: list[str]) -> DictConfig:
    """The command's config as its files define it, with the same group choices as the run."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=group_overrides)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=config_name, overrides=group_overrides)


def _plain(cfg: DictConfig) -> dict:
    out = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    out.pop("hydra", None)
    return out


def _compare(given: Any, default: Any, path: str, open_groups: tuple[str, ...]) -> None:
    if path.split(".")[0] in open_groups:
        return
    if isinstance(default, dict):
        if not isinstance(given, dict):
            raise ConfigError(f"{path}: got {given!r}; expected a group of settings")
        for key, value in given.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in default:
                known = ", ".join(map(str, default)) or "none"
                raise ConfigError(f"{sub}: unknown setting; known: {known}")
            _compare(value, default[key], sub, open_groups)
        return
    unchanged = type(given) is type(default) and given == default  # 1 == True, yet 1 is no bool
    if unchanged or default is None or (isinstance(given, str) and "${" in given):
        return
    problem = _type_problem(given, default)
    if problem:
        raise ConfigError(f"{path}: got {given!r}; {problem}")
    if isinstance(default, list) and default:
        for i, item in enumerate(given):
            problem = _type_problem(item, default[0], in_list=True)
            if problem:
                raise ConfigError(f"{path}[{i}]: got {item!r}; {problem}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_problem(given: Any, default: Any, in_list: bool = False) -> str | None:
    """What is wrong with `given` where the config files have `default`; None if nothing."""
    if isinstance(default, bool):
        return None if isinstance(given, bool) else "expected true or false"
    if _is_number(default):
        ok = _is_number(given) or (given is None and not in_list)
        return None if ok else "expected a number"
    if isinstance(default, list):
        return None if isinstance(given, list) else f"expected a list such as {default}"
    if isinstance(given, (list, dict)):
        return "expected a single value"
    if isinstance(default, str) and default != "???" and "${" not in default:
        return f"expected a value such as {default!r}" if isinstance(given, bool) else None
    return None
