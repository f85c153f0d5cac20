"""Coursework: exercise checks (one module per chapter), notebook export and grading."""
from . import checks
# each chapter's checks register themselves on import
from . import (checks_alignment_dominance, checks_conservation_law, checks_fa_family,  # noqa: F401
               checks_fdfa, checks_forward_gradients, checks_implicit_regularization,
               checks_local_losses, checks_weight_transport)
from .registry import CHECKS, CheckFailed, chapter_checks

# the grader reloads these before it runs a notebook's checks
CHECK_MODULES = (checks, checks_alignment_dominance, checks_conservation_law, checks_fa_family,
                 checks_fdfa, checks_forward_gradients, checks_implicit_regularization,
                 checks_local_losses, checks_weight_transport)

__all__ = ["CHECKS", "CheckFailed", "chapter_checks", "checks"]
