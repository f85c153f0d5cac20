"""Run an experiment's cells — serially, on a local process pool, or on a Ray cluster —
skip finished ones, and append each result line with provenance as it arrives.

Only the calling process writes ``results/<experiment>.jsonl``; workers return
lines.  A cell that raises (or whose worker dies) is retried up to ``retries``
times; the other cells go on, and the failures are reported with tracebacks.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data import DATASETS, DatasetNotAvailable
from ..rules import NonFiniteLossError
from ..training import train
from ..utils import device_spec, provenance, resolve_device
from .registry import Cell, get_experiment

log = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[2] / "results"


@dataclass
class CellFailure:
    cell: str  # the cell's label
    key: str
    attempts: int
    traceback: str


class SweepError(RuntimeError):
    """Some cells failed after every retry; ``failures`` has their tracebacks."""

    def __init__(self, failures: list[CellFailure], new_lines: list[dict]):
        self.failures, self.new_lines = failures, new_lines
        detail = "\n".join(f"- {f.cell} ({f.attempts} attempts):\n{f.traceback}" for f in failures)
        super().__init__(f"{len(failures)} cell(s) failed; finished cells were saved.\n{detail}")


def scratch_dir() -> Path:
    """Where ``--quick`` runs write without ``--out``: ``$FA_TUTOR_SCRATCH``, else
    ``<tmp>/fa_tutor-quick`` (smoke tests never touch the committed ``results/``)."""
    default = Path(tempfile.gettempdir()) / "fa_tutor-quick"
    return Path(os.environ.get("FA_TUTOR_SCRATCH") or default)


def output_dir(quick: bool, out: str | Path | None = None) -> Path:
    """The results folder of a run: ``out``, else the scratch folder (quick) or ``results/``."""
    if out is not None:
        return Path(out)
    return scratch_dir() if quick else RESULTS_DIR


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


def cell_fields(cell: Cell) -> dict[str, str]:
    """What ``--only`` can select a cell by: its identity fields and settings, as text."""
    fields = {"rule": cell.rule, "model": cell.model, "dataset": cell.dataset,
              "seed": str(cell.seed), "scale": cell.scale}
    return {**fields, **{k: str(v) for k, v in cell.setting.items()}}


def parse_only(specs: list[str] | None) -> dict[str, set[str]]:
    """``["dataset=mnist5k", "mixer=S/1/1,M/1/16"]`` -> ``{"dataset": {"mnist5k"}, "mixer":
    {"S/1/1", "M/1/16"}}``: one ``KEY=VALUE[,VALUE...]`` per spec; specs are ANDed,
    a spec's values ORed."""
    only: dict[str, set[str]] = {}
    for spec in specs or []:
        key, sep, values = spec.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ValueError(f"--only {spec!r}: expected KEY=VALUE[,VALUE...], e.g. --only dataset=mnist5k")
        only.setdefault(key.strip(), set()).update(v.strip() for v in values.split(",") if v.strip())
    return only


def select_cells(name: str, cells: list[Cell], only: dict[str, set[str]] | None,
                 *, quick: bool = False) -> list[Cell]:
    """The ``cells`` that match every ``only`` field. A key or value that no cell of
    experiment ``name`` has is a ValueError naming the valid ones (a typo never selects
    nothing silently)."""
    if not only:
        return cells
    values: dict[str, set[str]] = {}
    for cell in get_experiment(name).cells(quick):
        for key, value in cell_fields(cell).items():
            values.setdefault(key, set()).add(value)
    for key, wanted in only.items():
        if key not in values:
            raise ValueError(f"--only {key}=...: {name}'s cells have no field {key!r}; "
                             f"choose from {', '.join(sorted(values))}")
        unknown = sorted(wanted - values[key])
        if unknown:
            raise ValueError(f"--only {key}={','.join(unknown)}: no {name} cell has that {key}; "
                             f"its values: {', '.join(sorted(values[key]))}")
    return [c for c in cells if all(cell_fields(c)[k] in v for k, v in only.items())]


def pending_cells(name: str, *, quick: bool = False, out: str | Path | None = None,
                  only: dict[str, set[str]] | None = None) -> list[Cell]:
    """The cells of ``name`` that have no result line yet (a rerun runs exactly these),
    restricted to those matching ``only`` (see :func:`select_cells`)."""
    done = finished_keys(read_results(name, out))
    cells = [c for c in get_experiment(name).cells(quick) if c.key not in done]
    return select_cells(name, cells, only, quick=quick)


def _missing_dataset(cell: Cell) -> str | None:
    """The data set ``cell`` loads when it is not on this machine, else None."""
    opts = cell.config.to_dict() if cell.config is not None else cell.options
    name = opts.get("dataset", cell.dataset)
    info = DATASETS.get(name)
    root = (opts.get("data_options") or {}).get("root")
    return name if info is not None and not info.is_present(root) else None


def missing_data(cells: list[Cell]) -> list[str]:
    """The data sets the cells load that are not on this machine (sorted)."""
    return sorted({m for m in map(_missing_dataset, cells) if m})


def fetch_hint(missing: list[str]) -> str:
    """The ``data fetch`` commands that get ``missing``."""
    return " and ".join(f"`python -m fa_tutor data fetch {m}`" for m in missing)


def cells_with_data(name: str, cells: list[Cell]) -> list[Cell]:
    """The cells whose data sets are here, checked once up front. None of them: one
    :class:`DatasetNotAvailable` naming the ``data fetch`` commands (instead of every cell
    failing alike); some: a warning, and the others run."""
    missing = missing_data(cells)
    if not missing:
        return cells
    one = len(missing) == 1
    message = (f"{name} needs {', '.join(missing)}, which {'is' if one else 'are'} not on this "
               f"machine; download {'it' if one else 'them'} first with {fetch_hint(missing)} "
               "(cache: $FA_TUTOR_DATA, default ~/.cache/fa_tutor)")
    runnable = [c for c in cells if _missing_dataset(c) is None]
    if not runnable:
        raise DatasetNotAvailable(message)
    log.warning("%s; running the %d cell(s) whose data is here", message, len(runnable))
    return runnable


def summarize(history: pd.DataFrame, final: dict, every: int = 1) -> dict:
    """Metrics of a result line: the final (or best-val) row, ``test_error``, the history.

    ``every`` thins the stored history to every ``every``-th row (plus the last)
    so a 6,000-epoch run stays a few kB; the metrics are computed before thinning.
    """
    metrics = {k: float(v) for k, v in final.items()
               if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}
    if "test_accuracy" in metrics:
        metrics["test_error"] = 100.0 - metrics["test_accuracy"]
    if every > 1 and len(history) > 1:
        keep = [i for i in range(len(history)) if i % every == every - 1 or i == len(history) - 1]
        history = history.iloc[keep]
    metrics["history"] = history.round(5).astype(object).where(history.notna(), None) \
        .to_dict(orient="list")
    return metrics


def train_cell(cell: Cell, device: str, checkpoint: Path | None) -> dict:
    """Default runner: ``fa_tutor.train`` on the cell's config; metrics from the final row.

    A run whose loss becomes NaN/inf is a result, not a failure (it diverges
    again on a rerun): its line has ``diverged_epoch`` and the metrics of the
    best-validation (else the last) evaluation before the divergence.
    """
    assert cell.config is not None
    try:
        result = train(cell.config.replace(device=device), checkpoint=checkpoint, progress=False)
    except NonFiniteLossError as err:
        log.warning("%s: %s", cell.label(), str(err).splitlines()[0])
        return diverged_metrics(err)
    return summarize(result.history, result.final)


def diverged_metrics(err: NonFiniteLossError) -> dict:
    """The metrics of a run whose loss became NaN/inf: ``diverged_epoch``, the metrics of
    the best-validation (else the last) evaluation before it, and the history so far."""
    history = getattr(err, "history", None)
    history = pd.DataFrame() if history is None else history
    best = getattr(err, "best", None)
    final = best if best is not None else (history.iloc[-1].to_dict() if len(history) else {})
    metrics = summarize(history, final)
    metrics["diverged_epoch"] = float(getattr(err, "epoch", math.nan))
    return metrics


def set_aside_stale_checkpoint(checkpoint: Path, cell: Cell, device: str) -> Path | None:
    """Move ``checkpoint`` to ``<key>.stale.pt`` when it was written under another declaration
    of the cell (the experiment's config changed since: a cell's key names its place in the
    grid, not its settings); return the new path, or None when it stays.

    Resuming it would be refused on every retry; set aside (never deleted) with a warning
    naming the differing fields, the cell starts anew. Cells whose runner keeps no
    :class:`~fa_tutor.training.RunConfig` (e.g. step-cost's timing) are left alone, and an
    unreadable checkpoint is left to the run to report.
    """
    from ..training import RunConfig
    from ..training.checkpoint import config_mismatch
    from .experiments._common import cell_config

    if not checkpoint.exists():
        return None
    cfg = cell.config
    if cfg is None:  # a config cell keeps its whole RunConfig flat in its options
        if not RunConfig.__dataclass_fields__.keys() <= cell.options.keys():
            return None
        try:
            cfg = cell_config(cell)
        except (TypeError, ValueError):
            return None
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["config"]
    except Exception:  # noqa: BLE001 - unreadable or partial: the run itself reports it
        return None
    problem = config_mismatch(checkpoint, saved, cfg.replace(device=device))
    if problem is None:
        return None
    stale = checkpoint.with_name(f"{checkpoint.stem}.stale.pt")
    os.replace(checkpoint, stale)
    log.warning("%s: the cell's declaration changed since; moved it to %s and the cell "
                "starts anew", problem, stale.name)
    return stale


def execute_cell(experiment: str, quick: bool, key: str, device: str, checkpoint_dir: str,
                 threads: int | None = None) -> list[dict]:
    """Run one cell (looked up by key) and return its result line(s). Runs in any process."""
    if threads:
        torch.set_num_threads(threads)
    exp = get_experiment(experiment)
    cell = next(c for c in exp.cells(quick) if c.key == key)
    dev = str(resolve_device(device))
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    checkpoint = Path(checkpoint_dir) / f"{cell.key}.pt"
    set_aside_stale_checkpoint(checkpoint, cell, dev)
    if cell.runner == "train":
        outcome: Any = train_cell(cell, dev, checkpoint)
    else:
        outcome = exp.runners[cell.runner](cell, dev, checkpoint)
    wall = time.perf_counter() - t0
    pairs = outcome if isinstance(outcome, list) else [(cell.rule, outcome)]
    if checkpoint.exists():
        checkpoint.unlink()
    return [_line(cell, rule, metrics, dev, started, wall) for rule, metrics in pairs]


def run_experiment(name: str, *, quick: bool = False, device: str = "auto", out: str | Path | None = None,
                   checkpoints: str | Path | None = None, progress: bool = True, limit: int | None = None,
                   workers: int = 1, ray_address: str | None = None, retries: int = 2,
                   threads: int | None = None, only: dict[str, set[str]] | None = None) -> list[dict]:
    """Run every unfinished cell of experiment ``name`` (those matching ``only``, when
    given: see :func:`select_cells`); return the new result lines.

    ``workers > 1`` runs cells in that many local processes (each pinned to one
    GPU, round robin, when ``device`` is CUDA and several are visible);
    ``ray_address`` (an address or ``"auto"``; ``"local"`` starts a local Ray)
    sends them to a Ray cluster, each cell asking for one CPU (and one GPU for
    CUDA runs, and for ``auto`` when the cluster has GPUs).  ``threads`` fixes
    torch's CPU threads per cell, which makes results bit-identical across the
    three modes.

    ``out`` defaults to ``results/``, and for ``quick`` runs to :func:`scratch_dir`.
    Missing data sets are checked here, once, before any cell runs: cells without
    their data are left for a later run (an error when that is every cell); not for
    Ray, whose nodes have their own data.
    """
    device_spec(device)  # a bad --device (or $FA_TUTOR_DEVICE) fails here, once, not per cell
    if not ray_address:  # a Ray cluster may have the GPU this machine lacks
        resolve_device(device)
    out = output_dir(quick, out)
    path = results_path(name, out)
    cells = pending_cells(name, quick=quick, out=out, only=only)
    if limit is not None:
        cells = cells[:limit]
    if not ray_address:
        cells = cells_with_data(name, cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_dir = str(Path(checkpoints) if checkpoints else path.parent / ".checkpoints" / name)
    if ray_address:
        backend = _ray_backend(ray_address, device)
    elif workers > 1:
        backend = _pool_backend(workers, device)
    else:
        backend = _serial_backend(device)
    labels = {c.key: c.label() for c in cells}
    new: list[dict] = []
    failures: list[CellFailure] = []
    with tqdm(total=len(cells), desc=name, disable=not progress or not cells) as bar:
        jobs = [(name, quick, c.key, ckpt_dir, threads) for c in cells]
        for key, lines, error, attempts in backend(jobs, retries):
            if error is not None:
                failures.append(CellFailure(labels[key], key, attempts, error))
                log.error("%s: cell %s failed after %d attempt(s)", name, labels[key], attempts)
            else:
                with path.open("a") as fh:  # append, never overwrite; only this process writes
                    for line in lines:
                        fh.write(json.dumps(line) + "\n")
                new += lines
            bar.update(1)
    if failures:
        raise SweepError(failures, new)
    return new


# -- backends: each yields (key, lines, error traceback or None, attempts) as cells finish ----------
Job = tuple[str, bool, str, str, "int | None"]
Backend = Callable[[list[Job], int], Iterator[tuple[str, list[dict], "str | None", int]]]


def _serial_backend(device: str) -> Backend:
    def run(jobs: list[Job], retries: int):
        for name, quick, key, ckpt, threads in jobs:
            for attempt in range(1, retries + 2):
                try:
                    yield key, execute_cell(name, quick, key, device, ckpt, threads), None, attempt
                    break
                except Exception as err:  # noqa: BLE001 - reported with its traceback, then retried
                    if attempt == retries + 1 or isinstance(err, DatasetNotAvailable):
                        yield key, [], traceback.format_exc(), attempt
                        break
    return run


def exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """Pool-worker initializer: end this worker once its parent process is gone.

    A killed ``bench run`` would otherwise leave its workers training their
    current cell to the end for nobody (only the parent writes results). The
    cell's checkpoint stays, so the next ``bench run`` resumes it.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _pool_backend(workers: int, device: str) -> Backend:
    import concurrent.futures as cf
    import multiprocessing as mp

    def devices(n: int) -> list[str]:
        if str(resolve_device(device)).startswith("cuda") and torch.cuda.device_count() > 1:
            return [f"cuda:{i % torch.cuda.device_count()}" for i in range(n)]
        return [device] * n

    def run(jobs: list[Job], retries: int):
        ctx = mp.get_context("spawn")  # fresh interpreters: safe with CUDA and threads
        attempts = {j[2]: 0 for j in jobs}
        pending = list(jobs)
        while pending:
            pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                          initializer=exit_with_parent, initargs=(os.getpid(),))
            futures = {}
            for job, dev in zip(pending, devices(len(pending))):
                name, quick, key, ckpt, threads = job
                attempts[key] += 1
                futures[pool.submit(execute_cell, name, quick, key, dev, ckpt, threads)] = job
            pending = []
            for fut in cf.as_completed(futures):
                job = futures[fut]
                try:
                    yield job[2], fut.result(), None, attempts[job[2]]
                except Exception as err:  # noqa: BLE001 - a raising cell or a dead worker
                    if attempts[job[2]] > retries or isinstance(err, DatasetNotAvailable):
                        yield job[2], [], traceback.format_exc(), attempts[job[2]]
                    else:
                        pending.append(job)
            pool.shutdown(wait=True, cancel_futures=True)
    return run


def ray_gpus_per_cell(device: str, cluster: dict) -> int:
    """1 for CUDA runs, and for ``auto`` when the cluster has a GPU (Ray shows a task only
    the GPUs it asked for, so ``auto`` must ask to resolve to CUDA there); else 0."""
    spec = device_spec(device)
    if spec == "auto":
        return 1 if cluster.get("GPU", 0) >= 1 else 0
    return 1 if spec.startswith("cuda") else 0


def _ray_backend(address: str, device: str) -> Backend:
    try:
        import ray
    except ImportError as err:
        raise ValueError("--ray needs the optional dependency ray: pip install 'fa_tutor[cluster]'") from err

    def run(jobs: list[Job], retries: int):
        if not ray.is_initialized():
            ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                     log_to_driver=False)
        gpus = ray_gpus_per_cell(device, ray.cluster_resources())
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=retries,
                            retry_exceptions=True)(execute_cell)
        refs = {remote.remote(name, quick, key, device, ckpt, threads): key
                for name, quick, key, ckpt, threads in jobs}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            key = refs.pop(ready[0])
            try:
                yield key, ray.get(ready[0]), None, 1
            except Exception:  # noqa: BLE001 - Ray already retried dead workers max_retries times
                yield key, [], traceback.format_exc(), retries + 1
    return run


def _line(cell: Cell, rule: str, metrics: dict, device: str, started: dt.datetime, wall: float) -> dict:
    config = cell.config.to_dict() if cell.config is not None else dict(cell.options)
    if cell.config is not None and cell.options.get("note"):  # what a substituted cell changed
        config["note"] = cell.options["note"]
    return {
        "experiment": cell.experiment, "rule": rule, "model": cell.model, "dataset": cell.dataset,
        "seed": cell.seed, "scale": cell.scale, "setting": cell.setting, "cell": cell.key,
        "config": config, "metrics": metrics,
        "provenance": provenance(torch.device(device), started=started, wall_s=wall),
    }
