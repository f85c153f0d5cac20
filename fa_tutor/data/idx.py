"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> Tensor:
    """Read an IDX file: magic = 0x0000 ⟨dtype byte⟩ ⟨ndim byte⟩, then ndim big-endian uint32 sizes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=_DTYPES[data[2]], offset=4 + 4 * ndim).reshape(shape)
    return torch.from_numpy(arr.astype(arr.dtype.newbyteorder("=")).copy())


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as (gzipped, if the name ends in .gz) IDX — used by tests to fake data."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
