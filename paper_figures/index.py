"""index.md: every figure present in the output directory, with caption and provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memjax.study import atomic_write_text
from paper_figures.output import FORMATS

__all__ = ["write_index", "INDEX"]

INDEX = "index.md"


def _inputs(inputs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for item in inputs:
        if "study" in item:
            lines.append(
                f"  - study `{item['study_dir']}` ({item['replicas']} replicas of "
                f"{item['dataset']}), config `{item['config']}` "
                f"(expected runtime: {item['expected_runtime']})"
            )
        else:
            lines.append(f"  - {item['kind']} `{item['path']}`: {item['description']}")
    return lines


def write_index(out_dir: Path) -> Path:
    """Rewrite ``out_dir/index.md`` from the figure JSON files found there."""
    records = []
    for path in sorted(Path(out_dir).glob("fig[0-9][0-9]_*.json")):
        record = json.loads(path.read_text())
        if all((out_dir / record["files"][fmt]).exists() for fmt in FORMATS):
            records.append(record)
    lines = ["# Figures", ""]
    if not records:
        lines.append("No figures yet: run `python -m paper_figures`.")
    for r in records:
        files = ", ".join(f"[{fmt.upper()}]({r['files'][fmt]})" for fmt in FORMATS)
        lines += [
            f"## Figure {r['figure']}: {r['title']}",
            "",
            f"![Figure {r['figure']}: {r['title']}]({r['files']['png']})",
            "",
            r["caption"],
            "",
            f"Files: {files}, [numbers (JSON)]({r['files']['json']}). Mode `{r['mode']}`: "
            f"`python -m paper_figures {r['name']}{' --quick' if r['mode'] == 'quick' else ''}` "
            "redraws it. Produced from:",
            *_inputs(r["inputs"]),
            "",
        ]
    path = Path(out_dir) / INDEX
    atomic_write_text(str(path), "\n".join(lines))
    return path
