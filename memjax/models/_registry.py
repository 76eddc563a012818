"""The registry of model specs: each spec class registers its config ``type`` name where it
is defined (``@SPECS.register("MLP")``); ``spec_from_dict`` reads configs through it."""

from __future__ import annotations

from memjax._registry import Registry

SPECS: Registry[type] = Registry("model")
