"""Datasets: a validated, fingerprinted container and the offline registry of loaders.

Every study records the dataset's content fingerprint so that a store can never be resumed
or merged against different data by accident.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from memjax._registry import Registry
from memjax.errors import DataError, DataTypeError

__all__ = [
    "Dataset",
    "from_arrays",
    "with_random_labels",
    "load",
    "load_npz",
    "load_cifar",
    "DataFileError",
    "DatasetPathError",
    "confined_path",
    "UnsafePickleError",
    "with_label_noise",
    "without_examples",
    "DATASETS",
    "package_versions",
]

# Packages whose releases could change a registered dataset's bytes (generators, splits).
DATA_PACKAGES = ("numpy", "mnist1d", "scikit-learn")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that build the registered datasets, recorded with
    every study so that a changed fingerprint can be traced to the release that changed it."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in DATA_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test arrays plus per-example metadata (e.g. subpopulation ids, flipped labels).

    ``x_*`` are float32, or uint8 pixels (kept as bytes on device and standardized per
    channel inside the training step with ``channel_stats``), with examples on axis 0;
    ``y_*`` are int32 class ids in ``[0, num_classes)``. ``train_info``/``test_info`` hold
    per-example side arrays.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str = "arrays"
    train_info: dict[str, np.ndarray] = field(default_factory=dict)
    test_info: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        return len(self.y_test)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def channel_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean (C,), std (C,)) float32 of a uint8 dataset's training pixels per channel
        (the last axis), by which the trainer standardizes them; None for float data.

        A constant channel (e.g. an alpha channel of 255) has std 0: its std is given as 1,
        so it standardizes to zeros instead of dividing by zero (NaN in every output)."""
        if self.x_train.dtype != np.uint8:
            return None
        flat = self.x_train.reshape(-1, self.x_train.shape[-1]).astype(np.float64)
        std = flat.std(axis=0)
        return flat.mean(axis=0).astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)

    def model_inputs(self, x: np.ndarray) -> np.ndarray:
        """Examples ``x`` of this dataset as a model sees them: uint8 pixels standardized per
        channel with ``channel_stats`` (as the trainer does on device), float data as is."""
        stats = self.channel_stats
        if stats is None:
            return x
        return (x.astype(np.float32) - stats[0]) / stats[1]

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the arrays' bytes, shapes and dtypes (not of the name)."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(str(self.num_classes).encode())
        return h.hexdigest()[:32]


def _check_features(x: np.ndarray, split: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2:
        raise DataError(f"x_{split} must have shape (examples, features...), got {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"x_{split} is empty: the {split} split needs at least one example")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataTypeError(f"x_{split} must be numeric, got dtype {x.dtype}")
    if x.dtype == np.uint8:  # pixels: standardized on device (Dataset.channel_stats)
        return x
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise DataError(f"x_{split} contains NaN or inf values in {bad} example(s)")
    return x


def _integer_labels(y: np.ndarray, n: int, split: str) -> np.ndarray:
    """Shape and dtype checks of a label vector (integral floats are accepted)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"y_{split} must have shape ({n},) to match x_{split}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if (
            np.issubdtype(y.dtype, np.floating)
            and np.all(np.isfinite(y))
            and np.all(y == np.round(y))
        ):
            y = y.astype(np.int64)
        else:
            raise DataTypeError(f"y_{split} must hold integer class ids, got dtype {y.dtype}")
    return y


def _check_labels(y: np.ndarray, split: str, num_classes: int) -> np.ndarray:
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(
            f"y_{split} has labels outside [0, {num_classes}): min {y.min()}, max {y.max()}"
        )
    return y.astype(np.int32)


def from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int | None = None,
    name: str = "arrays",
    train_info: dict[str, np.ndarray] | None = None,
    test_info: dict[str, np.ndarray] | None = None,
) -> Dataset:
    """Validate user arrays and wrap them as a Dataset (num_classes inferred if omitted)."""
    x_train = _check_features(x_train, "train")
    x_test = _check_features(x_test, "test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"train and test features differ in shape: {x_train.shape[1:]} vs {x_test.shape[1:]}"
        )
    if x_train.dtype != x_test.dtype:
        raise DataTypeError(
            f"x_train and x_test must both be uint8 pixels or both other numbers, got "
            f"{x_train.dtype} and {x_test.dtype}"
        )
    # labels are checked for shape and integrality before num_classes is inferred from them
    y_train = _integer_labels(y_train, len(x_train), "train")
    y_test = _integer_labels(y_test, len(x_test), "test")
    if num_classes is None:
        num_classes = int(max(y_train.max(), y_test.max())) + 1
    if num_classes < 2:
        raise DataError(f"num_classes must be at least 2, got {num_classes}")
    y_train = _check_labels(y_train, "train", num_classes)
    y_test = _check_labels(y_test, "test", num_classes)
    for split, info, n in (("train", train_info, len(x_train)), ("test", test_info, len(x_test))):
        for k, v in (info or {}).items():
            if len(v) != n:
                raise DataError(f"{split}_info[{k!r}] has length {len(v)}, expected {n}")
    return Dataset(
        x_train,
        y_train,
        x_test,
        y_test,
        int(num_classes),
        name,
        {k: np.asarray(v) for k, v in (train_info or {}).items()},
        {k: np.asarray(v) for k, v in (test_info or {}).items()},
    )


MNIST1D_TRAIN, MNIST1D_TEST = 4000, 1000


# dataset name -> loader(**settings): the names a study config's ``dataset.name`` accepts
DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")


@DATASETS.register("mnist1d")
def _mnist1d(
    n_train: int = MNIST1D_TRAIN, n_test: int = MNIST1D_TEST, subset_seed: int = 0
) -> Dataset:
    """MNIST-1D generated offline by the mnist1d package with its default arguments.

    4000 train / 1000 test signals of length 40, 10 classes; the generator is seeded (42)
    and deterministic. numpy's global RNG state, which the generator reseeds, is restored.
    Smaller ``n_train``/``n_test`` take a random subset of each split (sorted indices, drawn
    with ``subset_seed``; named ``mnist1d[n_train/n_test]``), e.g. for kernel experiments.
    """
    if not (2 <= n_train <= MNIST1D_TRAIN and 1 <= n_test <= MNIST1D_TEST):
        raise DataError(
            f"mnist1d needs 2 <= n_train <= {MNIST1D_TRAIN} and 1 <= n_test <= {MNIST1D_TEST}"
        )
    full = _mnist1d_full()
    if (n_train, n_test) == (MNIST1D_TRAIN, MNIST1D_TEST):
        return full
    rng = np.random.default_rng([subset_seed, n_train, n_test])
    tr = np.sort(rng.choice(MNIST1D_TRAIN, n_train, replace=False))
    te = np.sort(rng.choice(MNIST1D_TEST, n_test, replace=False))
    return from_arrays(
        full.x_train[tr],
        full.y_train[tr],
        full.x_test[te],
        full.y_test[te],
        10,
        f"mnist1d[{n_train}/{n_test}]",
    )


def _mnist1d_full() -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    return from_arrays(d["x"], d["y"], d["x_test"], d["y_test"], 10, "mnist1d")


DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


@DATASETS.register("digits")
def _digits() -> Dataset:
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1], flattened to 64 features.

    Split: stratified, 360 test / 1437 train, ``train_test_split(random_state=0)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.data.astype(np.float32) / 16.0
    xtr, xte, ytr, yte = train_test_split(
        x, d.target, test_size=DIGITS_TEST_SIZE, stratify=d.target, random_state=DIGITS_SPLIT_SEED
    )
    return from_arrays(xtr, ytr, xte, yte, 10, "digits")


@DATASETS.register("longtail")
def longtail(
    num_classes: int = 10,
    subpops_per_class: int = 40,
    n_train: int = 2000,
    n_test: int = 1000,
    dim: int = 32,
    zipf_exponent: float = 1.2,
    noise: float = 0.35,
    seed: int = 0,
) -> Dataset:
    """Synthetic long-tailed mixture in the spirit of Feldman (2020).

    Each class is a union of subpopulations (Gaussian clusters with their own random centre on
    the unit sphere, so a subpopulation is not predictable from its class's other
    subpopulations). Subpopulation frequencies follow a Zipf law, so the tail subpopulations
    appear once or not at all among the training examples. Train and test are drawn i.i.d.
    from the same mixture. ``train_info``/``test_info`` carry ``subpop`` (global id) and
    ``subpop_train_count`` (how many training examples share that subpopulation).
    """
    rng = np.random.default_rng(seed)
    n_sub = num_classes * subpops_per_class
    centers = rng.standard_normal((n_sub, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    sub_label = np.repeat(np.arange(num_classes), subpops_per_class)
    ranks = np.tile(np.arange(1, subpops_per_class + 1), num_classes).astype(float)
    weights = ranks**-zipf_exponent
    probs = weights / weights.sum()

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sub = rng.choice(n_sub, size=n, p=probs)
        x = centers[sub] + noise / np.sqrt(dim) * rng.standard_normal((n, dim))
        return x.astype(np.float32), sub_label[sub], sub

    xtr, ytr, str_ = draw(n_train)
    xte, yte, ste = draw(n_test)
    counts = np.bincount(str_, minlength=n_sub)
    return from_arrays(
        xtr,
        ytr,
        xte,
        yte,
        num_classes,
        "longtail",
        train_info={"subpop": str_, "subpop_train_count": counts[str_]},
        test_info={"subpop": ste, "subpop_train_count": counts[ste]},
    )


class DataFileError(DataError):
    """A dataset file is not what its format says (truncated, another kind of file)."""


class UnsafePickleError(DataFileError):
    """A CIFAR batch names an object outside that format's structure: refused unrun."""


NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _npz_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The dataset arrays (and ``num_classes`` if present) of the .npz at ``path``, read
    without pickles; a file that is no such archive (truncated, another kind of file, object
    arrays) is a DataFileError naming it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = set(NPZ_ARRAYS) - set(f.files)
            if missing:
                raise DataFileError(
                    f"{path}: missing arrays {sorted(missing)} (found {sorted(f.files)})"
                )
            return {name: f[name] for name in (*NPZ_ARRAYS, "num_classes") if name in f.files}
    except DataFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataFileError(
            f"{path}: not a readable .npz archive of arrays (truncated, another kind of file "
            f"or pickled objects: {err})"
        ) from None


def load_npz(path: str | os.PathLike) -> Dataset:
    """Load ``x_train, y_train, x_test, y_test`` (and optional ``num_classes``) from an .npz."""
    f = _npz_arrays(path)
    nc = f.get("num_classes")
    if nc is not None and (nc.ndim != 0 or nc.dtype.kind not in "iu"):
        raise DataFileError(
            f"{path}: num_classes must be one integer, got a {nc.dtype} array of shape {nc.shape}"
        )
    try:
        arrays = (f[name] for name in NPZ_ARRAYS)
        return from_arrays(*arrays, None if nc is None else int(nc), os.path.basename(path))
    except (ValueError, TypeError) as err:
        raise DataFileError(f"{path}: {err}") from None


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles written by Python 3 use it (bytes as latin-1
    text), and only so."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not bytes")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """``bytes()`` as those pickles write b"" (never ``bytes(n)``, which allocates n bytes)."""
    return b""


def _numpy_globals() -> dict[tuple[str, str], Callable]:
    """The callables numpy's own pickles of arrays, dtypes and scalars name, by module below
    numpy's core package and name, taken from the reductions themselves."""
    array = np.zeros(1, np.uint8)
    return {
        ("multiarray", "_reconstruct"): array.__reduce__()[0],
        ("multiarray", "scalar"): np.int64(0).__reduce__()[0],
        ("numeric", "_frombuffer"): array.__reduce_ex__(5)[0],  # protocol 5
    }


# (module, name) -> object: all a CIFAR python-format batch may name, as pickled by Python 2's
# cPickle or by Python 3 with numpy 1 (``numpy.core``) or 2 (``numpy._core``); dicts, lists,
# strings and ints need no global.
_CIFAR_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    **{
        (f"{core}.{module}", name): fn
        for core in ("numpy.core", "numpy._core")
        for (module, name), fn in _numpy_globals().items()
    },
}


class _CifarUnpickler(pickle.Unpickler):
    """Reads the structure of a CIFAR batch and nothing else: any other global (os.system,
    builtins.exec, ...) is refused before it is looked up, so a crafted file runs nothing."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{module}.{name}") from None


def _unpickle(path: str) -> dict:
    """A CIFAR python-format batch as a dict with str keys, read by ``_CifarUnpickler``;
    anything else (a forbidden object, a truncated or non-pickle file, not a dict) is a
    DataFileError naming the file."""
    try:
        with open(path, "rb") as fh:
            d = _CifarUnpickler(fh, encoding="bytes").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(
            f"{path}: refusing to unpickle {err}: a CIFAR python-format batch holds only dicts, "
            "lists, strings, numbers and numpy arrays (this file may be crafted to run code)"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataFileError(
            f"{path}: not a CIFAR python-format batch (truncated or not a pickle: {err})"
        ) from None
    if not isinstance(d, dict):
        raise DataFileError(
            f"{path}: holds a {type(d).__name__}, not the dict of a CIFAR python-format batch"
        )
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def load_cifar(directory: str | os.PathLike) -> Dataset:
    """Load the CIFAR-10 or CIFAR-100 *python* format from an extracted directory.

    CIFAR-10: ``data_batch_1..5`` and ``test_batch`` with ``data`` (N, 3072 uint8, channel-major)
    and ``labels``. CIFAR-100: ``train`` and ``test`` with ``fine_labels``. Images are returned
    as uint8 (N, 32, 32, 3); the trainer standardizes them per channel on device.
    """
    directory = os.fspath(directory)
    names = set(os.listdir(directory))
    if "test_batch" in names:
        batches = [n for n in names if n.startswith("data_batch_") and n[11:].isdigit()]
        train_files = sorted(batches, key=lambda n: int(n.rsplit("_", 1)[1]))
        if not train_files:
            raise FileNotFoundError(f"{directory}: CIFAR-10 format needs data_batch_* files")
        test_files, key, num_classes = ["test_batch"], "labels", 10
    elif {"train", "test"} <= names:
        train_files, test_files, key, num_classes = ["train"], ["test"], "fine_labels", 100
    else:
        raise FileNotFoundError(
            f"{directory}: no CIFAR python-format files (data_batch_*/test_batch or train/test)"
        )

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in files:
            path = os.path.join(directory, name)
            d = _unpickle(path)
            if "data" not in d or key not in d:
                raise DataFileError(f"{path}: expected keys 'data' and {key!r}, found {sorted(d)}")
            data = np.asarray(d["data"], np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072:
                raise DataFileError(f"{path}: 'data' must be (N, 3072), got {data.shape}")
            xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(d[key]))
        return np.concatenate(xs), np.concatenate(ys)

    xtr, ytr = read(train_files)
    xte, yte = read(test_files)
    try:
        return from_arrays(xtr, ytr, xte, yte, num_classes, f"cifar{num_classes}")
    except (ValueError, TypeError) as err:
        raise DataFileError(f"{directory}: {err}") from None


class DatasetPathError(DataError):
    """A dataset path from a study's config leads outside the data root it is read under."""


def confined_path(name: str, root: str | os.PathLike) -> str:
    """The dataset path ``name`` of a stored study (perhaps written by someone else), resolved
    as ``memjax run`` resolved it (relative to the current directory), and refused
    (DatasetPathError) unless it lies inside the data root ``root`` with ``..`` and symbolic
    links resolved: nothing outside the root is opened."""
    path = os.path.abspath(name)
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise DatasetPathError(
            f"dataset.name {name!r} leads to {real}, outside the data root "
            f"{os.path.abspath(root)}: a stored study's dataset is read only inside the data "
            "root (the current directory unless --data-root DIR or data_root= names another); "
            "name the directory that holds this dataset if you trust the study"
        )
    return path


def load(name: str, **kwargs) -> Dataset:
    """Load a registered dataset (``mnist1d``, ``digits``, ``longtail``), an .npz file or a
    CIFAR python-format directory given by path."""
    if name in DATASETS:
        return DATASETS[name](**kwargs)
    if name.endswith(".npz"):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"dataset file {name!r} does not exist")
        return load_npz(name)
    if os.path.isdir(name):
        return load_cifar(name)
    raise DataError(
        f"unknown dataset {name!r}: use one of {sorted(DATASETS)}, an .npz file path, "
        "or a CIFAR python-format directory"
    )


def with_label_noise(ds: Dataset, rate: float, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """Flip a fraction ``rate`` of training labels to a uniformly chosen *different* class.

    Exactly ``round(rate * n_train)`` labels change. Returns the noisy dataset (its
    ``train_info`` gains ``flipped`` and ``clean_label``) and the boolean flipped mask.
    """
    if not 0.0 <= rate < 1.0:
        raise DataError(f"label-noise rate must be in [0, 1), got {rate}")
    rng = np.random.default_rng([seed, 0x6E6F6973])
    n = ds.n_train
    flipped = np.zeros(n, bool)
    flipped[rng.choice(n, size=int(round(rate * n)), replace=False)] = True
    offset = rng.integers(1, ds.num_classes, size=n)
    y = np.where(flipped, (ds.y_train + offset) % ds.num_classes, ds.y_train).astype(np.int32)
    info = {**ds.train_info, "flipped": flipped, "clean_label": ds.y_train.copy()}
    return replace(ds, y_train=y, name=f"{ds.name}+noise{rate:g}", train_info=info), flipped


def with_random_labels(ds: Dataset, rate: float, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """Random labels (Zhang et al. 2017): ``round(rate * n_train)`` training examples, chosen
    at random, get a label drawn uniformly from all classes (so about 1/num_classes of them
    keep their own); rate 1 makes the labels independent of the inputs. Returns the dataset
    (``train_info`` gains ``flipped``, the examples whose label changed, and
    ``clean_label``) and the flipped mask."""
    if not 0.0 <= rate <= 1.0:
        raise DataError(f"random-label rate must be in [0, 1], got {rate}")
    rng = np.random.default_rng([seed, 0x72616E64])
    n = ds.n_train
    drawn = np.zeros(n, bool)
    drawn[rng.choice(n, size=int(round(rate * n)), replace=False)] = True
    y = np.where(drawn, rng.integers(0, ds.num_classes, size=n), ds.y_train).astype(np.int32)
    flipped = y != ds.y_train
    info = {**ds.train_info, "flipped": flipped, "clean_label": ds.y_train.copy()}
    return replace(ds, y_train=y, name=f"{ds.name}+random{rate:g}", train_info=info), flipped


def without_examples(ds: Dataset, indices: np.ndarray) -> Dataset:
    """``ds`` without the training examples ``indices`` (distinct, in [0, n_train)); the test
    split is unchanged. ``train_info`` arrays are cut alike and gain ``original_index``
    (each remaining example's index in ``ds``, or in the dataset ``ds`` was itself cut from)."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise DataError(f"indices to remove must be a 1-D list of integers, got {idx!r}")
    if idx.size and (idx.min() < 0 or idx.max() >= ds.n_train):
        raise DataError(
            f"indices to remove must lie in [0, {ds.n_train}) (the training examples of "
            f"{ds.name}), got min {idx.min()}, max {idx.max()}"
        )
    if len(np.unique(idx)) != len(idx):
        raise DataError("indices to remove must be distinct")
    if len(idx) > ds.n_train - 2:
        raise DataError(f"removing {len(idx)} of {ds.n_train} examples leaves fewer than 2")
    keep = np.ones(ds.n_train, bool)
    keep[idx.astype(np.int64)] = False
    info = {"original_index": np.arange(ds.n_train), **ds.train_info}
    return replace(
        ds,
        x_train=ds.x_train[keep],
        y_train=ds.y_train[keep],
        name=f"{ds.name}-minus{len(idx)}",
        train_info={k: np.asarray(v)[keep] for k, v in info.items()},
    )
