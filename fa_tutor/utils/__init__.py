"""Small shared helpers: device choice, seeding, provenance."""
from .device import resolve_device
from .provenance import provenance
from .seeding import seed_everything

__all__ = ["provenance", "resolve_device", "seed_everything"]
