"""Datasets: equipot's HDF5 format, converters from published files, and batch loading.

::

    from equipot.data import convert_rmd17, H5Dataset, make_loader
    convert_rmd17(["rmd17_ethanol_train_01.npz", "rmd17_ethanol_test_01.npz"], "ethanol.h5")
    train = H5Dataset("ethanol.h5", split="train")
    for graph, targets in make_loader(train, 5.0, batch_size=8, shuffle=True):  # edges within 5 Å
        ...
"""
from typing import TYPE_CHECKING, Any

from .ase_io import convert_ase
from .conversion import read_index_file
from .md17 import convert_md17, convert_rmd17
from .qm9 import convert_qm9, read_atomrefs, read_uncharacterized
from .qm9pack import convert_qm9pack
from .reader import H5Dataset, open_h5
from .schema import SCHEMA_VERSION, Frame
from .split import random_split
from .writer import HDF5Writer

__all__ = [
    "SCHEMA_VERSION",
    "Collater",
    "Frame",
    "H5Dataset",
    "HDF5Writer",
    "collate",
    "convert_ase",
    "convert_md17",
    "convert_qm9",
    "convert_qm9pack",
    "convert_rmd17",
    "make_loader",
    "open_h5",
    "random_split",
    "read_atomrefs",
    "read_index_file",
    "read_uncharacterized",
]

if TYPE_CHECKING:
    from .loader import Collater, collate, make_loader


def __getattr__(name: str) -> Any:
    # The loader needs torch; reading and converting files does not, so it is imported on first use.
    if name in ("Collater", "collate", "make_loader"):
        from . import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'equipot.data' has no attribute {name!r}")
