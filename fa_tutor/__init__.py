"""fa_tutor: learning without weight transport — rules, models, metrics and the book's experiments."""
__version__ = "0.1.0"

from . import data, models, viz  # noqa: E402
from .coursework import checks  # noqa: E402
from .rules import NonFiniteLossError, Rule, available_rules, make_rule, rule_spec  # noqa: E402
from .training import RunConfig, TrainResult, train  # noqa: E402
from .utils import resolve_device, seed_everything  # noqa: E402

__all__ = ["NonFiniteLossError", "Rule", "RunConfig", "TrainResult", "__version__", "available_rules",
           "checks", "data", "make_rule", "models", "resolve_device", "rule_spec", "seed_everything", "train", "viz"]
