"""Run (or resume) the privacy-preservation families and analyse them.

``dp.yaml`` (DP-SGD over noise multipliers) is stored in ``OUT/dp`` and ``labels.yaml``
(random labels over rate and width) in ``OUT/labels``, exactly as ``memjax run FILE --mode
MODE --out OUT/dp`` stores them, so families trained that way (by several jobs, merged) are
reused.
"""

from __future__ import annotations

import os
from typing import Any

from experiments.privacy_preservation.analysis import dp_rows, label_rows
from memjax.study import family_status, load_family, open_family, run_family

__all__ = ["FAMILIES", "run"]

HERE = os.path.dirname(__file__)
FAMILIES = {"dp": ("dp.yaml", dp_rows), "labels": ("labels.yaml", label_rows)}


def run(
    mode: str, out: str, families: tuple[str, ...] = tuple(FAMILIES), progress: bool = True
) -> dict[str, Any] | None:
    """Train what is missing of ``families`` ("dp", "labels") in ``out`` and return their
    rows by family (None while a family has unfinished chunks, e.g. of other jobs)."""
    result = {}
    for name in families:
        file, rows = FAMILIES[name]
        directory = os.path.join(out, name)
        run_family(load_family(os.path.join(HERE, file), mode), directory, progress=progress)
        if not family_status(directory)["complete"]:
            return None
        result[name] = rows(open_family(directory))
    return result
