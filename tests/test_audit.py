"""memjax.privacy (audit): the empirical epsilon lower bound against mechanisms of known epsilon.

Scores of members ~ N(mu, 1) and of non-members ~ N(0, 1) are exactly what the best
membership test sees of a mu-Gaussian-DP mechanism, whose epsilon at delta has a closed
form (memjax.privacy (audit).gaussian_dp_epsilon, itself checked against dp-accounting's PLD
accountant): the bound must stay below it on every seed, grow with mu, and be informative.
"""

from __future__ import annotations

import numpy as np
import pytest

import memjax as mj
from memjax.privacy import audit_epsilon, gaussian_dp_epsilon

DELTA = 1e-5


def _gaussian_trials(mu: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(mu, 1, n), rng.normal(0, 1, n)])
    return np.arange(2 * n) < n, scores


def test_gaussian_dp_epsilon_is_dp_accountings():
    # T unsampled Gaussian steps of noise multiplier sigma are sqrt(T)/sigma-GDP
    for sigma, steps in ((2.0, 4), (4.0, 16)):
        exact = gaussian_dp_epsilon(steps**0.5 / sigma, DELTA)
        assert mj.privacy.dp_epsilon_pld(sigma, 1.0, steps, DELTA) == pytest.approx(exact, rel=2e-2)


def test_audit_bound_stays_below_epsilon_and_grows_with_the_signal():
    mus = (0.0, 0.5, 1.0, 2.0)
    bounds = np.array(
        [
            [audit_epsilon(*_gaussian_trials(mu, 5000, s), DELTA).epsilon_lb for s in range(5)]
            for mu in mus
        ]
    )
    exact = np.array([gaussian_dp_epsilon(mu, DELTA) if mu else 0.0 for mu in mus])
    assert (bounds <= exact[:, None]).all()
    assert (bounds[0] == 0).all()  # no signal: nothing to find
    means = bounds.mean(axis=1)
    assert (np.diff(means) > 0).all()
    assert (bounds[-1] > 0.3 * exact[-1]).all()  # informative, not trivially 0


def test_audit_reads_members_below_the_threshold_too():
    members, scores = _gaussian_trials(2.0, 3000, 0)
    up = audit_epsilon(members, scores, DELTA)
    down = audit_epsilon(members, -scores, DELTA)
    assert down.epsilon_lb == pytest.approx(up.epsilon_lb, abs=0.05)
    assert (up.side, down.side) == ("members above", "members below")
    assert up.n_members == up.n_nonmembers == 3000


def test_audit_refuses_bad_input():
    with pytest.raises(ValueError, match="shape"):
        audit_epsilon(np.ones(3, bool), np.ones(4), DELTA)
    with pytest.raises(ValueError, match="members and non-members"):
        audit_epsilon(np.ones(3, bool), np.ones(3), DELTA)
    with pytest.raises(ValueError, match="delta"):
        audit_epsilon(np.array([True, False]), np.ones(2), 0.0)
