"""Which converter reads a file: each converter module says how it recognises its input
(``recognises_<format>``); this table asks them in order and falls back to ASE."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .md17 import recognises_md17, recognises_rmd17
from .qm9 import recognises_qm9
from .qm9pack import recognises_qm9pack

FORMATS = ("rmd17", "md17", "qm9", "qm9pack", "ase")
H5_SUFFIXES = (".h5", ".hdf5")
_RECOGNISERS: tuple[tuple[str, Callable[[Path], bool]], ...] = (
    ("rmd17", recognises_rmd17), ("md17", recognises_md17), ("qm9", recognises_qm9), ("qm9pack", recognises_qm9pack),
)


def detect_format(path: str | Path) -> str:
    """The format of ``path`` (one of :data:`FORMATS`); ValueError / FileNotFoundError naming the
    file when no converter takes it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    for name, recognises in _RECOGNISERS:
        if recognises(path):
            return name
    if path.is_dir():
        raise ValueError(f"{path}: folder holds neither QM9 dsgdb9nsd_*.xyz files nor qm9pack CSV files")
    if path.name.lower().endswith(".npz"):
        from .npz import npz_keys

        raise ValueError(f"{path}: .npz keys {sorted(npz_keys(path))} match neither revised MD17 (nuclear_charges, "
                         f"coords, energies, forces) nor MD17 (R, z, E, F); pass --format")
    if path.name.lower().endswith(H5_SUFFIXES):
        raise ValueError(f"{path}: is already HDF5; `equipot info {path}` describes it")
    return "ase"
