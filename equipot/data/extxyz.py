"""Frames back out of equipot: extended XYZ files (and any format ASE writes) with their labels.

The way back from an equipot HDF5 file to the structure files that ``equipot md``/``optimize``,
ASE and other codes read (``equipot convert data.h5 -o frames.xyz --frames 0:10``), and the
extended XYZ that ``equipot eval -o pred.xyz`` writes (reference and predicted labels side by side,
as ``mace_eval_configs`` does). Energies in eV, forces in eV/Å, stress in eV/Å^3.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from ..safe_write import atomic_write
from .reader import H5Dataset
from .schema import Frame


def frame_to_atoms(frame: Frame) -> Atoms:
    """An ``ase.Atoms`` of ``frame`` with its energy, forces and stress on a single-point calculator
    and its per-frame properties in ``atoms.info``."""
    atoms = Atoms(numbers=frame.numbers, positions=frame.positions,
                  cell=frame.cell if frame.cell is not None else np.zeros((3, 3)),
                  pbc=frame.pbc if frame.pbc is not None else False)
    results = {}
    if frame.energy is not None:
        results["energy"] = float(frame.energy)
    if frame.forces is not None:
        results["forces"] = np.asarray(frame.forces, dtype=np.float64)
    if frame.stress is not None:
        results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(frame.stress, dtype=np.float64))
    for name, value in frame.properties.items():
        value = np.asarray(value)
        atoms.info[name] = value.item() if value.size == 1 else value
    for name, value in frame.atom_properties.items():
        atoms.arrays[name] = np.asarray(value)
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def frame_indices(spec: str | None, total: int) -> np.ndarray:
    """Frame indices [K] from a Python-style index or slice such as ``5``, ``0:10``, ``::100``,
    ``-1`` (all frames when None); ValueError naming the spec."""
    if spec is None or spec.strip() in ("", ":"):
        return np.arange(total)
    try:
        if ":" in spec:
            parts = [int(p) if p.strip() else None for p in spec.split(":")]
            if len(parts) > 3:
                raise ValueError
            return np.arange(total)[slice(*parts)]
        k = int(spec)
    except ValueError:
        raise ValueError(f"--frames {spec!r}: expected an index or a slice such as 0:10 or ::100") from None
    if not -total <= k < total:
        raise ValueError(f"--frames {spec}: out of range for {total} frames")
    return np.array([k % total])


def write_structures(path: str | os.PathLike, structures: Iterable[Atoms], format: str | None = None) -> Path:
    """Write ``structures`` with ASE (format from the name unless given), atomically."""
    import ase.io

    path = Path(path)
    structures = list(structures)
    if not structures:
        raise ValueError(f"{path}: no frames to write")
    with atomic_write(path, keep_suffix=True) as tmp:  # ASE picks the format from the suffix
        ase.io.write(tmp, structures, format=format or _format_of(path))
    return path


def _format_of(path: Path) -> str | None:
    from ase.io.formats import filetype

    try:
        return filetype(str(path), read=False)
    except Exception:  # ASE raises several kinds for names it cannot place; let ase.io.write say why
        return None


def export_frames(h5: str | os.PathLike, output: str | os.PathLike, frames: str | None = None,
                  split: str | None = None) -> int:
    """Write frames of an equipot HDF5 file (``split``, then the ``frames`` index or slice) as
    structures with their labels (extended XYZ by default); returns how many."""
    dataset = H5Dataset(h5, split=split)
    idx = frame_indices(frames, len(dataset))
    write_structures(output, (frame_to_atoms(dataset[int(k)]) for k in idx))
    return len(idx)


def labelled_structures(numbers: np.ndarray, positions: np.ndarray, num_atoms: Sequence[int], cell: np.ndarray,
                        pbc: np.ndarray, info: dict[str, np.ndarray], arrays: dict[str, np.ndarray]) -> list[Atoms]:
    """One ``ase.Atoms`` per structure from flat arrays: ``numbers`` [sum N], ``positions`` [sum N, 3]
    Å, ``cell`` [M, 3, 3], ``pbc`` [M, 3]; ``info`` per structure [M, ...] and ``arrays`` per atom
    [sum N, ...] stored under their names (e.g. ``REF_energy`` / ``equipot_energy``)."""
    offsets = np.concatenate([[0], np.cumsum(num_atoms)]).astype(np.int64)
    out = []
    for k in range(len(num_atoms)):
        a, b = offsets[k], offsets[k + 1]
        atoms = Atoms(numbers=numbers[a:b], positions=positions[a:b], cell=cell[k], pbc=pbc[k])
        for name, values in info.items():
            value = np.asarray(values[k])
            atoms.info[name] = value.item() if value.size == 1 else value
        for name, values in arrays.items():
            atoms.arrays[name] = np.asarray(values[a:b])
        out.append(atoms)
    return out
