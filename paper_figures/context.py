"""Context: what a figure's ``compute`` may read (studies, families, settings, experiment
results).

It runs or reuses each study the first time a figure asks for it, shares the loaded arrays
and estimates between figures, and records which studies and other inputs each figure
used, for the provenance written into the figure's JSON and the index.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

from memjax.study import Family, FamilyConfig, read, resolve
from paper_figures.studies import (
    StudyData,
    StudyRef,
    display_path,
    ensure_family,
    ensure_study,
    family_provenance,
    load_refs,
)

__all__ = ["Context", "CONFIG_ROOT", "MODES"]

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
MODES = ("quick", "full")


class Context:
    """Studies and settings of one mode, rooted at an output directory."""

    def __init__(
        self, mode: str, out: Path, config_dir: Path | None = None, progress: bool = True
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
        self.mode = mode
        self.out = Path(out)
        self.config_dir = Path(config_dir) if config_dir else CONFIG_ROOT
        self.progress = progress
        self.refs: dict[str, StudyRef] = load_refs(self.config_dir, mode)
        settings_path = self.config_dir / "figures.yaml"
        self.settings: dict[str, Any] = (
            resolve(read(str(settings_path)), mode) if settings_path.exists() else {}
        )
        self._studies: dict[str, StudyData] = {}
        self.used: list[dict[str, Any]] = []

    @property
    def study_root(self) -> Path:
        return self.out / "studies"

    def family(self, directory: str, cfg: FamilyConfig, description: str) -> Family:
        """The family ``cfg`` (built by a figure, e.g. from a study's estimates), trained or
        resumed on first use in ``studies/<directory>`` and recorded as this figure's input."""
        family = ensure_family(cfg, self.study_root / directory, self.progress)
        self.note(family_provenance(family, self.out, description))
        return family

    def check_studies(self, names: set[str]) -> None:
        """Fail before any training if a figure needs a study this mode has no config for."""
        missing = sorted(names - set(self.refs))
        if missing:
            raise ValueError(
                f"no study config for {missing} in {display_path(self.config_dir)}/studies: "
                f"have {sorted(self.refs)}"
            )

    def figure_settings(self, figure: str) -> dict[str, Any]:
        """The ``figure:`` section of ``figures.yaml`` (empty if absent)."""
        return dict(self.settings.get(figure) or {})

    def begin_figure(self) -> None:
        self.used = []

    def study(self, name: str) -> StudyData:
        """A finished study by config name, trained or resumed on first use."""
        self.check_studies({name})
        if name not in self._studies:
            ref = self.refs[name]
            store = ensure_study(ref, self.study_root / name, self.progress)
            self._studies[name] = StudyData(ref, store)
        data = self._studies[name]
        record = data.provenance(self.out)
        if record not in self.used:
            self.used.append(record)
        return data

    def experiment(self, name: str, description: str, *args: Any, **kwargs: Any) -> Any:
        """``experiments/<name>``'s ``run(mode, <out>/<name>, *args, **kwargs)``: trains what is
        missing (its stores are the cache), records it as this figure's input and returns its
        summary; an unfinished experiment (None) is an error naming it."""
        out = self.out / name
        summary = import_module(f"experiments.{name}.experiment").run(
            self.mode, str(out), *args, **kwargs
        )
        if summary is None:
            raise RuntimeError(f"{out}: experiments/{name} is unfinished")
        self.note(
            {
                "kind": "experiment",
                "path": display_path(out, self.out),
                "description": f"experiments/{name} ({self.mode} mode): {description}",
            }
        )
        return summary

    def note(self, record: dict[str, Any]) -> None:
        """Record a non-study input (an experiment's output)."""
        if record not in self.used:
            self.used.append(record)
