"""Small shared helpers: device choice, seeding, provenance."""
from .device import check_device_spec, device_spec, resolve_device
from .provenance import provenance
from .seeding import seed_everything

__all__ = ["check_device_spec", "device_spec", "provenance", "resolve_device", "seed_everything"]
