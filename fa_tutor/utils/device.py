"""Pick the device: an explicit argument, else ``$FA_TUTOR_DEVICE``, else CUDA when available."""
from __future__ import annotations

import os

import torch

CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"``/``None`` → ``$FA_TUTOR_DEVICE`` if set, else ``cuda`` when available, else ``cpu``."""
    if isinstance(device, torch.device):
        return device
    spec = device_spec(device)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available on this machine; use 'cpu'")
    return torch.device(spec)


def device_spec(device: str | torch.device | None = None) -> str:
    """The device asked for, checked: ``device``, or for ``"auto"``/``None`` what
    ``$FA_TUTOR_DEVICE`` says (still possibly ``"auto"``); nothing is resolved yet."""
    if device in (None, "auto"):
        return check_device_spec(os.environ.get("FA_TUTOR_DEVICE", "auto"))
    return check_device_spec(device)


def check_device_spec(spec: str | torch.device | None) -> str:
    """``spec`` as a string if it names a device (auto, cpu, cuda, cpu:N, cuda:N, or a
    ``torch.device``), else a ValueError naming the choices; whether this machine has
    that device is not checked."""
    spec = "auto" if spec is None else str(spec) if isinstance(spec, torch.device) else spec
    kind, colon, index = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if kind not in CHOICES or (colon and (kind == "auto" or not index.isdigit())):
        raise ValueError(f"Unknown device {spec!r}; choose one of: {', '.join(CHOICES)} (or cuda:N)")
    return spec
