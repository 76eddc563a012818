"""Results a figure computes beyond the stored studies (e.g. retraining), cached on disk.

A derived result is an .npz of named arrays next to a JSON key of everything it depends on
(source study fingerprint and config, settings, training config). The next run reuses it
when the key is identical and recomputes it otherwise, so changing a setting can never
silently redraw stale numbers.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from memjax.store import atomic_write_text
from paper_figures.context import Context
from paper_figures.output import to_json
from paper_figures.studies import display_path

__all__ = ["cached_arrays"]


def cached_arrays(
    ctx: Context,
    name: str,
    key: dict[str, Any],
    compute: Callable[[], dict[str, np.ndarray]],
    description: str,
) -> dict[str, np.ndarray]:
    """``compute()``'s arrays, reused from ``derived/<name>.npz`` when ``key`` matches."""
    ctx.derived_root.mkdir(parents=True, exist_ok=True)
    arrays_path = ctx.derived_root / f"{name}.npz"
    key_path = ctx.derived_root / f"{name}.key.json"
    key_text = json.dumps(to_json(key), sort_keys=True, indent=1)
    if arrays_path.exists() and key_path.exists() and key_path.read_text() == key_text:
        with np.load(arrays_path) as f:
            arrays = {k: f[k] for k in f.files}
    else:
        arrays = compute()
        key_path.unlink(missing_ok=True)  # no key may vouch for arrays being replaced
        fd, tmp = tempfile.mkstemp(dir=ctx.derived_root, prefix=f".{name}.", suffix=".npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, arrays_path)
        atomic_write_text(str(key_path), key_text)  # written last: the key vouches for the data
    ctx.note(
        {
            "kind": "derived result",
            "path": display_path(arrays_path, ctx.out),
            "description": description,
        }
    )
    return arrays
