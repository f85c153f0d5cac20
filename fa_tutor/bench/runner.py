"""Run an experiment's cells, skip finished ones, append results with provenance."""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..training import train
from ..utils import provenance, resolve_device
from .registry import Cell, Experiment, get_experiment

log = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[2] / "results"


def results_path(experiment: str, out: str | Path | None = None) -> Path:
    return Path(out or RESULTS_DIR) / f"{experiment}.jsonl"


def read_results(experiment: str, out: str | Path | None = None) -> list[dict]:
    """All result lines of ``experiment`` (an empty list when it never ran)."""
    path = results_path(experiment, out)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def finished_keys(rows: list[dict]) -> set[str]:
    return {r["cell"] for r in rows if "cell" in r}


def train_cell(cell: Cell, device: str, checkpoint: Path | None) -> dict:
    """Default runner: ``fa_tutor.train`` on the cell's config; metrics from the final row."""
    assert cell.config is not None
    result = train(cell.config.replace(device=device), checkpoint=checkpoint, progress=False)
    metrics = {k: float(v) for k, v in result.final.items() if isinstance(v, (int, float))}
    if "test_accuracy" in metrics:
        metrics["test_error"] = 100.0 - metrics["test_accuracy"]
    metrics["history"] = result.history.round(5).to_dict(orient="list")
    return metrics


def run_experiment(name: str, *, quick: bool = False, device: str = "auto", out: str | Path | None = None,
                   checkpoints: str | Path | None = None, progress: bool = True,
                   limit: int | None = None) -> list[dict]:
    """Run every unfinished cell of experiment ``name``; return the new result lines."""
    exp: Experiment = get_experiment(name)
    dev = str(resolve_device(device))
    path = results_path(name, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = finished_keys(read_results(name, out))
    cells = [c for c in exp.cells(quick) if c.key not in done]
    if limit is not None:
        cells = cells[:limit]
    ckpt_dir = Path(checkpoints) if checkpoints else path.parent / ".checkpoints" / name
    new: list[dict] = []
    for cell in tqdm(cells, desc=name, disable=not progress):
        started = dt.datetime.now(dt.timezone.utc)
        t0 = time.perf_counter()
        if cell.runner == "train":
            outcome: Any = train_cell(cell, dev, ckpt_dir / f"{cell.key}.pt")
        else:
            outcome = exp.runners[cell.runner](cell, dev, None)
        wall = time.perf_counter() - t0
        pairs = outcome if isinstance(outcome, list) else [(cell.rule, outcome)]
        lines = [_line(cell, rule, metrics, dev, started, wall) for rule, metrics in pairs]
        with path.open("a") as fh:  # append, never overwrite
            for line in lines:
                fh.write(json.dumps(line) + "\n")
        new += lines
        ckpt = ckpt_dir / f"{cell.key}.pt"
        if ckpt.exists():
            ckpt.unlink()
        log.info("%s: finished %s in %.1f s", name, cell.label(), wall)
    return new


def _line(cell: Cell, rule: str, metrics: dict, device: str, started: dt.datetime, wall: float) -> dict:
    config = cell.config.to_dict() if cell.config is not None else dict(cell.options)
    return {
        "experiment": cell.experiment, "rule": rule, "model": cell.model, "dataset": cell.dataset,
        "seed": cell.seed, "scale": cell.scale, "setting": cell.setting, "cell": cell.key,
        "config": config, "metrics": metrics,
        "provenance": provenance(torch.device(device), started=started, wall_s=wall),
    }
