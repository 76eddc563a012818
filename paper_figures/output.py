"""Writing a figure: its JSON (numbers, caption, provenance), then PNG and PDF drawn from it.

The picture is drawn from the JSON as written (after a round trip), so it can only show
numbers the JSON holds. Every file is written to a temporary name and renamed, so an
interrupted run never leaves a half-written figure.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from memjax.jsonio import strict_json
from paper_figures.spec import Data, FigureSpec

__all__ = ["to_json", "from_json", "write_figure", "FORMATS"]

FORMATS = ("png", "pdf")
PNG_DPI = 300
SIGNIFICANT = 6


def to_json(obj: Any) -> Any:
    """JSON-ready copy: numpy -> lists, floats to 6 significant digits, NaN/inf -> None."""
    return strict_json(obj, SIGNIFICANT)


def from_json(obj: Any) -> Any:
    """The inverse of ``to_json`` for drawing: None (an undefined number) back to NaN, so
    captions and plots treat it as a number ("nan") instead of failing."""
    if isinstance(obj, dict):
        return {k: from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    return math.nan if obj is None else obj


def _replace_atomically(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_figure(
    out_dir: Path, spec: FigureSpec, data: Data, provenance: list[dict[str, Any]], mode: str
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.png`` and ``<stem>.pdf``; return their paths."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    data = json.loads(json.dumps(to_json(data), allow_nan=False))
    drawn = from_json(data)  # exactly the JSON's numbers
    record = {
        "figure": spec.number,
        "name": spec.name,
        "title": spec.title,
        "caption": spec.caption(drawn),
        "mode": mode,
        "inputs": provenance,
        "files": {fmt: f"{spec.stem}.{fmt}" for fmt in (*FORMATS, "json")},
        "data": data,
    }
    paths = {"json": out_dir / f"{spec.stem}.json"}
    fig = spec.draw(drawn)
    try:
        for fmt in FORMATS:
            paths[fmt] = out_dir / f"{spec.stem}.{fmt}"
            _replace_atomically(
                paths[fmt], lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=PNG_DPI)
            )
    finally:
        plt.close(fig)

    def dump(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")

    _replace_atomically(paths["json"], dump)
    return paths
