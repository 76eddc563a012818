"""memjax.train.augment: crops, flips and cutout checked against numpy, per image, and keys that
depend on (replica, epoch, step) only."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from memjax.train import augment

X = np.random.default_rng(0).integers(0, 256, (64, 10, 9, 2), dtype=np.uint8)


def _candidates(image: np.ndarray) -> list[tuple[int, int, bool, np.ndarray]]:
    """Every crop (pad 4, reflect) of one image, flipped or not: numpy's own padding."""
    h, w, _ = image.shape
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    out = []
    for i in range(9):
        for j in range(9):
            crop = padded[i : i + h, j : j + w]
            out += [(i, j, False, crop), (i, j, True, crop[:, ::-1])]
    return out


def test_crop_flip_is_a_reflect_padded_crop_and_flip_of_each_image():
    out = np.asarray(augment.crop_flip(jax.random.PRNGKey(3), X))
    assert out.shape == X.shape and out.dtype == np.uint8
    drawn = []
    for image, result in zip(X, out, strict=True):
        hits = [(i, j, f) for i, j, f, c in _candidates(image) if np.array_equal(c, result)]
        # a crop at the far left or right of an odd-width reflected image is a palindrome
        # of columns, so its flip can coincide with it; at least one candidate must match
        assert hits, "each output is a crop/flip of its own input"
        drawn.append(hits[0])
    offsets = np.array([(i, j) for i, j, _ in drawn])
    flips = np.array([f for _, _, f in drawn])
    # 64 images: offsets spread over 0..8 on both axes and both flip states occur
    assert len(np.unique(offsets[:, 0])) >= 6 and len(np.unique(offsets[:, 1])) >= 6
    assert 16 <= flips.sum() <= 48  # Binomial(64, 1/2): 4 standard deviations


def test_crop_is_crop_flip_without_its_flips():
    """Same key: the same crops as crop_flip, and no image mirrored."""
    key = jax.random.PRNGKey(3)
    both, crops = (np.asarray(augment.crop_flip(key, X, flip=f)) for f in (True, False))
    for image, a, b in zip(X, both, crops, strict=True):
        hits = [(i, j) for i, j, f, c in _candidates(image) if not f and np.array_equal(c, b)]
        assert hits  # an unflipped crop of its own input
        assert np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])
    assert not np.array_equal(both, crops)


def test_cutout_zeroes_one_clipped_square_per_image():
    x = np.ones((200, 12, 12, 3), np.float32)
    out = np.asarray(augment.cutout(jax.random.PRNGKey(1), x, 4))
    holes = out[..., 0] == 0
    np.testing.assert_array_equal(out == 0, np.repeat(holes[..., None], 3, -1))
    for hole in holes:  # a rectangle: rows x cols of the zeroed pixels
        rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
        assert hole.sum() == len(rows) * len(cols) and 1 <= len(rows) <= 4 and len(cols) <= 4
        assert np.ptp(rows) + 1 == len(rows) and np.ptp(cols) + 1 == len(cols)
    sizes = holes.sum(axis=(1, 2))
    assert (sizes == 16).mean() > 0.5  # centres away from the border keep the full square


def test_step_keys_are_distinct_and_deterministic():
    replica = jax.random.PRNGKey(7)
    keys = {
        (e, s): tuple(np.asarray(augment.step_key(replica, e, s)).tolist())
        for e in range(3)
        for s in range(4)
    }
    assert len(set(keys.values())) == 12
    assert keys[(1, 2)] == tuple(np.asarray(augment.step_key(replica, 1, 2)).tolist())
    other = tuple(np.asarray(augment.step_key(jax.random.PRNGKey(8), 1, 2)).tolist())
    assert other != keys[(1, 2)]


@pytest.mark.parametrize("shape", [(64,), (8, 8), (4, 4, 3)])
def test_augmentation_needs_images_larger_than_the_padding(shape):
    with pytest.raises(ValueError, match="channels-last images"):
        augment.check_images(shape, "crop_flip", 0)
    augment.check_images(shape, "none", 0)  # nothing to check without augmentation
