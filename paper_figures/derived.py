"""Results a figure computes beyond the stored studies (retraining, an experiment), cached.

A derived result is one JSON file ``derived/<name>.json`` holding the result next to the key
of everything it depends on (source study fingerprint and config, settings). The next run
reuses it when the key is identical and recomputes it otherwise, so changing a setting can
never silently redraw stale numbers. The file is replaced atomically: key and result always
belong together.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import memjax
from memjax.store import atomic_write_text
from paper_figures.context import Context
from paper_figures.output import to_json
from paper_figures.studies import display_path

__all__ = ["cached_result"]


def cached_result(
    ctx: Context,
    name: str,
    key: dict[str, Any],
    compute: Callable[[], dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    """``compute()`` (JSON-ready; NaN comes back as None), reused when ``key`` (plus the memjax
    version, as for stores) matches."""
    ctx.derived_root.mkdir(parents=True, exist_ok=True)
    path = ctx.derived_root / f"{name}.json"
    key = to_json({**key, "memjax_version": memjax.__version__})
    cached = json.loads(path.read_text()) if path.exists() else None
    if cached is not None and cached.get("key") == key:
        result = cached["result"]
    else:
        result = to_json(compute())
        record = {"key": key, "result": result}
        atomic_write_text(str(path), json.dumps(record, indent=1, allow_nan=False) + "\n")
    ctx.note(
        {"kind": "derived result", "path": display_path(path, ctx.out), "description": description}
    )
    return result
