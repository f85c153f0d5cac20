"""Learning rules behind one interface: ``make_rule(name, model).step(x, y)``.

Families, one module each: :mod:`.backprop` (bp), :mod:`.feedback` (fa, usf,
frsf, brsf, adafa, kp), :mod:`.direct` (dfa, dkp, fdfa), :mod:`.forward` (fg_w,
fg_a), :mod:`.local` (lg_bp, lg_fa, lg_fg_w, lg_fg_a).
"""
from .base import NonFiniteLossError, Rule, RuleSpec, available_rules, make_rule, register, rule_spec

__all__ = ["NonFiniteLossError", "Rule", "RuleSpec", "available_rules", "make_rule", "register", "rule_spec"]
