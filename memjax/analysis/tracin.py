"""TracIn's train -> test attributions (Pruthi et al. 2020, TracInCP) from replicas'
checkpoints (``memjax.train.train_checkpoints``).

For a replica with parameters w_t after recorded epoch t and learning rate eta_t there,
train example i's attribution to test example j's output f_j is

    a_ij = - sum_{t >= 1} eta_t  grad l_i(w_t) . grad f_j(w_t),

the first-order change of f_j that gradient steps on i make over training. l is the
training loss (label smoothing included), f the test margin for outputs "test_margin" and
"test_correct" (correctness has no gradient; the margin is its smooth surrogate) or the
unsmoothed test loss for "test_loss"; so a proponent of a test example has a > 0 on its
margin and a < 0 on its loss. The initialization (t = 0) is left out, as in
``memjax.analysis.proxies.self_influence``, whose value is the diagonal of the same sum with the
test loss. Evaluation mode throughout (BatchNorm's running averages).

Gradients are exact (no random projection): per checkpoint, the gradients of up to
``TEST_BYTES`` worth of test examples (m', P) stay in memory, and the training examples' are
formed ``block`` at a time against them.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from memjax.data import Dataset
from memjax.errors import DataError
from memjax.models import Spec
from memjax.outputs import loss_from_logits, margin_from_logits
from memjax.train import Checkpoints, GroupProgram, TrainConfig, standardization, tiled

__all__ = ["OUTPUTS", "tracin"]

OUTPUTS = ("test_margin", "test_correct", "test_loss")
TEST_BYTES = 2**30  # test gradients held at once


def _gradients(scalar: Callable, flat: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example gradients (b, P) of ``scalar(flat_params, x_i, y_i)``."""
    return jax.vmap(jax.grad(scalar), in_axes=(None, 0, 0))(flat, x, y)


def _replica_program(prog: GroupProgram, output: str, block: int) -> Callable:
    """(params (T, ...), state (T, ...), lr (T,), x, y, xt, yt) -> a (n, m) of one replica."""
    cfg = prog.cfg

    def attributions(params, state, lr, x, y, xt, yt):
        params0 = jax.tree.map(lambda v: v[0], params)  # the initialization (linearized nets)

        def checkpoint(acc, pst):
            p, st, eta = pst
            flat, unravel = ravel_pytree(p)

            def logits(f, xi):
                return prog._apply(unravel(f), st, params0, prog._features(xi[None]))[0][0]

            def train_loss(f, xi, yi):
                return loss_from_logits(logits(f, xi), yi, cfg.loss, cfg.label_smoothing)

            def test_output(f, xi, yi):
                if output == "test_loss":
                    return loss_from_logits(logits(f, xi), yi, cfg.loss)
                return margin_from_logits(logits(f, xi), yi)

            g_test = tiled(lambda a, b: {"g": _gradients(test_output, flat, a, b)}, xt, yt, block)[
                "g"
            ]  # (m, P)
            a = tiled(
                lambda a, b: {"a": _gradients(train_loss, flat, a, b) @ g_test.T}, x, y, block
            )["a"]  # (n, m)
            return acc - eta * a, None

        tail = jax.tree.map(lambda v: v[1:], (params, state, lr))
        acc = jnp.zeros((x.shape[0], xt.shape[0]), lr.dtype)
        return jax.lax.scan(checkpoint, acc, tail)[0]

    return jax.jit(attributions)


def tracin(
    spec: Spec,
    ds: Dataset,
    cfg: TrainConfig,
    checkpoints: Checkpoints,
    output: str = "test_margin",
    block: int = 64,
) -> np.ndarray:
    """TracIn attributions (R, n_train, n_test) of each checkpointed replica (module
    docstring); average over replicas for an ensemble's. ``cfg`` is the replicas' own."""
    if output not in OUTPUTS:
        raise DataError(f"unknown output {output!r}: use one of {OUTPUTS}")
    if len(checkpoints.epochs) < 2:
        raise DataError(
            "TracIn needs at least one checkpoint after training began; got recorded epochs "
            f"{checkpoints.epochs.tolist()}"
        )
    standardize = standardization(ds)
    prog = GroupProgram(spec, cfg, ds.input_shape, ds.num_classes, ds.n_train, "vmap", standardize)
    run = _replica_program(prog, output, block)
    leaves = jax.tree.leaves(checkpoints.params)
    dtype = leaves[0].dtype
    size = sum(int(np.prod(v.shape[2:])) for v in leaves)  # P
    m = ds.n_test
    part = max(1, min(m, TEST_BYTES // (size * dtype.itemsize)))
    pad = -(-m // part) * part - m
    xt = np.concatenate([ds.x_test, np.repeat(ds.x_test[:1], pad, axis=0)])
    yt = np.concatenate([ds.y_test, np.repeat(ds.y_test[:1], pad, axis=0)])
    lr = jnp.asarray(checkpoints.learning_rates, dtype)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    out = []
    for r in range(len(checkpoints.outputs.replica_ids)):
        params, state = jax.tree.map(itemgetter(r), (checkpoints.params, checkpoints.state))
        cols = [
            np.asarray(run(params, state, lr, x, y, xt[s : s + part], yt[s : s + part]))
            for s in range(0, m + pad, part)
        ]
        out.append(np.concatenate(cols, axis=1)[:, :m])
    return np.stack(out)
