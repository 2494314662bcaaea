"""equipot's HDF5 dataset format: the schema (its one description), its constants and :class:`Frame`.

The writer is :mod:`equipot.data.writer`, the reader :mod:`equipot.data.reader`.

Layout (schema version 1, the one description of it; see docs/architecture.md for the data flow;
every frame stored flat with offsets)::

    / attrs: format="equipot", version=1, source, level_of_theory, energy_unit="eV",
             length_unit="Angstrom", forces_unit, stress_unit, created_by, created,
             num_frames, num_atoms, elements
    /offsets                [M+1] int64     atom offset of each frame
    /numbers                [sum N] uint8
    /positions              [sum N, 3] float64, Å
    /energy                 [M] float64, eV                 (optional)
    /forces                 [sum N, 3] float64, eV/Å        (optional)
    /cell                   [M, 3, 3] float64, Å, rows = lattice vectors (optional)
    /pbc                    [M, 3] bool                     (optional)
    /stress                 [M, 3, 3] float64, eV/Å^3, ASE sign (optional)
    /properties/<name>      [M] or [M, ...] per-frame numbers, attrs unit, source_unit, description
    /atom_properties/<name> [sum N] or [sum N, ...] per-atom numbers (e.g. Mulliken charges)
    /strings/<name>         [M] UTF-8 strings (e.g. SMILES), not used for training
    /ragged/<name>          values [sum K] and /ragged/<name>_offsets [M+1] (per-frame lists
                            of varying length, e.g. QM9 harmonic frequencies)
    /atomrefs/<name>        [119] per-element reference values indexed by atomic number
    /splits/<name>          [K] int64 frame indices (train/val/test, official splits)

Every dataset keeps its unit in the ``unit`` attribute and, when the converter changed
it, the publisher's unit in ``source_unit``. Reading frame k is two slices of the flat
arrays (positions, forces) plus in-memory lookups; the per-frame arrays and the offsets
are cached in memory when the file is opened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

SCHEMA_VERSION = 1
FORMAT_NAME = "equipot"
MAX_Z = 118

#: per-frame datasets of the core schema: name -> trailing shape
FRAME_FIELDS = {"energy": (), "cell": (3, 3), "pbc": (3,), "stress": (3, 3)}
#: per-atom datasets of the core schema (besides numbers/positions)
ATOM_FIELDS = {"forces": (3,)}
CORE_UNITS = {
    "positions": "Angstrom",
    "energy": "eV",
    "forces": "eV/Angstrom",
    "cell": "Angstrom",
    "stress": "eV/Angstrom^3",
}
# Per-frame arrays up to this size are read into memory when a file is opened, so that
# reading a frame touches the disk only for the per-atom slices.
CACHE_BYTES = 64 << 20
CHUNK_BYTES = 1 << 16


@dataclass
class Frame:
    """One structure as read from an equipot HDF5 file (all in eV and Å).

    Attributes:
        numbers: [n] int64 atomic numbers.
        positions: [n, 3] float64, Å.
        cell: [3, 3] float64 Å (rows = lattice vectors) or None when the file has no cell.
        pbc: [3] bool or None.
        energy: float eV or None.
        forces: [n, 3] float64 eV/Å or None.
        stress: [3, 3] float64 eV/Å^3 (ASE sign convention) or None.
        properties: per-frame targets, name -> ndarray of shape () or (k, ...).
        atom_properties: per-atom values, name -> ndarray [n] or [n, k, ...].
        index: frame index in the file.
        extras: strings and ragged lists (SMILES, frequencies...) when the dataset was opened
            with ``extras=True``; empty otherwise.
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray | None = None
    pbc: np.ndarray | None = None
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    properties: dict[str, np.ndarray] = field(default_factory=dict)
    atom_properties: dict[str, np.ndarray] = field(default_factory=dict)
    index: int = -1
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_atoms(self) -> int:
        return int(self.numbers.shape[0])

    def to_atoms(self):
        """This frame as ``ase.Atoms`` with a SinglePointCalculator holding energy, forces, stress."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(numbers=self.numbers, positions=self.positions,
                      cell=self.cell if self.cell is not None else None,
                      pbc=self.pbc if self.pbc is not None else False)
        results = {}
        if self.energy is not None:
            results["energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces
        if self.stress is not None:
            results["stress"] = self.stress
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        for name, value in self.properties.items():
            atoms.info[name] = value.item() if value.ndim == 0 else value
        for name, value in self.atom_properties.items():
            atoms.arrays[name] = value
        return atoms


def leaf_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def check_name(name: str, frame: int | None) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        where = f"frame {frame}: " if frame is not None else ""
        raise ValueError(f"{where}invalid field name {name!r} (non-empty, no '/')")


def find_dataset(f: h5py.File, name: str) -> h5py.Dataset | None:
    for path in (name, f"properties/{name}", f"atom_properties/{name}", f"ragged/{name}", f"strings/{name}"):
        if path in f and isinstance(f[path], h5py.Dataset):
            return f[path]
    return None


def expect_shape(arr: np.ndarray, shape: tuple, name: str, frame: int) -> None:
    if arr.shape != shape:
        raise ValueError(f"frame {frame}: field '{name}' has shape {arr.shape}, expected {shape}")


def stress_3x3(stress: np.ndarray, frame: int) -> np.ndarray:
    if stress.shape == (3, 3):
        return stress
    if stress.shape == (6,):
        xx, yy, zz, yz, xz, xy = stress
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"frame {frame}: field 'stress' has shape {stress.shape}, expected (3, 3) or Voigt (6,)")


def check_coincident(positions: np.ndarray, offsets: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray | None,
                     f0: int) -> None:
    """ValueError naming the frame and the atoms when two atoms of a frame sit at the same place (to
    1e-4 Å; periodic images included): their forces would be NaN. positions [total, 3] Å, offsets [m + 1]
    the frames' first atoms, cell [m, 3, 3] and pbc [m, 3] or None."""
    frame = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    x = positions
    if cell is not None and pbc is not None and np.asarray(pbc).any():
        cells, periodic = np.asarray(cell)[frame], np.asarray(pbc, dtype=bool)[frame]
        try:
            frac = np.einsum("ni,nij->nj", x, np.linalg.inv(cells))
        except np.linalg.LinAlgError:
            return  # a singular cell is reported elsewhere
        frac = np.where(periodic, frac % 1.0, frac)
        x = np.einsum("ni,nij->nj", frac, cells)
    keys = np.concatenate([frame[:, None], np.round(x * 1e4).astype(np.int64)], axis=1)
    _, first, counts = np.unique(keys, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = keys[first[np.argmax(counts > 1)]]
        atoms = np.flatnonzero((keys == dup).all(axis=1))[:2]
        k = int(frame[atoms[0]])
        a, b = (int(i - offsets[k]) for i in atoms)
        raise ValueError(f"frame {f0 + k}: atoms {a} and {b} are at the same position (closer than 1e-4 Å, "
                         f"periodic images included)")
