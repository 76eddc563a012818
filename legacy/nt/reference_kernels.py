"""Reference infinite-width kernels from neural-tangents 0.6.5, for memjax.theory.

Runs ONLY in the isolated legacy environment `.venv-nt` (`make nt-env`): neural-tangents
0.6.5 needs jax<=0.4.23, memjax needs current jax, so this script must never import memjax.
Everything it exchanges with memjax goes through plain .npz/.json files (see README.md).

Subcommands (run from the repository root):
  mlp-fixture --out tests/fixtures/nt_mlp_kernels
      NNGP/NTK of a grid of MLP specs on small fixed inputs; memjax's analytic kernels are
      tested against it. Writes <out>.npz and <out>.json.
  dataset --data DATA.npz --arch cnn1d_gap --out KERNELS.npz
      Kernels of an architecture memjax has no closed form for, on a dataset exported from
      the main environment by export_dataset.py.
  compare REFERENCE CANDIDATE [--rtol 1e-10]
      Compare two fixtures (<stem>.npz + <stem>.json); exit 1 on any mismatch. `make nt-check`
      uses it to catch drift in neural-tangents/jax.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Quiet TensorFlow, which `import neural_tangents` drags in, and keep JAX on the CPU.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

KernelFn = Callable[..., Any]

# Inputs of the MLP fixture: small, fixed, with one identical pair of rows, one parallel pair
# of different norm, and row norms from ~0.3 to ~3 x sqrt(d).
N1, N2, D = 5, 4, 7
FIXTURE_SEED = 20240601
ROW_SCALES_1 = (0.3, 1.0, 1.0, 2.0, 3.0)
ROW_SCALES_2 = (1.0, 1.0, 0.5, 1.5)

# (W_std, b_std, leaky_relu negative_slope) variants; b_std=None means no bias at all.
MLP_VARIANTS = ((1.0, None, 0.1), (1.0, 0.1, 0.1), (1.7, None, 0.25), (1.7, 0.3, 0.25))
MLP_ACTIVATIONS = ("relu", "erf", "gelu", "leaky_relu")
MLP_DEPTHS = (1, 2, 3)
# The NTK-parameterization kernels do not depend on width; the standard ones do.
MLP_WIDTHS = {"ntk": (512,), "standard": (64, 1024)}
DEFAULT_NEGATIVE_SLOPE = 0.01  # memjax.models.MLP's default; recorded for non-leaky cases


def _setup_jax() -> None:
    """Enable float64 before any array is made: the fixture is compared to 1e-10."""
    import jax

    jax.config.update("jax_enable_x64", True)


def fixture_inputs() -> tuple[np.ndarray, np.ndarray]:
    """x1 (N1, D), x2 (N2, D) float64; x2[0] == x1[1] exactly, x2[1] = 2.5 * x1[3]."""
    rng = np.random.default_rng(FIXTURE_SEED)
    x1 = rng.standard_normal((N1, D)) * np.asarray(ROW_SCALES_1)[:, None]
    x2 = rng.standard_normal((N2, D)) * np.asarray(ROW_SCALES_2)[:, None]
    x2[0] = x1[1]
    x2[1] = 2.5 * x1[3]
    return x1.astype(np.float64), x2.astype(np.float64)


def mlp_cases() -> list[dict[str, Any]]:
    """The agreed grid: depths 1-3 x 4 activations x 2 parameterizations x with/without bias,
    two W_std values, and two widths for the (width-dependent) standard parameterization."""
    cases = []
    for parameterization, widths in MLP_WIDTHS.items():
        for width in widths:
            for depth in MLP_DEPTHS:
                for activation in MLP_ACTIVATIONS:
                    for W_std, b_std, slope in MLP_VARIANTS:
                        leaky = activation == "leaky_relu"
                        cases.append(
                            {
                                "key": f"case{len(cases)}",
                                "depth": depth,
                                "width": width,
                                "activation": activation,
                                "negative_slope": slope if leaky else DEFAULT_NEGATIVE_SLOPE,
                                "W_std": W_std,
                                "b_std": b_std,
                                "parameterization": parameterization,
                            }
                        )
    return cases


def _activation_layer(name: str, negative_slope: float) -> tuple:
    from neural_tangents import stax

    if name == "relu":
        return stax.Relu()
    if name == "erf":
        return stax.Erf()
    if name == "gelu":
        return stax.Gelu(approximate=False)
    if name == "leaky_relu":
        return stax.LeakyRelu(alpha=negative_slope)
    raise ValueError(f"unknown activation {name!r}: use one of {MLP_ACTIVATIONS}")


def mlp_kernel_fn(case: dict[str, Any]) -> KernelFn:
    """kernel_fn of serial([Dense(width), act] * depth, Dense(1)) for one fixture case."""
    from neural_tangents import stax

    def dense(width: int) -> tuple:
        return stax.Dense(
            width, case["W_std"], case["b_std"], parameterization=case["parameterization"]
        )

    act = _activation_layer(case["activation"], case["negative_slope"])
    _, _, kernel_fn = stax.serial(*([dense(case["width"]), act] * case["depth"]), dense(1))
    return kernel_fn


def write_mlp_fixture(out: Path) -> None:
    """Write <out>.npz (x1, x2, case{i}_nngp, case{i}_ntk) and <out>.json (the case list)."""
    _setup_jax()
    x1, x2 = fixture_inputs()
    cases = mlp_cases()
    arrays: dict[str, np.ndarray] = {"x1": x1, "x2": x2}
    for case in cases:
        k = mlp_kernel_fn(case)(x1, x2, ("nngp", "ntk"))
        for name, value in (("nngp", k.nngp), ("ntk", k.ntk)):
            if value.dtype != np.float64 or not np.all(np.isfinite(value)):
                raise RuntimeError(f"{case}: {name} is not a finite float64 array")
            arrays[f"{case['key']}_{name}"] = np.asarray(value)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out.with_suffix(".npz"), **arrays)
    out.with_suffix(".json").write_text(json.dumps(cases, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {out.with_suffix('.npz')} and .json")


# ---------------------------------------------------------------- dataset kernels


def cnn1d_gap(
    depth: int = 3, kernel_size: int = 5, W_std: float = math.sqrt(2.0), b_std: float = 0.1
) -> tuple[KernelFn, dict[str, Any]]:
    """1-D CNN with global average pooling: [Conv(k, SAME), Relu] * depth, GAP, Dense(1).

    NTK parameterization, so the kernel does not depend on the channel count. Returns the
    kernel_fn and the JSON-able description stored as `architecture` in the kernel file.
    """
    from neural_tangents import stax

    layers = []
    for _ in range(depth):
        layers += [stax.Conv(1, (kernel_size,), padding="SAME", W_std=W_std, b_std=b_std)]
        layers += [stax.Relu()]
    layers += [stax.GlobalAvgPool(), stax.Dense(1, W_std=W_std, b_std=b_std)]
    _, _, kernel_fn = stax.serial(*layers)
    arch = {
        "name": "cnn1d_gap",
        "layers": (
            [f"Conv(k={kernel_size}, padding=SAME)", "Relu"] * depth + ["GlobalAvgPool", "Dense(1)"]
        ),
        "depth": depth,
        "kernel_size": kernel_size,
        "padding": "SAME",
        "activation": "relu",
        "W_std": W_std,
        "b_std": b_std,
        "parameterization": "ntk",
        "input": "x of shape (N, L) reshaped to (N, L, 1): one channel, no normalization",
    }
    return kernel_fn, arch


ARCHITECTURES: dict[str, Callable[[], tuple[KernelFn, dict[str, Any]]]] = {"cnn1d_gap": cnn1d_gap}


def blocked_kernels(
    kernel_fn: KernelFn, x1: np.ndarray, x2: np.ndarray | None, block: int
) -> tuple[np.ndarray, np.ndarray]:
    """(nngp, ntk) of shape (n1, n2) computed block by block to bound memory: a conv kernel
    holds a (b1, b2, L, L) covariance per layer. With x2=None only the upper block triangle
    is computed and mirrored. A few block shapes, so a few compilations."""
    import jax

    fn = jax.jit(kernel_fn, static_argnames="get")
    sym = x2 is None
    x2 = x1 if sym else x2
    n1, n2 = len(x1), len(x2)
    nngp, ntk = np.zeros((n1, n2)), np.zeros((n1, n2))
    for i in range(0, n1, block):
        for j in range(i if sym else 0, n2, block):
            # Diagonal tiles pass x2=None, as kernel_fn(x_train, None) would. (Their diagonal
            # entries carry ~1e-10 relative round-off from NT's arccos at identical inputs,
            # which varies with the tile shape; all other entries agree with an unblocked
            # call to ~1e-15.)
            right = None if sym and i == j else x2[j : j + block]
            k = fn(x1[i : i + block], right, get=("nngp", "ntk"))
            nngp[i : i + block, j : j + block] = np.asarray(k.nngp)
            ntk[i : i + block, j : j + block] = np.asarray(k.ntk)
            if sym and j > i:
                nngp[j : j + block, i : i + block] = np.asarray(k.nngp).T
                ntk[j : j + block, i : i + block] = np.asarray(k.ntk).T
    if sym:  # diagonal tiles are symmetric only up to round-off; make it exact for Cholesky
        nngp, ntk = (nngp + nngp.T) / 2, (ntk + ntk.T) / 2
    return nngp, ntk


def write_dataset_kernels(data: Path, arch_name: str, out: Path, block: int) -> None:
    """Kernel-matrix file for memjax.theory: train-train and test-train NNGP/NTK of `arch_name`
    on the (already subset) dataset exported by export_dataset.py, with its fingerprint."""
    _setup_jax()
    import jax
    import neural_tangents as nt

    if arch_name not in ARCHITECTURES:
        raise SystemExit(f"unknown architecture {arch_name!r}: use one of {sorted(ARCHITECTURES)}")
    with np.load(data, allow_pickle=False) as f:
        missing = {"x_train", "x_test", "fingerprint"} - set(f.files)
        if missing:
            raise SystemExit(
                f"{data}: missing arrays {sorted(missing)}; export it with "
                "legacy/nt/export_dataset.py"
            )
        x_train = f["x_train"].astype(np.float64)
        x_test = f["x_test"].astype(np.float64)
        fingerprint = str(f["fingerprint"])
    if x_train.ndim == 2:  # signals (N, L) -> (N, L, 1) channels-last for stax.Conv
        x_train, x_test = x_train[..., None], x_test[..., None]
    kernel_fn, arch = ARCHITECTURES[arch_name]()
    arch.update(
        input_shape=list(x_train.shape[1:]),
        neural_tangents=nt.__version__,
        jax=jax.__version__,
        dtype="float64",
    )
    t0 = time.perf_counter()
    nngp_tt, ntk_tt = blocked_kernels(kernel_fn, x_train, None, block)
    nngp_st, ntk_st = blocked_kernels(kernel_fn, x_test, x_train, block)
    seconds = time.perf_counter() - t0
    for name, a in (("nngp_train_train", nngp_tt), ("ntk_train_train", ntk_tt)):
        if not np.all(np.isfinite(a)):
            raise RuntimeError(f"{name} has non-finite entries")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")  # write then rename: never a half-written file
    np.savez(
        tmp,
        nngp_train_train=nngp_tt,
        ntk_train_train=ntk_tt,
        nngp_test_train=nngp_st,
        ntk_test_train=ntk_st,
        dataset_fingerprint=np.array(fingerprint),
        architecture=np.array(json.dumps(arch, sort_keys=True)),
    )
    tmp.replace(out)
    print(
        f"wrote {out}: {arch_name}, n_train={len(x_train)}, n_test={len(x_test)}, "
        f"{seconds:.1f} s, dataset {fingerprint}"
    )


# ---------------------------------------------------------------- drift check


def compare_fixtures(reference: Path, candidate: Path, rtol: float) -> list[str]:
    """Problems found when comparing two fixtures (empty list: they agree).

    The case lists must be identical and the inputs bit-identical. Kernels are compared
    elementwise as |a - b| <= rtol * (|b| + max|b|), i.e. relative to the entry with a floor
    at the array's scale, so a near-zero entry cannot make the check flaky."""
    problems = []
    ref_cases = json.loads(reference.with_suffix(".json").read_text())
    new_cases = json.loads(candidate.with_suffix(".json").read_text())
    if ref_cases != new_cases:
        problems.append("case lists (.json) differ")
    with np.load(reference.with_suffix(".npz")) as r, np.load(candidate.with_suffix(".npz")) as c:
        if set(r.files) != set(c.files):
            problems.append(f"array names differ: {sorted(set(r.files) ^ set(c.files))}")
        for name in sorted(set(r.files) & set(c.files)):
            a, b = c[name], r[name]
            if a.shape != b.shape or a.dtype != b.dtype:
                problems.append(f"{name}: {a.shape} {a.dtype} vs reference {b.shape} {b.dtype}")
            elif name in ("x1", "x2"):
                if not np.array_equal(a, b):
                    problems.append(f"{name}: inputs differ from the reference")
            else:
                err = np.abs(a - b) / (np.abs(b) + np.abs(b).max())
                if not err.max() <= rtol:
                    problems.append(f"{name}: relative error {err.max():.3g} > {rtol:g}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("mlp-fixture", help="write the MLP reference-kernel fixture")
    f.add_argument("--out", type=Path, required=True, help="path stem: writes .npz and .json")
    d = sub.add_parser("dataset", help="kernel matrices of an architecture on a dataset")
    d.add_argument("--data", type=Path, required=True, help="npz from export_dataset.py")
    d.add_argument("--arch", default="cnn1d_gap", choices=sorted(ARCHITECTURES))
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--block", type=int, default=100, help="rows per kernel block (memory)")
    c = sub.add_parser("compare", help="compare two MLP fixtures; exit 1 on a mismatch")
    c.add_argument("reference", type=Path, help="path stem of the committed fixture")
    c.add_argument("candidate", type=Path, help="path stem of the regenerated fixture")
    c.add_argument("--rtol", type=float, default=1e-10)
    args = p.parse_args(argv)

    if args.cmd == "mlp-fixture":
        write_mlp_fixture(args.out)
    elif args.cmd == "dataset":
        write_dataset_kernels(args.data, args.arch, args.out, args.block)
    else:
        problems = compare_fixtures(args.reference, args.candidate, args.rtol)
        for msg in problems:
            print(f"MISMATCH {msg}", file=sys.stderr)
        if problems:
            print(
                f"FAILED: {args.candidate} differs from {args.reference} ({len(problems)} "
                "problems): neural-tangents/jax in .venv-nt drifted, or the fixture is stale",
                file=sys.stderr,
            )
            return 1
        print(f"OK: {args.candidate} matches {args.reference} to rtol {args.rtol:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
