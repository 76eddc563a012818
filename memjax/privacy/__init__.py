"""Membership inference (LiRA, loss attacks), the DP audit and the privacy accountant."""

from memjax.privacy._accountant import (
    dp_epsilon,
    dp_epsilon_pld,
    recorded_epsilon,
    study_budget,
)
from memjax.privacy._audit import (
    ALPHA,
    THRESHOLDS,
    AuditResult,
    audit_epsilon,
    gaussian_dp_epsilon,
)
from memjax.privacy._lira import (
    COLUMNS_PER_PASS,
    CONVENTIONS,
    FPR_GRID,
    FPRS,
    STD_FLOOR,
    AttackResult,
    lira_eval,
    loss_attack_eval,
    resolvable,
    roc_curve,
    tpr_at,
)

__all__ = [
    "ALPHA",
    "AttackResult",
    "AuditResult",
    "COLUMNS_PER_PASS",
    "CONVENTIONS",
    "FPRS",
    "FPR_GRID",
    "STD_FLOOR",
    "THRESHOLDS",
    "audit_epsilon",
    "dp_epsilon",
    "dp_epsilon_pld",
    "gaussian_dp_epsilon",
    "lira_eval",
    "loss_attack_eval",
    "recorded_epsilon",
    "resolvable",
    "roc_curve",
    "study_budget",
    "tpr_at",
]
