"""Export a memjax dataset (or a prefix subset of it) for the neural-tangents environment.

Runs in the MAIN environment (it uses memjax); reference_kernels.py in `.venv-nt` cannot
import memjax, so the data crosses over as an .npz holding x_train, y_train, x_test, y_test,
num_classes and `fingerprint` (memjax's Dataset.fingerprint of exactly these arrays).
The file is itself a memjax dataset: `memjax.data.load("that.npz").fingerprint` equals the
stored fingerprint, which the kernel file then carries, so kernels can never be paired with
other data by accident.

Usage (from the repository root):
  .venv/bin/python legacy/nt/export_dataset.py mnist1d --n-train 1000 --n-test 500 --out D.npz
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

import memjax as mj


def subset(ds: mj.data.Dataset, n_train: int | None, n_test: int | None) -> mj.data.Dataset:
    """The first n_train train and first n_test test examples (None: all), as a Dataset.

    A prefix, not a random draw, so anyone can rebuild the same subset from the full dataset.
    """
    for n, total, split in ((n_train, ds.n_train, "train"), (n_test, ds.n_test, "test")):
        if n is not None and not 1 <= n <= total:
            raise ValueError(f"n_{split}={n} must be in [1, {total}] for {ds.name}")
    return mj.data.from_arrays(
        ds.x_train[:n_train],
        ds.y_train[:n_train],
        ds.x_test[:n_test],
        ds.y_test[:n_test],
        ds.num_classes,
        ds.name,
    )


def export(name: str, out: Path, n_train: int | None, n_test: int | None) -> str:
    """Write the (subset) dataset `name` to `out` atomically; return its fingerprint."""
    ds = subset(mj.data.load(name), n_train, n_test)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(
        tmp,
        x_train=ds.x_train,
        y_train=ds.y_train,
        x_test=ds.x_test,
        y_test=ds.y_test,
        num_classes=np.array(ds.num_classes),
        fingerprint=np.array(ds.fingerprint),
        name=np.array(ds.name),
    )
    os.replace(tmp, out)
    return ds.fingerprint


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dataset", help="a memjax.data.load name (mnist1d, digits, ...) or .npz path")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n-train", type=int, default=None, help="first N train examples")
    p.add_argument("--n-test", type=int, default=None, help="first N test examples")
    args = p.parse_args(argv)
    fp = export(args.dataset, args.out, args.n_train, args.n_test)
    print(f"wrote {args.out}: {args.dataset} n_train={args.n_train} n_test={args.n_test} {fp}")


if __name__ == "__main__":
    main()
