"""Classification data: offline sources (digits, mnist5k, mnist1d) and validated readers for user files."""

from localentropy.data.readers import (
    RestrictedUnpickler,
    read_cifar_batch,
    read_idx,
    read_idx_images_labels,
    restricted_load,
)
from localentropy.data.sources import SOURCES, ArrayData, DataSplits, load_data, stratified_split

__all__ = [
    "SOURCES",
    "ArrayData",
    "DataSplits",
    "RestrictedUnpickler",
    "load_data",
    "read_cifar_batch",
    "read_idx",
    "read_idx_images_labels",
    "restricted_load",
    "stratified_split",
]
