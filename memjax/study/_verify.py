"""`memjax verify`: check every chunk of a study against its marker, and repair by forgetting.

A finished chunk is good when all its files exist, pass their checksums, hash to what its
marker recorded and hold its own replica ids, when its marker records this study's config and
dataset fingerprint and its masks are the subset design's (else another study wrote it); an
unfinished chunk is good when its stored masks are the subset design's. Repair never edits
results: it recreates missing arrays, rewrites damaged masks from the design and removes the
markers of bad chunks (and marker files of this study's chunk names whose content is not a
valid marker), so that `memjax run` retrains exactly those chunks. Run it while no job
writes to the study. A study with a symbolic link out of its directory (``done/`` linked
into another study) is refused before anything is read, so a repair can never touch another
study's files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memjax.study._location import TMP_PREFIX
from memjax.study._store import Store, restore_arrays

__all__ = ["VerifyReport", "verify_study"]


@dataclass
class VerifyReport:
    """Outcome of checking one study (chunk indices; ``bad`` chunk -> what is wrong)."""

    path: str
    n_chunks: int
    finished: list[int]
    bad: dict[int, str]
    invalid_markers: dict[str, str]
    stray: list[str]
    repaired: list[int] = field(default_factory=list)
    restored_arrays: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad and not self.invalid_markers

    def lines(self) -> list[str]:
        good = [k for k in self.finished if k not in self.bad]
        out = [
            f"{self.path}: {self.n_chunks} chunks, {len(self.finished)} marked finished, "
            f"{len(good)} verified, {len(self.bad)} damaged"
        ]
        out += [f"  {problem}" for _, problem in sorted(self.bad.items())]
        out += [
            f"  done/{name}: invalid marker ({why}); not counted"
            for name, why in sorted(self.invalid_markers.items())
        ]
        out += [
            f"  done/{name}: "
            + (
                "left by an interrupted marker write; removed"
                if name in self.removed
                else "not a marker of this study; ignored"
            )
            for name in self.stray
        ]
        if self.restored_arrays:
            out.append(f"  recreated missing arrays: {', '.join(self.restored_arrays)}")
        if self.repaired:
            out.append(
                f"  repaired: chunks {self.repaired} are now unfinished; `memjax run <the study's "
                f"config> --out {self.path}` retrains exactly them"
            )
        elif not self.ok:
            out.append(f"  repair with `memjax verify {self.path} --repair`, then `memjax run`")
        return out


def verify_study(store: Store, repair: bool = False) -> VerifyReport:
    """Check every chunk of ``store`` (reads all finished data); with ``repair``, make the bad
    ones unfinished so that resuming retrains them. A study with a symbolic link out of its
    directory is refused first (``Store.check_own_files``)."""
    store.check_own_files("verify --repair" if repair else "verify")
    scan = store.scan_done()
    bad = {}
    for k in range(store.n_chunks):
        problem = store.check_chunk(k, scan)
        if problem is not None:
            bad[k] = problem
    report = VerifyReport(
        store.path, store.n_chunks, sorted(scan.valid), bad, dict(scan.invalid), list(scan.stray)
    )
    if repair:  # temporary files of marker writes cut short by a kill
        report.removed = [n for n in scan.stray if n.startswith(TMP_PREFIX)]
        for name in report.removed:
            store.drop_marker(name)
    if repair and not report.ok:
        for name in [f"chunk-{k:06d}" for k in bad if k in scan.valid] + list(scan.invalid):
            store.drop_marker(name)
        report.restored_arrays = restore_arrays(store)
        after = store.scan_done()
        for k in bad:
            if store.check_chunk(k, after) is not None:  # masks damaged: the design's again
                store.write_design_masks(k)
        report.repaired = sorted(set(bad) | {int(n.split("-")[1]) for n in scan.invalid})
    return report
