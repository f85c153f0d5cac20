"""Learning rules behind one interface: ``make_rule(name, model).step(x, y)``.

Families: :mod:`.backprop` (bp); layer-wise feedback :mod:`.feedback` (fa, adafa,
kp) and :mod:`.sign_feedback` (usf, frsf, brsf); direct feedback :mod:`.direct`
(dfa, dkp) and :mod:`.fdfa` (fdfa), both on the cut forward pass of
:mod:`.direct_pass`; :mod:`.forward` (fg_w, fg_a); :mod:`.local` (lg_bp, lg_fa,
lg_fg_w, lg_fg_a).  Shared machinery: :mod:`.base` (the Rule interface and
registry), :mod:`.intercept` (weight ops with a rule's backward), :mod:`.tracking`
(finding each layer's activity), :mod:`.dual` (forward-mode tangents of the
normalizations), :mod:`.noise` (the stochastic rules' Gaussian draws).
"""
import warnings

# Forward-mode AD imports torch._decomp.decompositions_for_jvp on first use, which emits a
# torch.jit deprecation FutureWarning (torch 2.14); import it once here, quietly.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*")  # Future- or DeprecationWarning
    import torch._decomp.decompositions_for_jvp  # noqa: F401

from .base import BatchShapeError, NonFiniteLossError, Rule, RuleSpec, available_rules, make_rule, register, rule_spec

__all__ = ["BatchShapeError", "NonFiniteLossError", "Rule", "RuleSpec", "available_rules", "make_rule", "register", "rule_spec"]
