"""Strict JSON (RFC 8259) for every file and line memjax writes: no NaN or Infinity.

Python's ``json`` writes non-finite floats as the bare constants ``NaN`` and ``Infinity``,
which other parsers (JavaScript, Go, jq, Rust's serde_json) refuse. memjax never writes them:
``json_text`` refuses a non-finite value (ValueError) instead, and a value that may hold one
is encoded first, explicitly: ``strict_json`` writes it as ``null`` ("undefined": no
finite value, e.g. an estimate without enough replicas), and a reader that gives null
another meaning says so (e.g. memjax.privacy.recorded_epsilon: null is unbounded).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["json_text", "strict_json"]


def json_text(value: Any, **kwargs: Any) -> str:
    """``json.dumps(value, **kwargs)`` that raises ValueError on NaN or inf."""
    return json.dumps(value, allow_nan=False, **kwargs)


def strict_json(obj: Any, significant: int | None = None) -> Any:
    """``obj`` with every non-finite float as None, numpy arrays and scalars as Python lists
    and numbers and keys as strings, so ``json_text`` writes it; floats rounded to
    ``significant`` digits if given."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v, significant) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v, significant) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist(), significant)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        if not np.isfinite(obj):
            return None
        return float(obj) if significant is None else float(f"{float(obj):.{significant}g}")
    return obj
