"""`python -m chainnet.score ckpt_path=model.ckpt scenarios=deployments.yaml out=pred.csv`

Scores every scenario of a YAML or JSON file with a trained model: one row per chain (see
`chainnet.learn.surrogate`). The file holds one scenario, a list of them, or `{scenarios: [...]}`.
Scenarios that fail validation are reported by index and name, and the others are still scored;
the exit code is then 1 (2 when nothing could be scored).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from chainnet.cli.common import CONF, user_errors
from chainnet.learn.surrogate import Surrogate
from chainnet.scenario import Scenario, ScenarioError, load_document


def read_scenarios(path: str | Path) -> tuple[list[Scenario], list[str]]:
    """(the valid scenarios, one message per invalid one, naming its index and name)."""
    doc: Any = load_document(path)
    if isinstance(doc, dict) and "scenarios" in doc:
        doc = doc["scenarios"]
    elif isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not doc:
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
    surrogate = Surrogate.load(cfg.ckpt_path)
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
    print(df[shown].head(cfg.show).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if len(df) > cfg.show:
        print(f"... {len(df) - cfg.show} more rows")
    print(
        f"scored {len(scenarios)} scenarios ({len(df)} chains) in {took * 1e3:.1f} ms; "
        f"{len(bad)} invalid; predictions in {out}"
    )
    return 1 if bad else 0


@hydra.main(version_base="1.3", config_path=CONF, config_name="score")
def main(cfg: DictConfig) -> None:
    with user_errors():
        code = run(cfg)
    sys.exit(code)


if __name__ == "__main__":
    main()
