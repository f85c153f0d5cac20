"""fa_tutor: learning without weight transport — rules, models, metrics and the book's experiments.

Submodules and names load on first use (PEP 562), so ``python -m fa_tutor --help``
answers without importing torch; ``import fa_tutor as ft; ft.make_rule(...)`` works as usual.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_NAMES = {
    "NonFiniteLossError": "rules", "Rule": "rules", "available_rules": "rules",
    "make_rule": "rules", "rule_spec": "rules",
    "RunConfig": "training", "TrainResult": "training", "train": "training",
    "resolve_device": "utils", "seed_everything": "utils",
}
_SUBMODULES = {"bench": "bench", "coursework": "coursework", "data": "data", "metrics": "metrics",
               "models": "models", "rules": "rules", "training": "training", "utils": "utils",
               "viz": "viz", "checks": "coursework.checks"}

__all__ = ["NonFiniteLossError", "Rule", "RunConfig", "TrainResult", "__version__", "available_rules",
           "checks", "data", "make_rule", "models", "resolve_device", "rule_spec", "seed_everything", "train", "viz"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f".{_SUBMODULES[name]}", __name__)
    elif name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'fa_tutor' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *_NAMES, *_SUBMODULES})
