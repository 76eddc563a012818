"""memjax.data: the registry's datasets, user-array validation, file loaders and label noise."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import memjax as mj
from memjax.data import from_arrays, load, load_cifar, load_npz, longtail, with_label_noise
from tests.cifar_cases import cifar_batch, crafted_batches, python2_batch, write_pickle

# --------------------------------------------------------------------------- registry datasets


def test_mnist1d_shapes_and_types(mnist1d):
    ds = mnist1d
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.num_classes == 10 and ds.input_shape == (40,)
    assert set(np.unique(ds.y_train)) == set(range(10)) == set(np.unique(ds.y_test))


def test_mnist1d_deterministic_and_leaves_global_rng_alone(mnist1d_and_rng_check):
    first, untouched = mnist1d_and_rng_check
    assert untouched, "loading mnist1d changed numpy's global RNG state"
    np.random.seed(7)
    again = load("mnist1d")
    assert np.random.randint(1 << 30) == np.random.RandomState(7).randint(1 << 30)
    assert again.fingerprint == first.fingerprint
    np.testing.assert_array_equal(again.x_train, first.x_train)
    np.testing.assert_array_equal(again.y_test, first.y_test)


def test_digits_split_sizes_stratified_and_complete(digits):
    from sklearn.datasets import load_digits

    full = load_digits()
    assert (digits.n_train, digits.n_test) == (1437, 360)
    assert digits.input_shape == (64,) and digits.num_classes == 10
    assert digits.x_train.min() >= 0.0 and digits.x_train.max() <= 1.0
    # stratified: each class's test share is its overall share, to within one example
    overall = np.bincount(full.target, minlength=10) / len(full.target)
    np.testing.assert_allclose(np.bincount(digits.y_test, minlength=10), 360 * overall, atol=1)
    # together the two splits are exactly the original (pixels / 16, label) rows
    ours = np.concatenate(
        [
            np.c_[np.concatenate([digits.x_train, digits.x_test]) * 16],
            np.concatenate([digits.y_train, digits.y_test])[:, None],
        ],
        axis=1,
    )
    theirs = np.c_[full.data, full.target]
    np.testing.assert_allclose(np.unique(ours, axis=0), np.unique(theirs, axis=0), atol=1e-4)


def test_longtail_subpopulation_frequencies_follow_zipf():
    """Chi-square goodness of fit of the subpopulation ranks to Zipf and of the classes to
    uniform; the median p-value over 5 seeds must exceed 1e-3."""
    per_class, s = 8, 1.2
    zipf_p, class_p = [], []
    for seed in range(5):
        ds = longtail(
            num_classes=4,
            subpops_per_class=per_class,
            n_train=40000,
            n_test=50,
            zipf_exponent=s,
            seed=seed,
        )
        sub = ds.train_info["subpop"]
        np.testing.assert_array_equal(ds.y_train, sub // per_class)
        np.testing.assert_array_equal(ds.y_test, ds.test_info["subpop"] // per_class)
        rank_counts = np.bincount(sub % per_class, minlength=per_class)
        zipf = np.arange(1, per_class + 1) ** -s
        expected = len(sub) * zipf / zipf.sum()
        zipf_p.append(stats.chisquare(rank_counts, expected).pvalue)
        class_p.append(stats.chisquare(np.bincount(ds.y_train, minlength=4)).pvalue)
    assert np.median(zipf_p) > 1e-3, zipf_p
    assert np.median(class_p) > 1e-3, class_p  # classes are equally likely


def test_longtail_has_singletons_and_correct_counts():
    ds = load("longtail")
    sub = ds.train_info["subpop"]
    ids, counts = np.unique(sub, return_counts=True)
    recount = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    np.testing.assert_array_equal(
        ds.train_info["subpop_train_count"], [recount[s] for s in sub.tolist()]
    )
    np.testing.assert_array_equal(
        ds.test_info["subpop_train_count"], [recount.get(s, 0) for s in ds.test_info["subpop"]]
    )
    assert (ds.train_info["subpop_train_count"] == 1).sum() >= 10, "no singleton subpopulations"
    assert ds.train_info["subpop_train_count"].max() >= 50, "no head subpopulations"
    assert load("longtail").fingerprint == ds.fingerprint
    assert load("longtail", seed=1).fingerprint != ds.fingerprint


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"unknown dataset 'no_such_set'.*mnist1d"):
        load("no_such_set")


# ------------------------------------------------------------------------ from_arrays checks


def _good(n: int = 6, m: int = 4, d: int = 3, c: int = 3):
    rng = np.random.default_rng(0)
    return dict(
        x_train=rng.standard_normal((n, d)),
        y_train=np.arange(n) % c,
        x_test=rng.standard_normal((m, d)),
        y_test=np.arange(m) % c,
    )


def test_from_arrays_accepts_and_converts():
    arrays = _good()
    arrays["y_train"] = arrays["y_train"].astype(np.float64)  # integral floats are fine
    ds = from_arrays(**arrays)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.num_classes == 3 and ds.n_train == 6 and ds.n_test == 4


def _with(**changes):
    arrays = _good()
    for k, v in changes.items():
        arrays[k] = v(arrays[k]) if callable(v) else v
    return arrays


def _set(i, value):
    def f(a):
        a = a.copy()
        a.flat[i] = value
        return a

    return f


BAD_INPUTS = [
    pytest.param(
        _with(x_train=_set(4, np.nan)),
        {},
        ValueError,
        r"x_train contains NaN or inf.* 1 example",
        id="nan feature",
    ),
    pytest.param(
        _with(x_test=_set(0, np.inf)),
        {},
        ValueError,
        r"x_test contains NaN or inf",
        id="inf feature",
    ),
    pytest.param(
        _with(y_test=_set(1, 3)),
        {"num_classes": 3},
        ValueError,
        r"y_test has labels outside \[0, 3\)",
        id="label too big",
    ),
    pytest.param(
        _with(y_train=_set(0, -1)),
        {},
        ValueError,
        r"y_train has labels outside",
        id="negative label",
    ),
    pytest.param(
        _with(y_train=lambda y: y[:-1]),
        {},
        ValueError,
        r"y_train must have shape \(6,\)",
        id="labels too short",
    ),
    pytest.param(
        _with(y_train=lambda y: y[:0]),
        {},
        ValueError,
        r"y_train must have shape \(6,\)",
        id="no train labels",
    ),
    pytest.param(
        _with(y_test=lambda y: y[:, None]),
        {},
        ValueError,
        r"y_test must have shape \(4,\)",
        id="2-d labels",
    ),
    pytest.param(
        _with(x_test=lambda x: x[:, :2]),
        {},
        ValueError,
        r"train and test features differ in shape",
        id="feature shapes differ",
    ),
    pytest.param(
        _with(x_train=lambda x: x[:, 0]),
        {},
        ValueError,
        r"x_train must have shape \(examples, features",
        id="1-d features",
    ),
    pytest.param(
        _with(x_train=lambda x: x[:0], y_train=lambda y: y[:0]),
        {},
        ValueError,
        r"x_train is empty",
        id="empty train",
    ),
    pytest.param(
        _with(x_test=lambda x: x[:0], y_test=lambda y: y[:0]),
        {},
        ValueError,
        r"x_test is empty",
        id="empty test",
    ),
    pytest.param(
        _with(y_train=lambda y: y + 0.5),
        {"num_classes": 4},
        TypeError,
        r"y_train must hold integer class ids",
        id="fractional labels",
    ),
    pytest.param(
        _with(x_train=lambda x: x.astype(str)),
        {},
        TypeError,
        r"x_train must be numeric",
        id="string features",
    ),
    pytest.param(
        _with(y_train=lambda y: 0 * y, y_test=lambda y: 0 * y),
        {},
        ValueError,
        r"num_classes must be at least 2",
        id="one class",
    ),
    pytest.param(
        _good(),
        {"train_info": {"g": np.zeros(5)}},
        ValueError,
        r"train_info\['g'\] has length 5, expected 6",
        id="bad info length",
    ),
]


@pytest.mark.parametrize(("arrays", "kwargs", "error", "message"), BAD_INPUTS)
def test_from_arrays_rejects_bad_input(arrays, kwargs, error, message):
    with pytest.raises(error, match=message):
        from_arrays(**arrays, **kwargs)


@pytest.mark.parametrize(
    "labels",
    [np.array(["a", "b", "c", "a", "b", "c"]), np.array([0, 1, np.nan, 1, 0, 2])],
    ids=["strings", "nan"],
)
def test_from_arrays_rejects_non_integer_labels_without_num_classes(labels):
    """Inferring num_classes must not crash with an unrelated message before the label check."""
    with pytest.raises(TypeError, match=r"y_train must hold integer class ids"):
        from_arrays(**_with(y_train=labels))


# ------------------------------------------------------------------------------- fingerprint


def test_fingerprint_changes_with_any_single_value():
    base = from_arrays(**_good())
    assert from_arrays(**_good()).fingerprint == base.fingerprint
    assert from_arrays(**_good(), name="renamed").fingerprint == base.fingerprint
    for key, index, value in [
        ("x_train", 5, 0.123),
        ("x_test", 0, 9.0),
        ("y_train", 2, 0),
        ("y_test", 3, 2),
    ]:
        arrays = _good()
        arrays[key] = arrays[key].copy()
        assert arrays[key].flat[index] != value
        arrays[key].flat[index] = value
        assert from_arrays(**arrays).fingerprint != base.fingerprint, key
    assert from_arrays(**_good(), num_classes=5).fingerprint != base.fingerprint


# ------------------------------------------------------------------------------- file loaders


def test_load_npz_roundtrip(tmp_path: Path):
    arrays = _good()
    path = tmp_path / "small.npz"
    np.savez(path, **arrays, num_classes=7)
    for ds in (load_npz(path), load(str(path))):
        assert ds.num_classes == 7
        for k, v in arrays.items():
            np.testing.assert_allclose(getattr(ds, k), v, rtol=1e-6)
    np.savez(tmp_path / "inferred.npz", **arrays)
    assert load_npz(tmp_path / "inferred.npz").num_classes == 3
    partial = {k: v for k, v in arrays.items() if k != "y_test"}
    np.savez(tmp_path / "partial.npz", **partial)
    with pytest.raises(ValueError, match=r"missing arrays \['y_test'\]"):
        load_npz(tmp_path / "partial.npz")


def _expected_images(data: np.ndarray) -> np.ndarray:
    """Pixel (row, col) of channel c is byte c*1024 + row*32 + col: an explicit loop."""
    out = np.empty((len(data), 32, 32, 3), np.uint8)
    for c in range(3):
        for row in range(32):
            out[:, row, :, c] = data[:, c * 1024 + row * 32 : c * 1024 + row * 32 + 32]
    return out


def test_load_cifar10_format(tmp_path: Path):
    rng = np.random.default_rng(0)
    batches = [cifar_batch(rng, n, b"labels", 10) for n in (3, 2)]
    # one marked pixel: image 1 of batch 2, row 5, col 7, green channel
    batches[1][b"data"][1, 1 * 1024 + 5 * 32 + 7] = 200
    for i, batch in enumerate(batches, start=1):
        write_pickle(tmp_path / f"data_batch_{i}", batch)
    test = cifar_batch(rng, 4, b"labels", 10)
    write_pickle(tmp_path / "test_batch", test)
    write_pickle(tmp_path / "batches.meta", {b"label_names": [b"x"] * 10})

    ds = load(str(tmp_path))
    assert ds.num_classes == 10 and ds.x_train.shape == (5, 32, 32, 3)
    assert ds.x_test.shape == (4, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_train[3 + 1, 5, 7, 1] == 200
    train_data = np.concatenate([b[b"data"] for b in batches])
    np.testing.assert_array_equal(ds.x_train, _expected_images(train_data))
    np.testing.assert_array_equal(ds.x_test, _expected_images(test[b"data"]))
    # per-channel statistics of the training pixels, by which the trainer standardizes them
    pixels = _expected_images(train_data).astype(np.float64)
    mean, std = ds.channel_stats
    np.testing.assert_allclose(mean, [pixels[..., c].mean() for c in range(3)], rtol=1e-6)
    np.testing.assert_allclose(std, [pixels[..., c].std() for c in range(3)], rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, batches[0][b"labels"] + batches[1][b"labels"])
    np.testing.assert_array_equal(ds.y_test, test[b"labels"])


def test_load_cifar100_format(tmp_path: Path):
    rng = np.random.default_rng(1)
    train = cifar_batch(rng, 3, b"fine_labels", 100)
    train[b"fine_labels"][0] = 99
    train[b"coarse_labels"] = [0, 1, 2]
    test = cifar_batch(rng, 2, b"fine_labels", 100)
    write_pickle(tmp_path / "train", train)
    write_pickle(tmp_path / "test", test)
    ds = load_cifar(tmp_path)
    assert ds.num_classes == 100
    np.testing.assert_array_equal(ds.y_train, train[b"fine_labels"])
    np.testing.assert_array_equal(ds.x_train, _expected_images(train[b"data"]))
    np.testing.assert_array_equal(ds.x_test, _expected_images(test[b"data"]))


def test_load_cifar_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no CIFAR python-format files"):
        load_cifar(tmp_path)
    write_pickle(tmp_path / "test_batch", {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})
    with pytest.raises(FileNotFoundError, match="needs data_batch_"):
        load_cifar(tmp_path)
    write_pickle(
        tmp_path / "data_batch_1", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    )
    with pytest.raises(ValueError, match=r"'data' must be \(N, 3072\)"):
        load_cifar(tmp_path)
    write_pickle(tmp_path / "data_batch_1", {b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(ValueError, match="expected keys 'data' and 'labels'") as err:
        load_cifar(tmp_path)
    assert str(tmp_path / "data_batch_1") in str(err.value)  # the file, not just its name


@pytest.mark.parametrize("protocol", ["python2", 0, 1, 2, 3, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_load(tmp_path: Path, protocol):
    """The restricted unpickler admits what Python 2's cPickle and Python 3 (numpy scalars,
    empty bytes, protocol 5 buffers) write for this format."""
    rng = np.random.default_rng(2)
    train = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    for name, data, labels in (("data_batch_1", train, [1, 2, 3]), ("test_batch", test, [4, 5])):
        if protocol == "python2":
            (tmp_path / name).write_bytes(python2_batch(data, labels))
        else:
            batch = {b"data": data, b"labels": [np.int64(y) for y in labels], b"filenames": [b""]}
            (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    ds = load_cifar(tmp_path)
    np.testing.assert_array_equal(ds.x_train, _expected_images(train))
    np.testing.assert_array_equal(ds.x_test, _expected_images(test))
    np.testing.assert_array_equal(ds.y_train, [1, 2, 3])
    np.testing.assert_array_equal(ds.y_test, [4, 5])


@pytest.mark.parametrize("case", range(4))
def test_a_crafted_cifar_pickle_is_refused_unrun(tmp_path: Path, case):
    sentinel = tmp_path / "pwned"
    payload = crafted_batches(sentinel)[case]
    write_pickle(tmp_path / "data_batch_1", payload)
    write_pickle(tmp_path / "test_batch", {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})
    with pytest.raises(mj.data.UnsafePickleError, match=r"data_batch_1: refusing to unpickle"):
        load(str(tmp_path))
    assert not sentinel.exists()


def test_truncated_and_non_dict_cifar_pickles_name_the_file(tmp_path: Path):
    write_pickle(tmp_path / "test_batch", {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})
    whole = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
    for content, problem in (
        (whole[: len(whole) // 2], "not a CIFAR python-format batch"),
        (b"", "not a CIFAR python-format batch"),
        (b"PK\x03\x04 a zip file", "not a CIFAR python-format batch"),
        (pickle.dumps([1, 2, 3]), "holds a list, not the dict"),
    ):
        (tmp_path / "data_batch_1").write_bytes(content)
        with pytest.raises(mj.data.DataFileError, match=f"data_batch_1: {problem}"):
            load_cifar(tmp_path)


# -------------------------------------------------------------------------------- label noise


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.37])
def test_label_noise_flips_exact_count_to_other_classes(digits, rate):
    noisy, flipped = with_label_noise(digits, rate, seed=3)
    n = digits.n_train
    assert flipped.dtype == bool and flipped.shape == (n,)
    assert flipped.sum() == round(rate * n)
    changed = noisy.y_train != digits.y_train
    np.testing.assert_array_equal(changed, flipped)  # every flip lands on a different class
    np.testing.assert_array_equal(noisy.train_info["flipped"], flipped)
    np.testing.assert_array_equal(noisy.train_info["clean_label"], digits.y_train)
    assert noisy.y_train.dtype == np.int32 and noisy.y_train.max() < 10
    np.testing.assert_array_equal(noisy.x_train, digits.x_train)
    np.testing.assert_array_equal(noisy.y_test, digits.y_test)
    if rate:
        assert noisy.fingerprint != digits.fingerprint


def test_label_noise_new_labels_cover_all_other_classes(digits):
    """Flipped labels are uniform over the 9 other classes: chi-square, median p over 5 seeds."""
    pvalues = []
    for seed in range(5):
        noisy, flipped = with_label_noise(digits, 0.3, seed=seed)
        offsets = (noisy.y_train[flipped] - digits.y_train[flipped]) % 10
        counts = np.bincount(offsets, minlength=10)
        assert counts[0] == 0
        pvalues.append(stats.chisquare(counts[1:]).pvalue)
    assert np.median(pvalues) > 1e-3, pvalues


def test_label_noise_deterministic_by_seed(digits):
    a, fa = with_label_noise(digits, 0.1, seed=5)
    b, fb = with_label_noise(digits, 0.1, seed=5)
    c, fc = with_label_noise(digits, 0.1, seed=6)
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert a.fingerprint == b.fingerprint
    assert not np.array_equal(fa, fc)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_label_noise_rate_errors(digits, rate):
    with pytest.raises(ValueError, match=r"label-noise rate must be in \[0, 1\)"):
        with_label_noise(digits, rate)


def test_public_api_names():
    assert mj.data.Dataset is mj.data.from_arrays(**_good()).__class__
    assert {"mnist1d", "digits", "longtail"} <= set(mj.data.DATASETS)


def test_missing_npz_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mj.data.load(str(tmp_path / "missing.npz"))


def test_cifar_batches_are_read_in_numeric_order(tmp_path: Path):
    """data_batch_10 comes after data_batch_9, not after data_batch_1."""
    for i in range(1, 11):
        batch = {b"data": np.full((1, 3072), i, np.uint8), b"labels": [i - 1]}
        write_pickle(tmp_path / f"data_batch_{i}", batch)
    write_pickle(tmp_path / "test_batch", {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})
    np.testing.assert_array_equal(load_cifar(tmp_path).y_train, np.arange(10))


def test_a_stored_dataset_path_is_read_only_inside_the_data_root(tmp_path: Path, monkeypatch):
    """Relative paths resolve against the current directory (as `memjax run` read them);
    ``..``, absolute paths and symbolic links that lead out of the root are refused."""
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "link.npz").symlink_to(outside / "secret.npz")
    monkeypatch.chdir(root / "sub")
    assert mj.data.confined_path("data.npz", root) == str(root / "sub" / "data.npz")
    assert mj.data.confined_path("../data.npz", root) == str(root / "data.npz")
    assert mj.data.confined_path(str(outside / "x.npz"), tmp_path) == str(outside / "x.npz")
    for name in ("../../elsewhere/x.npz", str(outside / "x.npz"), "../link.npz", "/etc"):
        with pytest.raises(mj.data.DatasetPathError, match=rf"{name!r} leads to .*outside"):
            mj.data.confined_path(name, root)


def test_unreadable_npz_files_name_the_file(tmp_path: Path):
    arrays = _good()
    np.savez(tmp_path / "whole.npz", **arrays)
    whole = (tmp_path / "whole.npz").read_bytes()
    path = tmp_path / "bad.npz"
    for content in (whole[: len(whole) // 2], b"", b"not an archive", pickle.dumps(arrays)):
        path.write_bytes(content)
        with pytest.raises(mj.data.DataFileError, match="bad.npz: not a readable .npz archive"):
            load(str(path))
    np.savez(path, **{**arrays, "x_train": np.array([object()] * 3)})
    with pytest.raises(mj.data.DataFileError, match="cannot be loaded when allow_pickle=False"):
        load_npz(path)
