"""Measurements the theory chapters use: alignment, the conservation law, alignment dominance."""
from .alignment import (angle_degrees, cosine, dale_statistics, sign_agreement,
                        sign_alignment_bound, update_alignment, weight_alignment)
from .conservation import ConservationTracker
from .dominance import (DominanceFit, dominance_bound, exponential_bound,
                        fit_alignment_dominance, power_bound)

__all__ = [
    "ConservationTracker", "DominanceFit", "angle_degrees", "cosine", "dale_statistics",
    "dominance_bound", "exponential_bound", "fit_alignment_dominance", "power_bound",
    "sign_agreement", "sign_alignment_bound", "update_alignment", "weight_alignment",
]
from .ema import (EMAVariance, ema, ema_mean_age, ema_stationary_variance,
                  fdfa_feedback_variance, measure_ema_variance)

__all__ += ["EMAVariance", "ema", "ema_mean_age", "ema_stationary_variance",
            "fdfa_feedback_variance", "measure_ema_variance"]
from .estimator import (check_variance_theory, estimator_stats, gradient_moments,
                        variance_prediction, variance_theory)

__all__ += ["check_variance_theory", "estimator_stats", "gradient_moments", "variance_prediction",
            "variance_theory"]
