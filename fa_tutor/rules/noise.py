r"""Gaussian perturbations for the stochastic rules (fg_w, fg_a, lg_fg_*, fdfa), drawn fast on a CPU.

PyTorch's CPU generator (Mersenne Twister) fills a tensor on one core, at a few
nanoseconds per number, while the matrix products of the same step use every
core: one FG-A step of the CIFAR LeNet draws 2.7 million numbers, a quarter of
its time on two cores and more on a laptop with eight.  :func:`gaussian` splits
a large CPU draw into fixed chunks of :data:`CHUNK` numbers, each from its own
generator seeded by the rule's generator, and fills the chunks in parallel
threads (PyTorch releases the GIL while it fills a tensor):

.. math::
    s_1, \dots, s_k \leftarrow \text{draws of } g, \qquad
    u[(i-1)C : iC] \sim \mathcal N(0, I) \text{ from } \mathrm{MT}(s_i),
    \qquad k = \lceil n / C \rceil

The chunks depend only on n, never on the number of threads, so a seed gives
the same u on any machine.  Draws of at most :data:`CHUNK` numbers, and every
draw on a GPU (whose Philox generator is already parallel), are one
``torch.randn`` from g itself.
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

#: numbers per chunk (2^17: large enough that a chunk's thread hand-off is noise)
CHUNK = 1 << 17
#: the name of the profiler range around every draw
PROFILER_RANGE = "fa_tutor.noise.gaussian"

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def gaussian(shape: tuple[int, ...] | torch.Size, generator: torch.Generator, *,
             device: torch.device | str, dtype: torch.dtype) -> Tensor:
    """u ~ N(0, I) of ``shape``, reproducible from ``generator`` (see the module docstring).

    Runs inside a profiler range named :data:`PROFILER_RANGE`: the draws made in the
    worker threads are invisible to a profiler of the calling thread, the range's
    wall time is not (the step-cost benchmark's ``draw_share`` reads it).
    """
    with torch.profiler.record_function(PROFILER_RANGE):
        return _gaussian(shape, generator, torch.device(device), dtype)


def _gaussian(shape: tuple[int, ...] | torch.Size, generator: torch.Generator,
              device: torch.device, dtype: torch.dtype) -> Tensor:
    n = math.prod(shape)
    if device.type != "cpu" or n <= CHUNK:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    out = torch.empty(shape, device=device, dtype=dtype)
    flat = out.view(-1)
    k = math.ceil(n / CHUNK)
    seeds = torch.randint(0, 2**62, (k,), generator=generator).tolist()

    def fill(i: int) -> None:
        chunk = flat[i * CHUNK:(i + 1) * CHUNK]
        chunk.normal_(generator=torch.Generator().manual_seed(seeds[i]))

    pool = _threads()
    if pool is None:
        for i in range(k):
            fill(i)
    else:
        list(pool.map(fill, range(k)))
    return out


def _threads() -> ThreadPoolExecutor | None:
    """A pool of ``torch.get_num_threads()`` threads (None when that is 1), made on first use."""
    global _pool, _pool_size
    size = torch.get_num_threads()
    if size < 2:
        return None
    with _pool_lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(size, thread_name_prefix="fa_tutor-noise"), size
        return _pool


def _forget_pool_after_fork() -> None:
    """A forked child (DataLoader worker, multiprocessing) has none of the parent's threads."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_forget_pool_after_fork)
