"""fa_tutor.rules.noise.gaussian: the stochastic rules' N(0, I) draws, chunked and threaded on a CPU."""
import hashlib
import math
import multiprocessing

import pytest
import torch

from fa_tutor.rules.noise import CHUNK, gaussian


def draw(shape, seed=0, dtype=torch.float32):
    return gaussian(shape, torch.Generator().manual_seed(seed), device="cpu", dtype=dtype)


@pytest.fixture
def threads():
    """Restore torch's intra-op thread count after a test changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_small_draws_are_plain_randn_from_the_generator():
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    u = gaussian((CHUNK // 4, 4), g, device="cpu", dtype=torch.float32)
    torch.testing.assert_close(u, torch.randn((CHUNK // 4, 4), generator=ref), rtol=0, atol=0)
    assert g.get_state().equal(ref.get_state())  # the generator advanced exactly as randn's


def test_large_draw_is_reproducible_and_independent_of_the_thread_count(threads):
    shape = (3, CHUNK + 7)
    torch.set_num_threads(1)
    serial = draw(shape, seed=5)
    torch.set_num_threads(2)
    parallel = draw(shape, seed=5)
    assert serial.shape == shape and serial.dtype == torch.float32
    torch.testing.assert_close(serial, parallel, rtol=0, atol=0)
    assert not torch.equal(serial, draw(shape, seed=6))


def test_generator_advances_between_large_draws():
    g = torch.Generator().manual_seed(0)
    a = gaussian((2 * CHUNK,), g, device="cpu", dtype=torch.float32)
    b = gaussian((2 * CHUNK,), g, device="cpu", dtype=torch.float32)
    assert not torch.equal(a, b)


def test_large_draw_is_standard_normal_with_independent_chunks():
    k = 6
    u = draw((k * CHUNK - 1000,), seed=1, dtype=torch.float64)
    n = u.numel()
    assert abs(u.mean().item()) < 5 / math.sqrt(n)  # 5 standard errors
    # var of the sample variance of N(0,1): 2/n; fourth moment 3 (Gaussian, not uniform: 1.8)
    assert abs(u.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs((u**4).mean().item() - 3) < 5 * math.sqrt(96 / n)
    chunks = u[: (k - 1) * CHUNK].view(k - 1, CHUNK)
    corr = torch.corrcoef(chunks)  # no two chunks repeat or track each other
    off = corr[~torch.eye(k - 1, dtype=torch.bool)]
    assert off.abs().max().item() < 5 / math.sqrt(CHUNK)


def _digest(u: torch.Tensor) -> str:
    # hashed in Python: a reduction would use torch's OpenMP pool, which hangs in a forked child
    return hashlib.sha256(u.numpy().tobytes()).hexdigest()


def _child_digest(queue):
    queue.put(_digest(draw((2 * CHUNK,), seed=2)))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_forked_child_draws_the_same_numbers(threads):
    torch.set_num_threads(2)
    parent = _digest(draw((2 * CHUNK,), seed=2))  # the parent's thread pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_digest, args=(queue,))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0 and got == parent


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draws_are_one_randn():
    g, ref = (torch.Generator(device="cuda").manual_seed(4) for _ in range(2))
    u = gaussian((2 * CHUNK,), g, device="cuda", dtype=torch.float32)
    torch.testing.assert_close(u, torch.randn((2 * CHUNK,), generator=ref, device="cuda"),
                               rtol=0, atol=0)
