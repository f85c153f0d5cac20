"""Data: named classification sets as tensors, plus generators for the theory chapters."""
from .core import Dataset, DatasetNotAvailable, as_float, batches, data_root, split
from .loaders import DATASETS, load_dataset

__all__ = ["DATASETS", "Dataset", "DatasetNotAvailable", "as_float", "batches", "data_root",
           "load_dataset", "split"]
