"""Analyses of a study's outputs: cheap proxies, their relations to memorization, TracIn."""

from memjax.analysis import proxies, relations, tracin

__all__ = [
    "proxies",
    "relations",
    "tracin",
]
