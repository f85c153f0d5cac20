"""fa_tutor: learning without weight transport — rules, models, metrics and the book's experiments."""
from . import models
from .rules import NonFiniteLossError, Rule, available_rules, make_rule, rule_spec

__version__ = "0.1.0"
__all__ = ["NonFiniteLossError", "Rule", "__version__", "available_rules", "make_rule", "models", "rule_spec"]
