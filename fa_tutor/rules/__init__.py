"""Learning rules behind one interface: ``make_rule(name, model).step(x, y)``.

Families: :mod:`.backprop` (bp); layer-wise feedback :mod:`.feedback` (fa, adafa,
kp) and :mod:`.sign_feedback` (usf, frsf, brsf); direct feedback :mod:`.direct`
(dfa, dkp) and :mod:`.fdfa` (fdfa), both on the cut forward pass of
:mod:`.direct_pass`; :mod:`.forward` (fg_w, fg_a); :mod:`.local` (lg_bp, lg_fa,
lg_fg_w, lg_fg_a).  Shared machinery: :mod:`.base` (the Rule interface and
registry), :mod:`.intercept` (routes weight ops to a rule's handlers; each family's
backward lives in its own module), :mod:`.tracking`
(finding each layer's activity), :mod:`.dual` (forward-mode tangents of the
normalizations), :mod:`.noise` (the stochastic rules' Gaussian draws), :mod:`._torch_compat`
(every private torch API used, each with its fallback; none is imported by ``import fa_tutor``).
"""
from .base import BatchShapeError, NonFiniteLossError, Rule, RuleSpec, available_rules, make_rule, register, rule_spec

__all__ = ["BatchShapeError", "NonFiniteLossError", "Rule", "RuleSpec", "available_rules", "make_rule", "register", "rule_spec"]
