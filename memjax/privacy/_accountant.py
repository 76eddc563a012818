"""The privacy budget of DP-SGD from Google's ``dp-accounting`` package.

DP-SGD with Poisson sampling at rate q, noise multiplier sigma and T steps is T
self-composed Poisson-subsampled Gaussian mechanisms (add-or-remove-one neighbours).
``dp_epsilon`` returns the epsilon at delta of the Renyi-DP accountant (Mironov 2017;
Mironov, Talwar & Zhang 2019), the standard DP-SGD accounting; ``dp_epsilon_pld`` that of
the privacy-loss-distribution accountant (Koskela et al. 2020; Doroshenko et al. 2022),
tighter. ``study_budget`` is what a DP study records in study.json: every replica has its
own rate q = min(1, b / m) and step count for its subset size m; the study records one
epsilon that bounds them all (``null`` where there is no finite bound, noise multiplier 0:
study.json is strict JSON, which has no Infinity; ``recorded_epsilon`` reads it back).
"""

from __future__ import annotations

import math
from importlib.metadata import version
from typing import Any

import dp_accounting
import numpy as np

from memjax.errors import ConfigError

__all__ = ["dp_epsilon", "dp_epsilon_pld", "study_budget", "recorded_epsilon"]


def _event(noise_multiplier: float, sampling_rate: float, steps: int) -> dp_accounting.DpEvent:
    if not (isinstance(noise_multiplier, (int, float)) and noise_multiplier >= 0):
        raise ConfigError(f"noise_multiplier must be a number >= 0, got {noise_multiplier!r}")
    if not 0 < sampling_rate <= 1:
        raise ConfigError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    if int(steps) != steps or steps < 0:
        raise ConfigError(f"steps must be a non-negative integer, got {steps!r}")
    gaussian = dp_accounting.GaussianDpEvent(float(noise_multiplier))
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(float(sampling_rate), gaussian), int(steps)
    )


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")


def dp_epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float) -> float:
    """Epsilon at ``delta`` of ``steps`` Poisson-sampled Gaussian steps (RDP accountant);
    inf for noise_multiplier 0 (no privacy), 0 for no steps."""
    _check_delta(delta)
    event = _event(noise_multiplier, sampling_rate, steps)
    if noise_multiplier == 0:
        return math.inf if steps else 0.0
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def dp_epsilon_pld(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float
) -> float:
    """As ``dp_epsilon``, from the privacy-loss-distribution accountant (tighter, slower)."""
    _check_delta(delta)
    event = _event(noise_multiplier, sampling_rate, steps)
    if noise_multiplier == 0:
        return math.inf if steps else 0.0
    accountant = dp_accounting.pld.PLDAccountant()
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def study_budget(cfg, subset_sizes: np.ndarray, n: int) -> dict[str, Any]:
    """The budget a DP study records for replicas with the given subset sizes (R,) out of n
    examples, trained with ``cfg`` (a TrainConfig with ``dp``): epsilon (RDP, at
    ``cfg.dp.delta``) for the sampling rate of the smallest subset and the step count of the
    largest. Epsilon grows with both, so it bounds every replica's (exact when all subsets
    have one size, as in the "fixed" design). An unbounded epsilon (noise multiplier 0) is
    recorded as None (JSON null)."""
    from memjax.train import steps_per_epoch

    dp = cfg.dp
    sizes = np.asarray(subset_sizes, np.int64)
    smallest, largest = int(sizes.min()), int(sizes.max())
    rate = 1.0 if cfg.batch_size is None else min(1.0, min(cfg.batch_size, n) / smallest)
    steps = cfg.epochs * int(steps_per_epoch(largest, cfg, n))
    epsilon = dp_epsilon(dp.noise_multiplier, rate, steps, dp.delta)
    budget = {
        "epsilon": epsilon if math.isfinite(epsilon) else None,
        "delta": dp.delta,
        "sampling_rate": rate,
        "steps": steps,
        "noise_multiplier": dp.noise_multiplier,
        "clip_norm": dp.clip_norm,
        "sampling": dp.sampling,
        "accountant": f"rdp (dp-accounting {version('dp-accounting')})",
    }
    if dp.sampling != "poisson":
        budget["note"] = "shuffled batches: the accountant assumes Poisson sampling"
    return budget


def recorded_epsilon(budget: dict[str, Any]) -> float:
    """The epsilon of a recorded budget (``study_budget``): inf where it is null."""
    return math.inf if budget["epsilon"] is None else float(budget["epsilon"])
