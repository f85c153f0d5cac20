"""Sweeps outgrow one process: the same quick cells serially, on a local pool, and on a local
Ray cluster give identical numbers; a killed sweep resumes; a failing cell is retried and
reported without losing the others."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fa_tutor.bench import read_results, run_experiment
from fa_tutor.bench.runner import SweepError, pending_cells

EXPERIMENT = "conservation-noisy-mnist"
N = 3  # the first three quick cells


def _all_quick_keys() -> list[str]:
    from fa_tutor.bench import get_experiment

    return [c.key for c in get_experiment(EXPERIMENT).cells(True)]


def _metrics(out: Path) -> dict[str, dict]:
    return {r["cell"]: r["metrics"] for r in read_results(EXPERIMENT, out)}


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("serial")
    run_experiment(EXPERIMENT, quick=True, device="cpu", out=out, limit=N, progress=False, threads=1)
    metrics = _metrics(out)
    assert len(metrics) == N
    return metrics


def test_local_pool_gives_identical_results(serial: dict, tmp_path: Path) -> None:
    lines = run_experiment(EXPERIMENT, quick=True, device="cpu", out=tmp_path, limit=N, progress=False,
                           workers=2, threads=1)
    assert len(lines) == N
    assert _metrics(tmp_path) == serial
    assert all(line["provenance"]["host"] and line["provenance"]["device"] == "cpu" for line in lines)


def test_ray_gives_identical_results(serial: dict, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'fa_tutor[cluster]')")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        run_experiment(EXPERIMENT, quick=True, device="cpu", out=tmp_path, limit=N, progress=False,
                       ray_address="auto", threads=1)
    finally:
        ray.shutdown()
    assert _metrics(tmp_path) == serial


def test_killed_sweep_resumes_without_rerunning(serial: dict, tmp_path: Path) -> None:
    first = run_experiment(EXPERIMENT, quick=True, device="cpu", out=tmp_path, limit=1, progress=False,
                           threads=1)  # the sweep "dies" after one cell
    rest = run_experiment(EXPERIMENT, quick=True, device="cpu", out=tmp_path, limit=N - 1, progress=False,
                          workers=2, threads=1)
    keys = [r["cell"] for r in read_results(EXPERIMENT, tmp_path)]
    assert len(first) == 1 and len(rest) == N - 1 and len(set(keys)) == len(keys) == N
    assert _metrics(tmp_path) == serial
    # a rerun would only run the cells not finished yet
    pending = [c.key for c in pending_cells(EXPERIMENT, quick=True, out=tmp_path)]
    assert len(pending) == len(_all_quick_keys()) - N and not set(pending) & set(keys)


def test_failing_cell_is_retried_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fa_tutor.bench.runner as runner

    calls: list[str] = []
    original = runner.execute_cell

    def flaky(name, quick, key, device, ckpt, threads=None):
        calls.append(key)
        if len(calls) == 1:
            raise RuntimeError("worker died")  # first attempt of the first cell
        return original(name, quick, key, device, ckpt, threads)

    monkeypatch.setattr(runner, "execute_cell", flaky)
    lines = run_experiment(EXPERIMENT, quick=True, device="cpu", out=tmp_path, limit=2, progress=False,
                           retries=1)
    assert len(lines) == 2 and len(calls) == 3  # one retry, then success

    def broken(name, quick, key, device, ckpt, threads=None):
        raise ValueError(f"cell {key} is broken")

    monkeypatch.setattr(runner, "execute_cell", broken)
    with pytest.raises(SweepError, match="is broken") as info:
        run_experiment(EXPERIMENT, quick=True, device="cpu", out=tmp_path, limit=1, progress=False, retries=2)
    assert info.value.failures[0].attempts == 3
    assert len(read_results(EXPERIMENT, tmp_path)) == 2  # nothing finished was lost or duplicated
    assert all(json.loads(ln) for ln in (tmp_path / f"{EXPERIMENT}.jsonl").read_text().splitlines())


_ORPHAN_SCRIPT = """
import concurrent.futures as cf, multiprocessing as mp, os, sys, time
from fa_tutor.bench.runner import exit_with_parent

if __name__ == "__main__":
    pool = cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"),
                                  initializer=exit_with_parent, initargs=(os.getpid(), 0.1))
    print(pool.submit(os.getpid).result(), flush=True)  # the worker's pid
    pool.submit(time.sleep, 600)  # a long cell
    time.sleep(600)
"""


def test_pool_worker_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL the sweep's parent: its worker stops instead of training for nobody."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    os.kill(worker, 0)  # alive while the parent is
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the pool worker outlived its killed parent by 10 s")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:", "auto:0", ""])
def test_bad_device_fails_once_before_any_cell(device: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown device .*choose one of: auto, cpu, cuda"):
        run_experiment("fdfa", quick=True, device=device, out=tmp_path, progress=False)
    assert not list(tmp_path.glob("*.jsonl"))  # nothing ran, nothing written


def test_ray_asks_a_gpu_per_cell_for_cuda_and_for_auto_on_a_gpu_cluster(monkeypatch) -> None:
    from fa_tutor.bench.runner import ray_gpus_per_cell

    monkeypatch.delenv("FA_TUTOR_DEVICE", raising=False)
    assert ray_gpus_per_cell("cuda", {"CPU": 8.0}) == 1
    assert ray_gpus_per_cell("cpu", {"CPU": 8.0, "GPU": 2.0}) == 0
    assert ray_gpus_per_cell("auto", {"CPU": 8.0, "GPU": 2.0}) == 1
    assert ray_gpus_per_cell("auto", {"CPU": 8.0}) == 0
    monkeypatch.setenv("FA_TUTOR_DEVICE", "cpu")
    assert ray_gpus_per_cell("auto", {"CPU": 8.0, "GPU": 2.0}) == 0


def test_device_spec_accepts_what_torch_names(monkeypatch) -> None:
    import torch

    from fa_tutor.utils import check_device_spec

    for spec in ("auto", "cpu", "cpu:0", "cuda", "cuda:1", torch.device("cpu"), None):
        check_device_spec(spec)
    assert check_device_spec(torch.device("cuda", 1)) == "cuda:1"
    monkeypatch.setenv("FA_TUTOR_DEVICE", "tpu")  # what auto defers to is checked too
    with pytest.raises(ValueError, match="Unknown device 'tpu'"):
        run_experiment("fdfa", quick=True, device="auto", out="/nonexistent", progress=False,
                       ray_address="local")
