"""In-memory classification data sets: one dataclass, one batch iterator."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where data sets are cached: ``root``, else ``$FA_TUTOR_DATA``, else ``~/.cache/fa_tutor``."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get("FA_TUTOR_DATA", Path.home() / ".cache" / "fa_tutor")).expanduser()


class DatasetNotAvailable(FileNotFoundError):
    """A data set is not on this machine and could not be fetched; the message says how to get it."""


@dataclass
class Dataset:
    """A classification data set held as tensors.

    ``x_*`` are float32 in [0, 1] with shape ``(N, *feature_shape)`` (images as
    ``(N, C, H, W)``), or uint8 for large image sets (converted per batch);
    ``y_*`` are int64 class indices in ``[0, num_classes)``.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    classes: list[str] = field(default_factory=list)
    source: str = ""  # where the files came from
    note: str = ""  # what differs from the canonical data set, if anything

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def in_features(self) -> int:
        return int(torch.tensor(self.feature_shape).prod())

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}: {len(self.y_train)} train / {len(self.y_test)} test, "
                f"x {self.feature_shape}, {self.num_classes} classes)")

    def resized(self, size: int) -> "Dataset":
        """Images bilinearly resized to ``size``×``size`` (e.g. 28 → 32 for LeNet-5)."""
        if self.x_train.dim() != 4:
            raise ValueError(f"{self.name} is not an image data set; cannot resize")

        def go(x: Tensor) -> Tensor:
            chunks = [F.interpolate(as_float(c), size=(size, size), mode="bilinear",
                                    align_corners=False) for c in x.split(4096)]
            return torch.cat(chunks).clamp_(0, 1)

        return replace(self, x_train=go(self.x_train), x_test=go(self.x_test),
                       note=(self.note + f" Resized to {size}×{size}.").strip())

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "Dataset":
        """A seeded random subset (for quick runs); the note records it."""
        g = torch.Generator().manual_seed(seed)

        def pick(x: Tensor, y: Tensor, n: int | None) -> tuple[Tensor, Tensor]:
            if n is None or n >= len(y):
                return x, y
            idx = torch.randperm(len(y), generator=g)[:n]
            return x[idx], y[idx]

        xtr, ytr = pick(self.x_train, self.y_train, n_train)
        xte, yte = pick(self.x_test, self.y_test, n_test)
        note = f"Random subset: {len(ytr)} train / {len(yte)} test (seed {seed})."
        return replace(self, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte,
                       note=f"{self.note} {note}".strip())

    def to(self, device: torch.device | str) -> "Dataset":
        return replace(self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
                       x_test=self.x_test.to(device), y_test=self.y_test.to(device))


def as_float(x: Tensor) -> Tensor:
    """uint8 images → float in [0, 1]; float tensors unchanged."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def batches(x: Tensor, y: Tensor, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None, device: torch.device | str | None = None,
            ) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` mini-batches (the last one may be smaller); ``batch_size ≤ 0`` = full batch."""
    n = len(y)
    if batch_size <= 0 or batch_size >= n:
        batch_size = n
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(x.device)  # one copy per epoch when the data live on a GPU
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        xb, yb = x[idx], y[idx.to(y.device)]
        if device is not None:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        yield as_float(xb), yb


def split(x: Tensor, y: Tensor, n_test: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A seeded, stratified train/test split with ``n_test`` test examples."""
    g = torch.Generator().manual_seed(seed)
    classes = y.unique()
    per_class = n_test // len(classes)
    test_idx, train_idx = [], []
    for c in classes:
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        test_idx.append(idx[:per_class])
        train_idx.append(idx[per_class:])
    te = torch.cat(test_idx)
    tr = torch.cat(train_idx)
    tr = tr[torch.randperm(len(tr), generator=g)]
    return x[tr], y[tr], x[te], y[te]
