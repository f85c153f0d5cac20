"""Data loaders: offline sets load with the documented shapes; download-only sets read tiny
files the tests write (never the network) and fail offline with a message naming the fix."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fa_tutor.data import DATASETS, DatasetNotAvailable, batches, load_dataset, split
from fa_tutor.data.idx import read_idx, write_idx


def test_mnist5k_offline_split() -> None:
    ds = load_dataset("mnist5k")
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.num_classes == 10
    assert torch.equal(torch.bincount(ds.y_test), torch.full((10,), 100))  # stratified
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0
    assert torch.equal(load_dataset("mnist5k").y_train, ds.y_train)  # fixed split


def test_digits_and_mnist1d() -> None:
    d = load_dataset("digits")
    assert d.x_train.shape[1:] == (1, 8, 8) and len(d.y_train) + len(d.y_test) == 1797
    m = load_dataset("mnist1d")
    assert m.x_train.shape == (4000, 40) and m.x_test.shape == (1000, 40)


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(ValueError, match="Unknown dataset 'nope'.*mnist5k"):
        load_dataset("nope")


def test_idx_roundtrip(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "b-idx3-ubyte.gz"):
        write_idx(tmp_path / name, arr)
        assert torch.equal(read_idx(tmp_path / name), torch.from_numpy(arr))


def _fake_idx(folder: Path, n_train: int = 12, n_test: int = 6) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_mnist_from_tiny_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotAvailable, match="fa_tutor data fetch mnist"):
        load_dataset("mnist", root=tmp_path)
    assert not DATASETS["mnist"].is_present(tmp_path)
    _fake_idx(tmp_path / "MNIST" / "raw")
    assert DATASETS["mnist"].is_present(tmp_path)
    ds = load_dataset("mnist", root=tmp_path)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.y_test.tolist() == [0, 1, 2, 3, 4, 5]


def test_fashion_mnist_prefers_cache_then_debian(tmp_path: Path, monkeypatch) -> None:
    import fa_tutor.data.loaders as loaders

    monkeypatch.setattr(loaders, "DEBIAN_FASHION", tmp_path / "no-debian-package")
    assert not DATASETS["fashion_mnist"].is_present(tmp_path)  # `data list` says "missing"
    _fake_idx(tmp_path / "FashionMNIST" / "raw")
    assert DATASETS["fashion_mnist"].is_present(tmp_path)
    ds = load_dataset("fashion_mnist", root=tmp_path)
    assert len(ds.y_train) == 12 and ds.classes[9] == "Ankle boot"


def test_cifar_from_tiny_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotAvailable, match="fa_tutor data fetch cifar10"):
        load_dataset("cifar10", root=tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 9]}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    assert DATASETS["cifar10"].is_present(tmp_path) and not DATASETS["cifar100"].is_present(tmp_path)
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.classes[9] == "c9" and ds.y_train[:4].tolist() == [0, 1, 2, 9]

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"fine_labels": [5, 50, 99]}, fh)
    ds = load_dataset("cifar100", root=tmp_path)
    assert ds.num_classes == 100 and ds.y_test.tolist() == [5, 50, 99]


def test_tiny_imagenet_from_tiny_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotAvailable, match="fa_tutor data fetch tiny_imagenet"):
        load_dataset("tiny_imagenet", root=tmp_path)
    assert not DATASETS["tiny_imagenet"].is_present(tmp_path)
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids))
    lines = []
    for c, w in enumerate(wnids):
        (root / "train" / w / "images").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), (40 * c, i, 0)).save(root / "train" / w / "images" / f"{w}_{i}.JPEG")
        Image.new("RGB", (64, 64), (0, 0, c)).save(root / "val" / "images" / f"val_{c}.JPEG")
        lines.append(f"val_{c}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines))
    assert DATASETS["tiny_imagenet"].is_present(tmp_path)
    ds = load_dataset("tiny_imagenet", root=tmp_path)
    assert ds.x_train.shape == (6, 3, 64, 64) and ds.x_train.dtype == torch.uint8
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1] and ds.y_test.tolist() == [0, 1]
    again = load_dataset("tiny_imagenet", root=tmp_path)  # from the .pt cache
    assert torch.equal(again.x_test, ds.x_test)
    xb, _ = next(batches(ds.x_train, ds.y_train, 4))
    assert xb.dtype == torch.float32 and float(xb.max()) <= 1.0


def test_batches_cover_every_example_once() -> None:
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    seen = torch.cat([yb for _, yb in batches(x, y, 3, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))
    assert len(list(batches(x, y, 0))) == 1  # full batch


def test_split_is_stratified_and_disjoint() -> None:
    x = torch.arange(100.0)[:, None]
    y = torch.arange(100) % 5
    xtr, ytr, xte, yte = split(x, y, n_test=20, seed=3)
    assert torch.equal(torch.bincount(yte), torch.full((5,), 4))
    assert not set(xtr.flatten().tolist()) & set(xte.flatten().tolist())


def test_resized_and_subset() -> None:
    ds = load_dataset("digits").subset(100, 50, seed=1).resized(16)
    assert ds.x_train.shape == (100, 1, 16, 16) and len(ds.y_test) == 50
    assert "Resized to 16×16" in ds.note and "Random subset" in ds.note
