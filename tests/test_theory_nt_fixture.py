"""memjax's analytic NNGP/NTK equal neural-tangents' kernel_fn (reference fixture) to 1e-6.

The fixture is written by the isolated neural-tangents 0.6.5 environment (legacy/nt): for
each case, ``stax.serial([Dense(width, W_std, b_std, parameterization=P), act] * depth,
Dense(1, W_std, b_std, parameterization=P)).kernel_fn(x1, x2)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from memjax import theory
from memjax.models import MLP

FIXTURES = Path(__file__).parent / "fixtures"
NPZ, META = FIXTURES / "nt_mlp_kernels.npz", FIXTURES / "nt_mlp_kernels.json"
RTOL = 1e-6

pytestmark = pytest.mark.skipif(
    not (NPZ.exists() and META.exists()),
    reason=f"neural-tangents reference fixture not generated yet ({NPZ.name}, {META.name}; "
    "see the nt-fixture Make target)",
)


def cases() -> list[dict]:
    return json.loads(META.read_text()) if META.exists() else []


def spec_of(case: dict) -> MLP:
    return MLP(
        widths=(case["width"],) * case["depth"],
        activation=case["activation"],
        parameterization=case["parameterization"],
        W_std=case["W_std"],
        b_std=case["b_std"],
        negative_slope=case["negative_slope"],
    )


def test_fixture_covers_the_grid():
    seen = {
        (c["depth"], c["activation"], c["parameterization"], c["b_std"] is None) for c in cases()
    }
    assert seen >= {
        (d, a, p, nobias)
        for d in (1, 2, 3)
        for a in ("relu", "erf", "gelu", "leaky_relu")
        for p in ("ntk", "standard")
        for nobias in (True, False)
    }


@pytest.mark.parametrize("case", cases(), ids=lambda c: c["key"])
def test_analytic_kernels_equal_neural_tangents(case):
    with np.load(NPZ) as f:
        x1, x2 = f["x1"], f["x2"]
        nngp_ref, ntk_ref = f[f"{case['key']}_nngp"], f[f"{case['key']}_ntk"]
    with jax.enable_x64(True):
        nngp, ntk = theory.kernel(spec_of(case))(x1, x2)
    np.testing.assert_allclose(nngp, nngp_ref, rtol=RTOL, atol=RTOL * np.abs(nngp_ref).max())
    np.testing.assert_allclose(ntk, ntk_ref, rtol=RTOL, atol=RTOL * np.abs(ntk_ref).max())
