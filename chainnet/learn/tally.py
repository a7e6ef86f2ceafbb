"""Counting predictions outside a checkpoint's training ranges, for one warning line.

Plain numpy (no torch), so the optimizer can count what the surrogate flags without loading torch
before a surrogate is used.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


class RangeTally:
    """Counts, over any number of `predict_arrays` calls, the items (scenarios, candidates of a
    search: `per_item` chains each) with a chain outside the training ranges, and which inputs,
    for one warning line at the end."""

    def __init__(self) -> None:
        self.items = 0
        self.flagged = 0
        self.inputs: Counter[str] = Counter()

    def add(self, flags, why, per_item: int = 1) -> None:
        """`flags` and `why`: the `out_of_range` and `out_of_range_why` of the chains of whole
        items, in order."""
        flags = np.asarray(flags, dtype=np.float64).reshape(-1, per_item)
        hit = np.nan_to_num(flags, nan=0.0) > 0
        self.items += len(flags)
        self.flagged += int(hit.any(1).sum())
        for text in np.asarray(why, dtype=object)[hit.reshape(-1)]:
            for part in str(text).split("; "):
                if part and not part.startswith("+"):
                    self.inputs[part.split(" ", 1)[0]] += 1

    def warning(self, unit: str = "chains", hint: str = "") -> str | None:
        """'warning: 3 of 12 chains have inputs outside the training ranges (a, b, c); hint', or
        None when none has."""
        if not self.flagged:
            return None
        names = [name for name, _ in self.inputs.most_common()]
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return (
            f"warning: {self.flagged} of {self.items} {unit} have inputs outside the training "
            f"ranges ({shown})" + (f"; {hint}" if hint else "")
        )


def out_of_range_warning(flags, why, unit: str = "chains", hint: str = "") -> str | None:
    """One warning line counting the `flags` set (1 / True) among rows, with the inputs most
    often out (from the `why` strings); None when none is set or the ranges are unknown."""
    tally = RangeTally()
    tally.add(flags, why)
    return tally.warning(unit, hint)
