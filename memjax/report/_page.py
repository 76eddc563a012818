"""`memjax report`: one self-contained HTML page that shows a study to a person.

The page holds provenance (config, dataset fingerprint, versions, replicas finished of
planned, design), the summary (test and IN-subset training accuracy with 95% intervals),
the memorization histogram, the most and least memorized training examples drawn (images,
or line plots of 1-D signals) with their labels and intervals, the proxies and attack
vulnerabilities beside memorization, membership-inference ROC curves (log-log) with
intervals, and the AUCs for finding flipped labels. Whatever a study cannot support gets a
sentence saying why instead of a number.

Self-contained: figures are inlined as base64 PNG ``data:`` URIs, the style sheet is
inline, there is no script and no reference to the network, so the file can be mailed or
archived as is. It is a pure function of the stored arrays (nothing trains) and is written
atomically.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import os
from typing import Any

import numpy as np

from memjax._version import __version__
from memjax.analysis.relations import MIN_ATTACK_REPLICAS, SUSPICIOUS_WHEN_HIGH, Relations
from memjax.data import Dataset
from memjax.estimators import Estimate
from memjax.privacy import FPRS, AttackResult
from memjax.report._estimate import HIST_BINS, check_estimable, ranked_examples
from memjax.study import Study, is_url, locate, open_study

__all__ = ["load_report_study", "report_html", "write_report", "IMAGE_SHAPES"]

REPORT = "report.html"
EXAMPLES_PER_SIDE = 10
# Registered datasets whose flat feature vectors are images: name -> (height, width).
IMAGE_SHAPES = {"digits": (8, 8)}


def load_report_study(path: str, *, data_root: str | None = None) -> Study:
    """The study at ``path`` through ``mj.open_study`` (its dataset, read below
    ``data_root``, verified against the stored fingerprint); refused with fewer than 2
    finished replicas."""
    study = open_study(path, data_root=data_root)
    check_estimable(study, "report")
    _ = study.masks  # verifies the dataset before any page is built
    return study


def _triple(est: Estimate) -> tuple[float, float, float]:
    return float(est.value), float(est.ci_low), float(est.ci_high)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _interval(value: float, low: float, high: float, digits: int = 3) -> str:
    """ "v [low, high]" with enough digits (up to 6) that a nonzero-width interval never
    prints as a point."""
    while digits < 6 and low < high and _fmt(low, digits) == _fmt(high, digits):
        digits += 1
    return f"{_fmt(value, digits)} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


def _tpr_rows(attack: AttackResult) -> list[tuple]:
    """Per FPR of ``FPRS``: (fpr, tpr, ci_low, ci_high, why_undefined)."""
    return [(a, attack.tpr_at_fpr[a], *attack.tpr_ci[a], attack.undefined.get(a)) for a in FPRS]


# --- figures ---------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110)


def _data_uri(fig) -> str:
    """The figure as a base64 PNG data URI (no pyplot state, no file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _histogram(mem: Estimate, flipped: np.ndarray | None, ranked_idx: np.ndarray) -> str:
    fig = _figure(6.0, 3.0)
    ax = fig.add_subplot()
    finite = np.isfinite(mem.value)
    if flipped is None:
        ax.hist(mem.value[finite], bins=HIST_BINS, color="C0")
    else:
        ax.hist(mem.value[finite & ~flipped], bins=HIST_BINS, color="C0", label="clean label")
        ax.hist(mem.value[finite & flipped], bins=HIST_BINS, color="C3", alpha=0.7, label="flipped")
        ax.legend(fontsize=8, loc="upper left")
    if len(ranked_idx):
        width = float(np.median(mem.ci_high[ranked_idx] - mem.ci_low[ranked_idx]))
        top = ax.get_ylim()[1]
        ax.errorbar([0.0], [0.92 * top], xerr=[[width / 2], [width / 2]], fmt="|k", capsize=4)
        ax.annotate(
            f"median 95% interval ({width:.2f})",
            (width / 2, 0.92 * top),
            xytext=(6, -3),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_xlabel("memorization estimate")
    ax.set_ylabel("training examples")
    fig.tight_layout()
    return _data_uri(fig)


def _drawing(ds: Dataset, dataset_name: str) -> tuple[str, tuple[int, ...] | None]:
    """How to draw one training example: ("image", shape), ("signal", None) or ("none", None)."""
    shape = ds.input_shape
    if len(shape) == 3 and shape[-1] in (1, 3) or len(shape) == 2:
        return "image", shape
    if len(shape) == 1 and dataset_name in IMAGE_SHAPES:
        h, w = IMAGE_SHAPES[dataset_name]
        if h * w == shape[0]:
            return "image", (h, w)
    if len(shape) == 1:
        return "signal", None
    return "none", None


def _example_png(x: np.ndarray, kind: str, shape, lo: float, hi: float) -> str:
    if kind == "image":
        fig = _figure(0.85, 0.85)
        ax = fig.add_axes((0, 0, 1, 1))
        img = np.clip((x.reshape(shape) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        ax.imshow(img, cmap="gray_r" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_axis_off()
    else:
        fig = _figure(0.9, 0.6)
        ax = fig.add_axes((0.02, 0.04, 0.96, 0.92))
        ax.plot(np.arange(len(x)), x, color="k", lw=1.0)
        ax.set_ylim(lo, hi)
        ax.set_xticks([])
        ax.set_yticks([])
    return _data_uri(fig)


def _scatter(rel: Relations, flipped: np.ndarray | None, names: list[str]) -> str:
    """Memorization against every other score, one small panel each."""
    cols = 5
    rows = -(-len(names) // cols)
    fig = _figure(10.0, 1.9 * rows)
    mem = rel.columns["memorization"].value
    colour = np.where(flipped, "C3", "C0") if flipped is not None else "C0"
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        x = rel.columns[name].value
        ok = np.isfinite(x) & np.isfinite(mem)
        c = colour[ok] if flipped is not None else colour
        ax.scatter(x[ok], mem[ok], s=3, c=c, alpha=0.5, linewidths=0)
        ax.set_title(f"{name}  ρ={_fmt(rel.spearman[name], 2)}", fontsize=8)
        ax.tick_params(labelsize=7)
        if k % cols == 0:
            ax.set_ylabel("memorization", fontsize=8)
    fig.tight_layout()
    return _data_uri(fig)


def _roc(attacks: dict[str, AttackResult]) -> str:
    fig = _figure(5.5, 4.2)
    ax = fig.add_subplot()
    floor = 1.0
    for k, (name, a) in enumerate(attacks.items()):
        rows = _tpr_rows(a)
        floor = min(floor, 1.0 / max(a.n_nonmembers, 1))
        pos = a.fpr > 0
        ax.step(
            a.fpr[pos],
            a.tpr[pos],
            where="post",
            color=f"C{k}",
            lw=1.2,
            label=f"{name} (AUC {a.auc:.3f})",
        )
        for fpr, tpr, low, high, why in rows:
            if why is None and tpr > 0:
                err = None
                if np.isfinite(low) and np.isfinite(high):
                    err = [[tpr - max(low, 1e-12)], [high - tpr]]
                ax.errorbar([fpr], [tpr], yerr=err, fmt="o", ms=3, color=f"C{k}", capsize=2)
    ax.plot([floor, 1], [floor, 1], ls="--", color="0.6", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _data_uri(fig)


# --- page sections ---------------------------------------------------------------------

_STYLE = """
body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:1px solid #ccc;
margin-top:1.4em}table{border-collapse:collapse;font-size:.9em}td,th{padding:2px 8px;
text-align:left;border-bottom:1px solid #eee}th{background:#f4f4f4}.why{color:#a33}
.note{color:#555;font-size:.9em}.examples{display:flex;flex-wrap:wrap;gap:6px}
figure.example{margin:0;width:104px;font-size:.72em;text-align:center}
figure.example img{display:block;margin:auto}pre{font-size:.8em;background:#f8f8f8;
padding:6px;overflow:auto}.warn{background:#fff3cd;padding:4px 8px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _why(text: str) -> str:
    return f'<p class="why">{_e(text)}</p>'


def _provenance(s: Study) -> str:
    import jax

    cfg, meta = s.meta["config"], s.meta
    sub = cfg["subsets"]
    finished, planned = len(s.masks), int(meta["replicas"])
    design = f"{sub['design']}, ratio {sub['ratio']}"
    if s.blocks is not None:
        design += f", {len(np.unique(s.blocks))} blocks (the unit of independence)"
    else:
        design += ", independent replicas"
    rows = [
        ["study", meta.get("name")],
        ["directory", s.path if is_url(s.path) else os.path.abspath(s.path)],
        [
            "dataset",
            f"{meta.get('dataset_name')}: {s.dataset.n_train} train, "
            f"{s.dataset.n_test} test, {s.dataset.num_classes} classes, "
            f"input shape {s.dataset.input_shape}",
        ],
        ["dataset fingerprint", f"{meta.get('dataset_fingerprint')} (verified on rebuild)"],
        ["model", json.dumps(cfg["model"])],
        ["training", json.dumps(cfg["train"])],
        ["design", design],
        ["seed", cfg["seed"]],
        ["replicas finished / planned", f"{finished} / {planned}"],
        ["memjax (study / report)", f"{meta.get('memjax_version')} / {__version__}"],
        ["jax (report)", jax.__version__],
        ["report written", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")],
    ]
    warn = ""
    if finished < planned:
        warn = (
            f'<p class="warn">Unfinished study: {finished} of {planned} replicas; every '
            "number below uses the finished ones only.</p>"
        )
    config = json.dumps(cfg, indent=2, sort_keys=True)
    return (
        f'<section id="provenance"><h2>Provenance</h2>{warn}'
        + _table(["", ""], rows)
        + f"<details><summary>full config</summary><pre>{_e(config)}</pre></details></section>"
    )


def _summary(s: Study) -> str:
    test, fit, held = (_triple(s.accuracy[k]) for k in ("test", "in_subset", "out_of_subset"))
    unit = "blocks" if s.blocks is not None else "replicas"
    rows = [
        ["test accuracy", _interval(*test)],
        ["training accuracy on the replica's own subset (IN)", _interval(*fit)],
        ["training accuracy on held-out training examples (OUT)", _interval(*held)],
    ]
    note = (
        f'<p class="note">Means over {s.replicas} replicas; 95% Student-t intervals over '
        f"{unit} (cluster-robust when blocks).</p>"
    )
    if fit[0] < 0.95:
        note += _why(
            f"The replicas fit only {fit[0]:.1%} of their own subsets (below 95%): "
            "memorization here mixes in underfitting and is not the regime the literature "
            "measures."
        )
    table = _table(["", "mean [95% interval]"], rows)
    return f'<section id="summary"><h2>Summary</h2>{table}{note}</section>'


def _flipped(s: Study) -> np.ndarray | None:
    f = s.dataset.train_info.get("flipped")
    return None if f is None else np.asarray(f, bool)


def _histogram_section(s: Study, order: np.ndarray) -> str:
    mem = s.relations.columns["memorization"]
    finite = int(np.isfinite(mem.value).sum())
    if finite == 0:
        return (
            '<section id="memorization"><h2>Memorization</h2>'
            + _why("No example was both IN and OUT of some replica: no estimate exists.")
            + "</section>"
        )
    note = f"{finite} of {len(mem.value)} examples have an estimate; "
    if len(order):
        width = mem.ci_high[order] - mem.ci_low[order]
        q10, q50, q90 = np.percentile(width, [10, 50, 90])
        note += (
            f"{len(order)} have a 95% interval (≥ 2 IN and ≥ 2 OUT replicas), of median "
            f"width {q50:.2f} (10–90%: {q10:.2f}–{q90:.2f}); the bar in the figure shows "
            "the median width."
        )
    else:
        note += "none has an interval (each needs ≥ 2 IN and ≥ 2 OUT replicas)."
    img = _histogram(mem, _flipped(s), order)
    return (
        f'<section id="memorization"><h2>Memorization</h2>'
        f'<img id="histogram" alt="memorization histogram" src="{img}">'
        f'<p class="note">{_e(note)}</p></section>'
    )


def _example_figures(s: Study, idx: np.ndarray, kind: str, shape) -> str:
    mem = s.relations.columns["memorization"]
    x = s.dataset.x_train
    lo, hi = float(x.min()), float(x.max())
    clean = s.dataset.train_info.get("clean_label")
    flipped = _flipped(s)
    parts = []
    for i in idx:
        label = f"label {s.dataset.y_train[i]}"
        if flipped is not None and flipped[i]:
            label += f" (flipped; clean {clean[i]})" if clean is not None else " (flipped)"
        caption = (
            f"#{i} · {label}<br>mem {_fmt(mem.value[i], 2)}<br>[{_fmt(mem.ci_low[i], 2)}, "
            f"{_fmt(mem.ci_high[i], 2)}]<br>IN {mem.n_in[i]} / OUT {mem.n_out[i]}"
        )
        img = _example_png(x[i], kind, shape, lo, hi)
        parts.append(
            f'<figure class="example" data-index="{i}"><img alt="example {i}" '
            f'src="{img}"><figcaption>{caption}</figcaption></figure>'
        )
    return '<div class="examples">' + "".join(parts) + "</div>"


def _examples_section(s: Study, order: np.ndarray) -> str:
    head = '<section id="examples"><h2>Most and least memorized training examples</h2>'
    kind, shape = _drawing(s.dataset, s.meta["config"]["dataset"]["name"])
    if kind == "none":
        return (
            head + _why(f"Inputs of shape {s.dataset.input_shape} cannot be drawn.") + "</section>"
        )
    if len(order) == 0:
        return (
            head
            + _why(
                "No example has an interval (≥ 2 IN and ≥ 2 OUT replicas each), so none is ranked."
            )
            + "</section>"
        )
    k = min(EXAMPLES_PER_SIDE, len(order) // 2) or 1
    most, least = order[:k], order[::-1][:k]
    note = (
        f'<p class="note">Ranked among the {len(order)} examples with an interval; '
        "memorization with its 95% interval and the IN/OUT replica counts.</p>"
    )
    return (
        head
        + note
        + "<h3>Most memorized</h3>"
        + _example_figures(s, most, kind, shape)
        + "<h3>Least memorized</h3>"
        + _example_figures(s, least, kind, shape)
        + "</section>"
    )


def _kind(name: str) -> str:
    if name.startswith("cf_memorization"):
        return "counterfactual memorization"
    if name == "held_out_accuracy":
        return "held-out accuracy"
    if name.startswith(("lira", "loss_attack")):
        return "attack vulnerability"
    return "proxy"


def _missing_scores(s: Study) -> list[str]:
    """A sentence per reason this study lacks some scores (``Relations.missing``), naming
    them."""
    missing: dict[str, list[str]] = {}
    for name, why in s.relations.missing.items():
        if name in SUSPICIOUS_WHEN_HIGH:
            missing.setdefault(why, []).append(name)
    return [f"{', '.join(names)}: {why}." for why, names in missing.items()]


def _proxies_section(s: Study) -> str:
    rel = s.relations
    mem = rel.columns["memorization"].value
    names = [k for k in rel.columns if k != "memorization"]
    rows = []
    for k in names:
        n = int((np.isfinite(rel.columns[k].value) & np.isfinite(mem)).sum())
        high = "high" if SUSPICIOUS_WHEN_HIGH.get(k, True) else "low"
        rows.append([k, _kind(k), _fmt(rel.spearman[k]), n, high])
    missing = "".join(_why(line) for line in _missing_scores(s))
    img = _scatter(rel, _flipped(s), names)
    return (
        '<section id="proxies"><h2>Proxies and other scores beside memorization</h2>'
        + _table(
            ["score", "kind", "Spearman ρ with memorization", "examples", "suspicious when"], rows
        )
        + '<p class="note">ρ over the examples where both are finite (n/a: a constant '
        "column or fewer than 3 examples); each score is the mean over its IN replicas "
        "or an IN-minus-OUT difference. Red points: flipped labels.</p>"
        + missing
        + f'<img id="scatter" alt="memorization against each score" src="{img}">'
        + "</section>"
    )


def _privacy_section(s: Study) -> str:
    head = '<section id="privacy"><h2>Membership inference</h2>'
    attacks = s.relations.attacks
    if not attacks:
        return (
            head
            + _why(
                f"No attack was evaluated: LiRA needs ≥ {MIN_ATTACK_REPLICAS} replicas (each "
                f"target's shadow models must hold ≥ 2 IN and ≥ 2 OUT replicas per example); "
                f"this study has {len(s.masks)}."
            )
            + "</section>"
        )
    rows, reasons = [], {}
    for name, a in attacks.items():
        cells = [name, _interval(a.auc, *a.auc_ci), f"{a.n_pairs} ({a.n_nonmembers} non-member)"]
        for _, tpr, low, high, why in _tpr_rows(a):
            mark = reasons.setdefault(why, f"undefined ({len(reasons) + 1})") if why else None
            cells.append(mark or _interval(tpr, low, high, 4))
        rows.append(cells)
    header = [
        "attack",
        "AUC [95% interval]",
        "pairs",
        *(f"TPR at FPR {a:g} [95% interval]" for a in FPRS),
    ]
    targets = len(next(iter(attacks.values())).scores)
    return (
        head
        + _table(header, rows)
        + f'<p class="note">The first {targets} replicas are the targets, every other '
        "replica a shadow model; (target, example) pairs are pooled; AUC intervals are DeLong's "
        "with the examples as clusters of pairs, TPR intervals Clopper-Pearson 95% over the "
        "member pairs.</p>"
        + "".join(_why(f"{mark}: {why.rstrip('.')}.") for why, mark in reasons.items())
        + f'<img id="roc" alt="membership-inference ROC, log-log" src="{_roc(attacks)}">'
        + "</section>"
    )


def _flipped_section(s: Study) -> str:
    head = '<section id="flipped"><h2>Finding flipped labels</h2>'
    flipped = _flipped(s)
    auc = s.relations.flipped_auc
    if flipped is None or auc is None:
        return (
            head
            + _why(
                "No label was flipped in this study (dataset.label_noise is 0), so "
                "there is nothing to find."
            )
            + "</section>"
        )
    ci = s.relations.flipped_auc_ci
    rows = [
        [k, _interval(v, *ci[k]), "high" if SUSPICIOUS_WHEN_HIGH.get(k, True) else "low"]
        for k, v in sorted(auc.items(), key=lambda kv: -np.nan_to_num(kv[1], nan=-1))
    ]
    return (
        head + f'<p class="note">{int(flipped.sum())} of {len(flipped)} training labels '
        "were flipped. ROC AUC of each score, oriented so that suspicious is high, over "
        "the examples where it is finite (0.5: chance), with its DeLong 95% interval "
        "(the examples as units).</p>"
        + _table(["score", "AUC [95% interval]", "suspicious when"], rows)
        + "</section>"
    )


_SECTIONS = {
    "provenance": "provenance",
    "summary": "summary",
    "memorization": "memorization",
    "examples": "examples",
    "privacy": "membership inference",
    "flipped": "flipped labels",
    "proxies": "proxies",
}


def report_html(s: Study) -> str:
    """The whole page as one string."""
    order = ranked_examples(s.relations.columns["memorization"])
    body = "".join(
        [
            _provenance(s),
            _summary(s),
            _histogram_section(s, order),
            _examples_section(s, order),
            _privacy_section(s),
            _flipped_section(s),
            _proxies_section(s),
        ]
    )
    contents = " · ".join(f'<a href="#{k}">{v}</a>' for k, v in _SECTIONS.items())
    title = f"memjax report: {s.meta.get('name')}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}'
        f"</title><style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>"
        f'<nav class="note">{contents}</nav>{body}</body></html>\n'
    )


def write_report(
    study_dir: str, out_dir: str | None = None, *, data_root: str | None = None
) -> str:
    """Write report.html for the study at ``study_dir`` (into it, or ``out_dir``); its path.
    A dataset path is read below ``data_root`` (see ``mj.open_study``)."""
    page = report_html(load_report_study(study_dir, data_root=data_root))
    out = locate(out_dir or study_dir)  # a directory or URL (memjax.study's locations)
    out.write_text(REPORT, page)
    return out.show(REPORT) if is_url(out.url) else out.path(REPORT)
