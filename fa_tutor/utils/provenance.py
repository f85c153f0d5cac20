"""Where a number came from: commit, versions, device, time."""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[2]


def git_commit() -> str | None:
    """Short hash of the checkout fa_tutor runs from (``+dirty`` if it has uncommitted changes).

    A copy without ``.git`` (a file sync to a GPU machine) reports ``$FA_TUTOR_COMMIT``.
    """
    try:
        sha = subprocess.run(["git", "-C", str(_REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no",
                                "--", "fa_tutor"], capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("FA_TUTOR_COMMIT")


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor, as a CPU line's provenance names it: its model name and logical CPU count.

    Linux: the first ``model name`` in ``/proc/cpuinfo``; elsewhere ``platform.processor()``;
    ``"cpu"`` where neither says anything.
    """
    model = ""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
                break
    except OSError:
        pass
    model = model or platform.processor() or "cpu"
    count = os.cpu_count()
    return f"{model} ({count} logical CPUs)" if count else model


def provenance(device: torch.device | str, *, started: dt.datetime | None = None,
               wall_s: float | None = None) -> dict:
    """The provenance block of a result (CONTRACT.md "Benchmark results")."""
    from .. import __version__

    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    started = started or dt.datetime.now(dt.timezone.utc)
    return {
        "commit": git_commit(),
        "fa_tutor": __version__,
        "torch": torch.__version__.split("+")[0],
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "device": device.type,
        "device_name": name,
        "host": platform.node(),
        "threads": torch.get_num_threads(),
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_s": None if wall_s is None else round(wall_s, 2),
    }
