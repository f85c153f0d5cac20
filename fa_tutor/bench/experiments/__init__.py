"""One module per experiment; importing them registers each in EXPERIMENTS."""
from . import step_cost  # noqa: F401
