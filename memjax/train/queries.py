"""LiRA's augmented queries: each example evaluated under K deterministic views.

Carlini et al. (2022, "Membership Inference Attacks From First Principles", Section VI.B)
query every example under several augmentations and fit one Gaussian per view; the
attack's score averages the views (``memjax.privacy.lira_eval``). Their reference code
(github.com/tensorflow/privacy, ``research/mi_lira_2021/inference.py``, ``get_loss``) makes
the views of an NHWC batch as::

    for image in (x, x mirrored left-right):           # x[:, :, ::-1, :]
        padded = reflect-pad image by s pixels on both spatial axes (tf.pad "REFLECT")
        for dx in 0 .. 2s:                              # rows (H)
            for dy in 0 .. 2s:                          # columns (W)
                view = padded[:, dx:dx+H, dy:dy+W, :]

with s = 0 for its 2 queries (identity, mirror; the call ``inference.py`` ships) and s = 1
for its 18 (2 mirrors x 3 x 3 crop offsets, i.e. shifts by -1, 0, +1 pixel on each axis;
stride 1; the parameters for 18 queries as reproductions of LiRA set them, e.g.
privacytrustlab/ml_privacy_meter, ``research/2024_rmia/README.md``). The settings here
reproduce those sets in that order:

* ``"none"``: no views stored (the identity margins ``train_margin`` / ``test_margin`` only).
* ``"mirror"``: K = 2: identity, mirror (NHWC images only).
* ``"mirror_shift"``: K = 18, the reference's 18 (NHWC images only); the identity is view 4.
* ``"shift"``: the shifts without mirrors: K = 9 on images (identity: view 4) and K = 3
  along the signal axis of 1-D signals (inputs (L,) or (L, C); identity: view 1), e.g.
  MNIST-1D, whose generator translates its templates, so a shift is a label-preserving
  view, while reversing a signal is not (``mirror`` settings are refused for signals).

The reflect padding mirrors about the edge sample without repeating it (numpy's and
TensorFlow's "reflect"). A view depends only on the example, never on a key.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from jax import lax

from memjax import schema
from memjax.outputs import margin_from_logits

__all__ = [
    "QUERIES",
    "check_queries",
    "num_views",
    "query_margins",
    "query_views",
    "view_offsets",
]

QUERIES = ("none", "mirror", "mirror_shift", "shift")
# setting -> (mirrors, shift s in pixels)
_SETS = {"mirror": ((False, True), 0), "mirror_shift": ((False, True), 1), "shift": ((False,), 1)}
_NEED_IMAGES = ("mirror", "mirror_shift")


def _spatial_axes(input_shape: tuple[int, ...]) -> int:
    """How many leading axes of one example are spatial: 2 for NHWC images (H, W, C),
    1 for signals (L,) or (L, C)."""
    return 2 if len(input_shape) == 3 else 1


def view_offsets(queries: str, input_shape: tuple[int, ...]) -> list[tuple[bool, tuple[int, ...]]]:
    """The views in stored order: (mirrored, crop offsets into the padded example per
    spatial axis, 0 .. 2s; the identity is offset s). Empty for ``"none"``."""
    if queries == "none":
        return []
    mirrors, s = _SETS[queries]
    grid = list(itertools.product(range(2 * s + 1), repeat=_spatial_axes(input_shape)))
    return [(m, o) for m in mirrors for o in grid]


def num_views(queries: str, input_shape: tuple[int, ...]) -> int:
    """K, the number of views of ``queries`` for examples of ``input_shape`` (0 for none)."""
    return len(view_offsets(queries, input_shape))


def check_queries(queries: str, input_shape: tuple[int, ...], setting: str = "train.queries"):
    """Refuse a view set the data cannot take, naming ``setting``: mirrors need NHWC images
    (H, W, C); shifts need a spatial axis (images, or signals (L,) / (L, C)) of length > 1."""
    schema.choice(queries, setting, QUERIES)
    if queries == "none":
        return
    if queries in _NEED_IMAGES and len(input_shape) != 3:
        raise schema.SettingError(
            setting,
            queries,
            f'"none" or "shift" for inputs of shape {tuple(input_shape)}: mirrored views '
            "need NHWC images (H, W, C); a reversed signal is not a label-preserving view",
        )
    if len(input_shape) not in (1, 2, 3) or min(input_shape[: _spatial_axes(input_shape)]) < 2:
        raise schema.SettingError(
            setting,
            queries,
            f'"none" for inputs of shape {tuple(input_shape)}: shifted views need images '
            "(H, W, C) or signals (L,) / (L, C) with spatial sizes >= 2 (reflect padding)",
        )


def query_views(x: jax.Array, queries: str) -> jax.Array:
    """The K views of a batch ``x`` (b, *input_shape): (K, b, *input_shape), same dtype,
    in the order of ``view_offsets``."""
    shape = x.shape[1:]
    k = _spatial_axes(shape)
    s = _SETS[queries][1]
    pad = [(0, 0)] + [(s, s)] * k + [(0, 0)] * (len(shape) - k)
    views = []
    for mirrored, offsets in view_offsets(queries, shape):
        base = jnp.flip(x, axis=2) if mirrored else x  # left-right: the W axis of NHWC
        padded = jnp.pad(base, pad, mode="reflect") if s else base
        start = (0, *offsets, *[0] * (len(shape) - k))
        views.append(lax.slice(padded, start, [a + b for a, b in zip(start, x.shape, strict=True)]))
    return jnp.stack(views)


def query_margins(apply, x: jax.Array, y: jax.Array, queries: str) -> jax.Array:
    """Margins (b, K) of a batch under its K views; ``apply(x) -> logits``. The views run
    one after another, so activation memory is that of one view of the batch."""
    views = query_views(x, queries)
    return lax.map(lambda v: margin_from_logits(apply(v), y), views).T
