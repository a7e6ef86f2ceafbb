"""`python -m chainnet.score ckpt_path=model.ckpt scenarios=deployments.yaml out=pred.csv`

Scores every scenario of a YAML or JSON file with a trained model: one row per chain (see
`chainnet.learn.surrogate`). The file holds one scenario, a list of them, or `{scenarios: [...]}`.
Scenarios that fail validation are reported by index and name, and the others are still scored;
the exit code is then 1 (2 when nothing could be scored). A damaged or non-finite checkpoint is
refused with one line. One warning line counts the chains whose inputs lie outside the ranges the
checkpoint was trained on (the `out_of_range` and `out_of_range_why` columns say which).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from chainnet.cli.common import command
from chainnet.learn.surrogate import Surrogate, out_of_range_warning
from chainnet.scenario import Scenario, ScenarioError, load_document


def read_scenarios(path: str | Path) -> tuple[list[Scenario], list[str]]:
    """(the valid scenarios, one message per invalid one, naming its index and name)."""
    doc: Any = load_document(path)
    if isinstance(doc, dict) and "scenarios" in doc:
        others = sorted(set(doc) - {"scenarios"})
        if others:
            raise ScenarioError(
                f"{path}: {others[0]}", doc[others[0]], "unknown key beside scenarios: [...]"
            )
        doc = doc["scenarios"]
    elif isinstance(doc, dict):
        doc = [doc]
    if isinstance(doc, list) and not doc:
        raise ScenarioError("scenarios", str(path), "the list of scenarios is empty; give one")
    if not isinstance(doc, list):
        raise ScenarioError(
            "scenarios", str(path), "a scenario, a list of them or {scenarios: [...]}"
        )
    good, bad = [], []
    for i, item in enumerate(doc):
        name = item.get("name", "") if isinstance(item, dict) else ""
        try:
            good.append(Scenario.from_dict(item, where=f"scenarios[{i}]"))
        except ScenarioError as exc:
            bad.append(f"scenarios[{i}] ({name or 'unnamed'}): {str(exc).splitlines()[0]}")
    return good, bad


def run(cfg: DictConfig) -> int:
    if not cfg.ckpt_path:
        raise ValueError("ckpt_path: give a checkpoint of train.py")
    surrogate = Surrogate.load(cfg.ckpt_path, warn_ranges=False)  # the note: printed below
    scenarios, bad = read_scenarios(cfg.scenarios)
    for line in bad:
        print(f"invalid, not scored: {line}", file=sys.stderr)
    if not scenarios:
        raise ScenarioError("scenarios", str(cfg.scenarios), "no valid scenario to score")
    t0 = time.perf_counter()
    df = surrogate.predict(scenarios, batch_size=cfg.batch_size)
    took = time.perf_counter() - t0
    out = Path(cfg.out)
    if out.is_dir():
        raise ValueError(f"out: {out} is a folder; give a file name such as {out / 'pred.csv'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(out)  # never a half-written file
    shown = ["scenario", "name", "chain_name", "throughput", "loss_ratio", "response_time"]
    if df["accuracy"].notna().any():
        shown.append("accuracy")
    if surrogate.ranges_known:
        shown.append("out_of_range")
    print(df[shown].head(cfg.show).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if len(df) > cfg.show:
        print(f"... {len(df) - cfg.show} more rows")
    print(
        f"scored {len(scenarios)} scenarios ({len(df)} chains) in {took * 1e3:.1f} ms; "
        f"{len(bad)} invalid; predictions in {out}"
    )
    if not surrogate.ranges_known:
        print(surrogate.ranges_note, file=sys.stderr)
    flagged = df["out_of_range"].astype("float64")  # <NA> (unknown) -> NaN
    warning = out_of_range_warning(
        flagged, df["out_of_range_why"], "chains", "see the out_of_range column"
    )
    if warning:
        print(warning, file=sys.stderr)
    return 1 if bad else 0


@command("score")
def main(cfg: DictConfig) -> None:
    code = run(cfg)
    sys.exit(code)


if __name__ == "__main__":
    main()
