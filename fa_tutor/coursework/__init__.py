"""Coursework: exercise checks, student-notebook export, and grading runs."""
from . import checks
from .registry import CHECKS

__all__ = ["CHECKS", "checks"]
from . import checks_weight_transport  # noqa: E402,F401  (registers the chapter checks)
from . import checks_fa_family  # noqa: E402,F401  (registers the chapter checks)
from . import checks_implicit_regularization  # noqa: E402,F401  (registers the chapter checks)
from . import checks_conservation_law  # noqa: E402,F401  (registers the chapter checks)
from . import checks_alignment_dominance  # noqa: E402,F401  (registers the chapter checks)
from . import checks_forward_gradients  # noqa: E402,F401  (registers the chapter checks)
from . import checks_fdfa  # noqa: E402,F401  (registers the chapter checks)
from . import checks_local_losses  # noqa: E402,F401  (registers the chapter checks)
