"""Re-simulate labelled scenarios and compare with their labels (the published ChainNet data)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from chainnet.dataset.published import ChainNetSample
from chainnet.sim import SimulatorSettings, simulate


def compare_with_labels(
    samples: Iterable[ChainNetSample],
    settings: SimulatorSettings | None = None,
    seed: int = 0,
    progress=None,
) -> pd.DataFrame:
    """One row per chain: the published labels beside ours and the errors between them.

    Sample i is simulated with seed (seed, i), so any subset gives the same rows.
    """
    rows = []
    for sample in samples:
        ss = np.random.SeedSequence([seed, sample.index])
        res = simulate(sample.scenario, ss, settings)
        for c, ours in enumerate(res.chains):
            label_rt = float(sample.labels["response_time"][c])
            label_tr = float(sample.labels["throughput_ratio"][c])
            rows.append(
                {
                    "sample": sample.index,
                    "chain": c,
                    "label_throughput_ratio": label_tr,
                    "sim_throughput_ratio": ours["throughput_ratio"],
                    "label_response_time": label_rt,
                    "sim_response_time": ours["response_time"],
                    "sim_response_time_hw": ours["response_time_hw"],
                    "abs_err_throughput_ratio": abs(ours["throughput_ratio"] - label_tr),
                    "rel_err_response_time": abs(ours["response_time"] - label_rt) / label_rt,
                    "stop_reason": res.stop_reason,
                    "arrivals": res.arrivals,
                    "wall_time": res.wall_time,
                }
            )
        if progress is not None:
            progress(1)
    return pd.DataFrame(rows)
