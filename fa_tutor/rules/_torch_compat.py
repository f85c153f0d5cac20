"""Every use of a private or undocumented PyTorch API in fa_tutor, each with its fallback.

The rules use a few torch internals for speed or for information no public API
gives.  They live here, and nowhere else, so that a rename in a new torch release
breaks one small module (and its tests in ``tests/test_torch_compat.py``), never
``import fa_tutor``: nothing private is imported at import time, and each use falls
back to a public API (same values; the tests check each fallback against the fast path).

Tested with torch 2.14.1; the declared floor is torch 2.5 (``torch.OutOfMemoryError``).
"""
from __future__ import annotations

import inspect
import warnings
import weakref
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

# Use the private API where torch has it; tests switch each off to check its fallback.
_USE_ATEN = True  # torch.ops.aten.convolution_backward
_USE_NODE_VARIABLE = True  # AccumulateGrad.variable
_USE_VERSION = True  # Tensor._version
_USE_TORCH_WEAK = True  # torch.utils.weak.WeakIdKeyDictionary
_USE_NATIVE_LN = True  # torch.native_layer_norm
_USE_FUNCTORCH_CHECK = True  # torch._C._are_functorch_transforms_active

#: ``torch.OutOfMemoryError`` (torch ≥ 2.5); before that only the CUDA one existed.
OutOfMemoryError: type[BaseException] = getattr(torch, "OutOfMemoryError",
                                               torch.cuda.OutOfMemoryError)


def quiet_forward_ad() -> None:
    """Import the forward-mode decompositions once, without torch's deprecation warning.

    Forward-mode AD imports ``torch._decomp.decompositions_for_jvp`` on its first
    use, which emits a ``torch.jit`` FutureWarning (torch 2.14).  Every rule calls
    this when it is built (never ``import fa_tutor``).  Absent module (renamed):
    nothing to do, the warning (if any) is shown.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
        try:
            import torch._decomp.decompositions_for_jvp  # noqa: F401
        except ImportError:
            pass


def _conv2d_backward_public(delta: Tensor, x: Tensor, B: Tensor, stride, padding,
                            dilation, groups: int, mask: list[bool]) -> tuple:
    g = torch.nn.grad
    grad_x = g.conv2d_input(x.shape, B, delta, stride, padding, dilation, groups) \
        if mask[0] else None
    grad_W = g.conv2d_weight(x, B.shape, delta, stride, padding, dilation, groups) \
        if mask[1] else None
    grad_b = delta.sum((0, 2, 3)) if mask[2] else None
    return grad_x, grad_W, grad_b


def conv2d_backward(delta: Tensor, x: Tensor, B: Tensor, has_bias: bool, stride: list[int],
                    padding: list[int], dilation: list[int], groups: int,
                    mask: list[bool]) -> tuple:
    """(∂x with B as the weight, ∂W, ∂b) of a conv2d, as autograd computes them.

    ``aten.convolution_backward`` (one fused kernel, what autograd itself runs);
    fallback: ``torch.nn.grad.conv2d_input``/``conv2d_weight`` (public, same values).
    """
    op = getattr(torch.ops.aten, "convolution_backward", None) if _USE_ATEN else None
    if op is None:
        return _conv2d_backward_public(delta, x, B, stride, padding, dilation, groups, mask)
    bias_sizes = [B.shape[0]] if has_bias else None
    return op(delta, x, B, bias_sizes, stride, padding, dilation, False, [0, 0], groups, mask)


def functorch_transforms_active() -> bool:
    """Whether a ``torch.func`` transform (grad, jvp, vmap, ...) is running now.

    ``torch._C._are_functorch_transforms_active``; where torch lacks it: True, so the
    caller takes the path that works under the transforms (same values, slower).
    """
    check = getattr(torch._C, "_are_functorch_transforms_active", None) \
        if _USE_FUNCTORCH_CHECK else None
    return True if check is None else bool(check())


def eager_twin(fn: type) -> type:
    """``fn``, a Function with a separate ``setup_context`` (which ``torch.func`` needs),
    as a Function with a combined ``forward(ctx, *inputs)``: plain autograd then skips
    binding ``fn.forward``'s arguments on every call (~10 µs per call). The same
    forward, backward and jvp code; use it only while :func:`functorch_transforms_active`
    is False."""
    def forward(ctx: Any, *inputs: Any) -> Any:
        fn.setup_context(ctx, inputs, None)
        return fn.forward(*inputs)

    members = {"forward": staticmethod(forward), "backward": staticmethod(fn.backward),
               "jvp": staticmethod(fn.jvp), "__doc__": f"{fn.__name__} for plain autograd."}
    return type(f"{fn.__name__}Eager", (torch.autograd.Function,), members)


_EAGER_TWINS: dict[type, type] = {}


def apply_fn(fn: type, *inputs: Any) -> Any:
    """``fn.apply(*inputs)``, through ``fn``'s eager twin (:func:`eager_twin`, made once per
    Function) unless a ``torch.func`` transform runs."""
    if functorch_transforms_active():
        return fn.apply(*inputs)
    twin = _EAGER_TWINS.get(fn)
    if twin is None:
        twin = _EAGER_TWINS[fn] = eager_twin(fn)
    return twin.apply(*inputs)


def cache_forward_signature(fn: type) -> None:
    """Cache ``fn.forward``'s signature on it (``autograd.Function.apply`` inspects it
    on every call: ~40 µs per layer per step).  Plain Python: ``inspect.signature``
    honours ``__signature__``; if torch stops inspecting it, this only costs nothing."""
    fn.forward.__signature__ = inspect.signature(fn.forward)


def grad_leaf(node: Any) -> Tensor | None:
    """The leaf tensor of an ``AccumulateGrad`` autograd node (``node.variable``), else None."""
    return getattr(node, "variable", None)


def leaves_reachable(outputs: list[Tensor], candidates: list[Tensor]) -> set[int]:
    """ids of the ``candidates`` (leaves) that the autograd graphs of ``outputs`` reach.

    Walks the graph to its ``AccumulateGrad`` nodes (their ``variable``); where
    torch's nodes lack that attribute, asks ``torch.autograd.grad`` (public,
    one backward pass) which candidates get a gradient.
    """
    stack = [t.grad_fn for t in outputs if isinstance(t, Tensor) and t.grad_fn is not None]
    visited, leaves, opaque = set(), set(), False
    while stack:
        fn = stack.pop()
        if fn is None or fn in visited:
            continue
        visited.add(fn)
        leaf = grad_leaf(fn) if _USE_NODE_VARIABLE else None
        if leaf is not None:
            leaves.add(id(leaf))
        elif type(fn).__name__ == "AccumulateGrad":
            opaque = True
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    if not opaque:
        return leaves & {id(c) for c in candidates}
    wanted = [c for c in candidates if c.requires_grad]
    roots = [t for t in outputs if isinstance(t, Tensor) and t.grad_fn is not None]
    if not wanted or not roots:
        return set()
    grads = torch.autograd.grad(roots, wanted, [torch.ones_like(t) for t in roots],
                                retain_graph=True, allow_unused=True)
    return {id(c) for c, g in zip(wanted, grads) if g is not None}


def version(t: Any) -> int | None:
    """A tensor's in-place version counter (``Tensor._version``); None where unavailable
    (then the sign rules rewrite B on every forward: same values, one copy more)."""
    return getattr(t, "_version", None) if _USE_VERSION else None


class _WeakIdKeyDict:
    """Minimal ``torch.utils.weak.WeakIdKeyDictionary``: keys by identity, held weakly."""

    def __init__(self) -> None:
        self._data: dict[int, tuple[weakref.ref, Any]] = {}

    def _drop(self, key: int) -> None:
        self._data.pop(key, None)

    def __setitem__(self, key: Tensor, value: Any) -> None:
        k = id(key)
        self._data[k] = (weakref.ref(key, lambda _, k=k: self._drop(k)), value)

    def get(self, key: Any, default: Any = None) -> Any:
        item = self._data.get(id(key))
        return default if item is None or item[0]() is not key else item[1]

    def __getitem__(self, key: Any) -> Any:
        item = self._data.get(id(key))
        if item is None or item[0]() is not key:
            raise KeyError(key)
        return item[1]

    def __contains__(self, key: Any) -> bool:
        item = self._data.get(id(key))
        return item is not None and item[0]() is key

    def __iter__(self) -> Iterator[Tensor]:
        return (r() for r, _ in list(self._data.values()) if r() is not None)


def weak_id_key_dict() -> Any:
    """A dict keyed by tensor identity whose keys do not keep tensors alive."""
    try:
        from torch.utils.weak import WeakIdKeyDictionary
    except ImportError:
        return _WeakIdKeyDict()
    return WeakIdKeyDictionary() if _USE_TORCH_WEAK else _WeakIdKeyDict()


def layer_norm_with_stats(x: Tensor, normalized_shape: list[int], w: Tensor | None,
                          b: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(F.layer_norm(x), mean, rstd)`` in one kernel (``torch.native_layer_norm``);
    fallback: ``F.layer_norm`` plus the statistics computed in the open."""
    op = getattr(torch, "native_layer_norm", None) if _USE_NATIVE_LN else None
    if op is not None:
        return op(x, normalized_shape, w, b, eps)
    dims = tuple(range(-len(normalized_shape), 0))
    mean = x.mean(dims, keepdim=True)
    rstd = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
    return F.layer_norm(x, normalized_shape, w, b, eps), mean, rstd

