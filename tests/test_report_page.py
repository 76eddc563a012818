"""`memjax report`: a self-contained page, rendered in real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from memjax.cli import main
from memjax.data import from_arrays, load
from memjax.estimators import Estimate
from memjax.report import EXAMPLES_PER_SIDE, load_report_study, ranked_examples
from memjax.report._page import _drawing
from memjax.study import StudyConfig, run_study, seal
from tests.studies import TINY

CHROMIUM = "/usr/bin/chromium"
DIGITS = {
    **TINY,
    "name": "tiny-report",
    "subsets": {**TINY["subsets"], "replicas": 16},
    "train": {**TINY["train"], "epochs": 10},
    "chunk_size": 8,
}


class Page(HTMLParser):
    """Elements of a page: every tag with its attributes and the ids enclosing it."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], tuple[str, ...]]] = []
        self._open: list[tuple[str, str | None]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a, tuple(i for _, i in self._open if i)))
        if tag not in ("img", "meta", "br", "link", "input"):
            self._open.append((tag, a.get("id")))

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def find(self, tag: str, within: str | None = None, **attrs) -> list[dict[str, str]]:
        return [
            a
            for t, a, ids in self.elements
            if t == tag
            and (within is None or within in ids)
            and all(a.get(k) == v for k, v in attrs.items())
        ]


def _png(uri: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    return Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :])))


def _assert_self_contained(text: str) -> None:
    assert not re.search(r"https?://", text), "the page must not reference the network"
    assert "<script" not in text and "<link" not in text and "@import" not in text
    page = Page(text)
    for _, attrs, _ in page.elements:
        assert attrs.get("src", "data:image/").startswith("data:image/")
        assert attrs.get("href", "#").startswith("#")


@pytest.fixture(scope="module")
def digits_study(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("report") / "digits")
    run_study(StudyConfig.from_dict(DIGITS), out, progress=False)
    assert main(["report", out]) == 0
    return out


@pytest.fixture(scope="module")
def signal_study(tmp_path_factory) -> str:
    """1-D signals from an .npz, 4 replicas: too few for attacks, no label noise."""
    root = tmp_path_factory.mktemp("signals")
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 40)
    y = rng.integers(0, 3, 160)
    x = np.sin(2 * np.pi * (y[:, None] + 1) * t) + 0.3 * rng.standard_normal((160, 40))
    np.savez(root / "waves.npz", x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    cfg = {
        **DIGITS,
        "name": "waves",
        "dataset": {"name": str(root / "waves.npz")},
        "subsets": {"replicas": 4, "ratio": 0.5, "design": "balanced"},
        "chunk_size": 4,
    }
    out = str(root / "study")
    run_study(StudyConfig.from_dict(cfg), out, progress=False)
    assert main(["report", out, "--out", str(root / "page"), "--data-root", str(root)]) == 0
    return str(root / "page")


def test_ranked_keeps_examples_with_an_interval_most_memorized_first():
    value = np.array([0.1, 0.9, np.nan, 0.5, 0.7, 0.3])
    n_in = np.array([3, 3, 0, 3, 1, 2])
    n_out = np.array([3, 3, 6, 2, 5, 4])
    est = Estimate(value, np.full(6, 0.1), n_in, n_out)
    # 2: no value, 4: one IN replica
    np.testing.assert_array_equal(ranked_examples(est), [1, 3, 5, 0])


def test_drawing_by_input_shape():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 0, 1])
    for shape, expected in (
        ((32, 32, 3), ("image", (32, 32, 3))),
        ((28, 28), ("image", (28, 28))),
        ((40,), ("signal", None)),
        ((4, 4, 5), ("none", None)),
    ):
        ds = from_arrays(rng.random((4, *shape)), y, rng.random((4, *shape)), y)
        assert _drawing(ds, "arrays") == expected
    assert _drawing(load("digits"), "digits") == ("image", (8, 8))


@pytest.mark.slow
def test_page_is_self_contained_and_complete(digits_study):
    with open(os.path.join(digits_study, "report.html")) as fh:
        text = fh.read()
    _assert_self_contained(text)
    page = Page(text)
    s = load_report_study(digits_study)
    (hist,) = page.find("img", id="histogram")
    (roc,) = page.find("img", id="roc")
    for uri in (hist["src"], roc["src"]):
        assert np.asarray(_png(uri).convert("L")).std() > 10
    for name in s.relations.attacks:
        assert name in text  # one table row and one ROC curve per attack
    examples = page.find("figure", within="examples")
    assert len(examples) == 2 * EXAMPLES_PER_SIDE
    mem = s.relations.columns["memorization"]
    order = ranked_examples(mem)
    shown = [int(f["data-index"]) for f in examples]
    np.testing.assert_array_equal(shown[:EXAMPLES_PER_SIDE], order[:EXAMPLES_PER_SIDE])
    np.testing.assert_array_equal(shown[EXAMPLES_PER_SIDE:], order[::-1][:EXAMPLES_PER_SIDE])
    # each drawing is its example: the 8x8 picture, dark where the pixel is bright
    for fig in examples[:3]:
        i = int(fig["data-index"])
        (img,) = [a for t, a, ids in page.elements if t == "img" and a.get("alt") == f"example {i}"]
        drawn = np.asarray(_png(img["src"]).convert("L").resize((8, 8), Image.BOX), float)
        r = np.corrcoef(-drawn.ravel(), s.dataset.x_train[i])[0, 1]
        assert r > 0.9, (i, r)
    flipped = s.dataset.train_info["flipped"]
    for name, auc in s.relations.flipped_auc.items():
        low, high = s.relations.flipped_auc_ci[name]
        if np.isfinite(auc):
            assert low <= auc <= high
        shown_auc = f"{auc:.3f} [" if np.isfinite(auc) else "n/a ["
        assert f"<td>{name}</td><td>{shown_auc}" in text
    for name, a in s.relations.attacks.items():
        assert f"<td>{name}</td><td>{a.auc:.3f} [{a.auc_ci[0]:.3f}, {a.auc_ci[1]:.3f}]" in text
    assert f"{int(flipped.sum())} of {len(flipped)} training labels were flipped" in text
    assert "16 / 16" in text and s.meta["dataset_fingerprint"] in text


@pytest.mark.slow
def test_signal_study_draws_line_plots_and_says_why_attacks_are_missing(signal_study):
    with open(os.path.join(signal_study, "report.html")) as fh:
        text = fh.read()
    _assert_self_contained(text)
    page = Page(text)
    examples = page.find("figure", within="examples")
    assert 2 <= len(examples) <= 2 * EXAMPLES_PER_SIDE
    (img,) = page.find("img", within="examples")[:1]
    picture = _png(img["src"])
    assert picture.width > picture.height  # a line plot, not a square image
    assert not page.find("img", id="roc")
    assert "No attack was evaluated" in text and "this study has 4" in text
    assert "No label was flipped" in text
    assert (
        "learning_time_recorded, forgetting_events_recorded: the study did not record "
        "traj_correct (needs train.record_every &gt; 0)" in text
    )
    assert "el2n: the study did not record traj_el2n" in text


def test_unfinished_study_is_reported_from_its_finished_replicas(digits_study, tmp_path):
    copy = str(tmp_path / "half")
    shutil.copytree(digits_study, copy)
    os.remove(os.path.join(copy, "done", "chunk-000001"))
    assert main(["report", copy]) == 0
    with open(os.path.join(copy, "report.html")) as fh:
        text = fh.read()
    assert "Unfinished study: 8 of 16 replicas" in text and "8 / 16" in text
    assert "The first 2 replicas are the targets" in text  # 8 replicas: 2 membership targets


def test_changed_fingerprint_is_refused_naming_both(digits_study, tmp_path, capsys):
    copy = str(tmp_path / "copy")
    shutil.copytree(digits_study, copy)
    meta_path = os.path.join(copy, "study.json")
    with open(meta_path) as fh:
        meta = json.load(fh)
    real, meta["dataset_fingerprint"] = meta["dataset_fingerprint"], "0" * 32
    with open(meta_path, "w") as fh:
        json.dump(seal(meta), fh)  # sealed: as if the dataset had changed since
    os.remove(os.path.join(copy, "report.html"))
    assert main(["report", copy]) == 2
    err = capsys.readouterr().err
    assert real in err and "0" * 32 in err
    assert not os.path.exists(os.path.join(copy, "report.html"))


def _chromium(*args: str, tmp_path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    return subprocess.run(
        [CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=True
    )


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is missing: install Debian's chromium package to render the report",
)
def test_chromium_renders_the_report(digits_study, tmp_path):
    url = "file://" + os.path.abspath(os.path.join(digits_study, "report.html"))
    shot = tmp_path / "report.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,3000", url, tmp_path=tmp_path)
    pixels = np.asarray(Image.open(shot).convert("L"), float)
    assert pixels.shape == (3000, 1200)
    assert pixels.std() > 20  # not a blank page
    assert (pixels < 128).mean() > 0.02  # ink: text, figures and drawn examples
    dom = Page(_chromium("--dump-dom", url, tmp_path=tmp_path).stdout)
    assert dom.find("img", id="histogram") and dom.find("img", id="roc")
    assert len(dom.find("figure", within="examples")) == 2 * EXAMPLES_PER_SIDE
    assert len(dom.find("img", within="examples")) == 2 * EXAMPLES_PER_SIDE
    for section in ("provenance", "summary", "memorization", "privacy", "flipped", "proxies"):
        assert dom.find("section", id=section)
