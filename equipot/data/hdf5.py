"""equipot's HDF5 dataset format: an atomic, streaming writer and a lazy reader.

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

import contextlib
import copy
import datetime
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch.utils.data

if TYPE_CHECKING:
    from typing_extensions import Self

SCHEMA_VERSION = 1
FORMAT_NAME = "equipot"
MAX_Z = 118

#: per-frame datasets of the core schema: name -> trailing shape
_FRAME_FIELDS = {"energy": (), "cell": (3, 3), "pbc": (3,), "stress": (3, 3)}
#: per-atom datasets of the core schema (besides numbers/positions)
_ATOM_FIELDS = {"forces": (3,)}
_CORE_UNITS = {
    "positions": "Angstrom",
    "energy": "eV",
    "forces": "eV/Angstrom",
    "cell": "Angstrom",
    "stress": "eV/Angstrom^3",
}
# Per-frame arrays up to this size are read into memory when a file is opened, so that
# reading a frame touches the disk only for the per-atom slices.
_CACHE_BYTES = 64 << 20
_CHUNK_BYTES = 1 << 16


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


# --------------------------------------------------------------------------- writer


class _Field:
    """A dataset being written: where it lives, how many rows per frame, its row shape."""

    __slots__ = ("buffer", "dtype", "kind", "path", "per_atom", "shape")

    def __init__(self, path: str, per_atom: bool, shape: tuple, dtype: np.dtype, kind: str = "array"):
        self.path = path
        self.per_atom = per_atom
        self.shape = shape
        self.dtype = dtype
        self.kind = kind  # "array", "string" or "ragged"
        self.buffer: list = []


def _numeric_dtype(arr: np.ndarray, where: str) -> np.dtype:
    if arr.dtype == np.bool_:
        return np.dtype(np.bool_)
    if np.issubdtype(arr.dtype, np.integer):
        return np.dtype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        return np.dtype(np.float64)
    raise ValueError(f"{where} has dtype {arr.dtype}; only numbers (int, float, bool) can be stored")


def _first_bad_row(arr: np.ndarray) -> int | None:
    """Index along axis 0 of the first row with a NaN or inf, or None."""
    if not np.issubdtype(arr.dtype, np.floating) or arr.size == 0:
        return None
    ok = np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if ok.all():
        return None
    return int(np.argmin(ok))


class HDF5Writer:
    """Stream frames into an equipot HDF5 file, atomically.

    Frames are buffered and appended in chunks, so memory stays bounded however many frames
    are written. The file is written to ``<path>.tmp`` and renamed to ``path`` when
    :meth:`close` succeeds; on any exception inside a ``with`` block (or :meth:`abort`) the
    temporary file is deleted and nothing is left behind.

    The fields of the first frame fix the schema: every later frame must give the same
    fields with the same trailing shapes, or :meth:`add` raises ``ValueError`` naming the
    frame and the field. Values must be in eV and Å (convert before adding).

    Example::

        with HDF5Writer("out.h5", source="my.xyz", level_of_theory="PBE") as w:
            w.add(numbers, positions, energy=e, forces=f)
            w.add_split("train", range(100))
    """

    def __init__(
        self,
        path: str | os.PathLike,
        source: str = "",
        level_of_theory: str = "",
        overwrite: bool = False,
        attrs: Mapping[str, Any] | None = None,
        compression: str | None = "gzip",
        compression_opts: int | None = 4,
        buffer_atoms: int = 1 << 17,
    ):
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"{self.path}: output path is a directory")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: output file exists (pass overwrite=True / --overwrite)")
        if not self.path.parent.exists():
            raise FileNotFoundError(f"{self.path.parent}: output directory does not exist")
        self.tmp_path = self.path.with_name(self.path.name + ".tmp")
        self.attrs: dict[str, Any] = {"source": str(source), "level_of_theory": str(level_of_theory)}
        self.attrs.update(attrs or {})
        self._compression = compression
        self._compression_opts = compression_opts if compression == "gzip" else None
        self._buffer_atoms = int(buffer_atoms)
        self._fields: dict[str, _Field] | None = None
        self._units: dict[str, dict[str, str]] = {}
        self._splits: dict[str, np.ndarray] = {}
        self._atomrefs: dict[str, tuple[np.ndarray, dict[str, str]]] = {}
        self._offsets: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self._n_frames = 0
        self._n_atoms = 0
        self._buffered_frames = 0
        self._buffered_atoms = 0
        self._ragged_totals: dict[str, int] = {}
        self._elements = np.zeros(MAX_Z + 1, dtype=bool)
        self._closed = False
        self._file = h5py.File(self.tmp_path, "w")

    # -- context manager
    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        # A writer dropped without close() must not leave a half-written tmp file.
        if not getattr(self, "_closed", True):
            self.abort()

    @property
    def num_frames(self) -> int:
        """Frames added so far."""
        return self._n_frames

    # -- adding data
    def add(
        self,
        numbers: Sequence[int] | np.ndarray,
        positions: np.ndarray,
        energy: float | None = None,
        forces: np.ndarray | None = None,
        cell: np.ndarray | None = None,
        pbc: Sequence[bool] | np.ndarray | None = None,
        stress: np.ndarray | None = None,
        properties: Mapping[str, Any] | None = None,
        atom_properties: Mapping[str, Any] | None = None,
        strings: Mapping[str, str] | None = None,
        ragged: Mapping[str, Any] | None = None,
    ) -> None:
        """Add one frame: ``numbers`` [n], ``positions`` [n, 3] Å, ``energy`` eV, ``forces`` [n, 3] eV/Å,
        ``cell`` [3, 3] Å, ``pbc`` [3], ``stress`` [3, 3] or Voigt [6] eV/Å^3, ``properties``
        name -> scalar or array (per frame), ``atom_properties`` name -> [n, ...],
        ``strings`` name -> str, ``ragged`` name -> 1-D array of any length."""
        f0 = self._n_frames
        numbers = np.asarray(numbers).reshape(-1)
        positions = np.asarray(positions, dtype=np.float64)
        n = numbers.shape[0]
        _expect_shape(positions, (n, 3), "positions", f0)
        if forces is not None:
            forces = np.asarray(forces, dtype=np.float64)
            _expect_shape(forces, (n, 3), "forces", f0)
        if stress is not None:
            stress = _stress_3x3(np.asarray(stress, dtype=np.float64), f0)
        if cell is not None:
            cell = np.asarray(cell, dtype=np.float64)
            _expect_shape(cell, (3, 3), "cell", f0)
        if pbc is not None:
            pbc = np.asarray(pbc, dtype=bool)
            _expect_shape(pbc, (3,), "pbc", f0)
        atom_arrays = {}
        for name, value in (atom_properties or {}).items():
            arr = np.asarray(value)
            if arr.shape[:1] != (n,):
                raise ValueError(f"frame {f0}: field '{name}' has shape {arr.shape}, expected ({n}, ...) "
                                 f"(one row per atom)")
            atom_arrays[name] = arr
        self.add_batch(
            numbers, positions, [n],
            energy=None if energy is None else np.asarray(energy, dtype=np.float64)[None],
            forces=forces,
            cell=None if cell is None else cell[None],
            pbc=None if pbc is None else pbc[None],
            stress=None if stress is None else stress[None],
            properties=None if properties is None else {k: np.asarray(v)[None] for k, v in properties.items()},
            atom_properties=atom_arrays,
            strings=None if strings is None else {k: [v] for k, v in strings.items()},
            ragged=None if ragged is None else {k: [v] for k, v in ragged.items()},
        )

    def add_many(
        self,
        numbers: np.ndarray,
        positions: np.ndarray,
        energy: np.ndarray | None = None,
        forces: np.ndarray | None = None,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | None = None,
        stress: np.ndarray | None = None,
        properties: Mapping[str, np.ndarray] | None = None,
        atom_properties: Mapping[str, np.ndarray] | None = None,
        strings: Mapping[str, Sequence[str]] | None = None,
        ragged: Mapping[str, Sequence[np.ndarray]] | None = None,
    ) -> None:
        """Add M frames of the same size n at once (the fast path for MD trajectories).

        ``numbers`` [n] (shared) or [M, n]; ``positions`` [M, n, 3]; ``energy`` [M];
        ``forces`` [M, n, 3]; ``cell`` [M, 3, 3]; ``pbc`` [M, 3]; ``stress`` [M, 3, 3];
        ``properties`` name -> [M, ...]; ``atom_properties`` name -> [M, n, ...];
        ``strings`` name -> M strings; ``ragged`` name -> M 1-D arrays.
        """
        f0 = self._n_frames
        positions = np.asarray(positions, dtype=np.float64)
        if positions.ndim != 3 or positions.shape[-1] != 3:
            raise ValueError(f"frame {f0}: field 'positions' has shape {positions.shape}, "
                             f"expected (n_frames, n_atoms, 3)")
        m, n = positions.shape[:2]
        numbers = np.asarray(numbers)
        if numbers.ndim == 1:
            numbers = np.broadcast_to(numbers, (m, numbers.shape[0]))
        if numbers.shape != (m, n):
            raise ValueError(f"frame {f0}: field 'numbers' has shape {numbers.shape}, expected ({m}, {n})")

        def flat(name: str, value, tail: tuple | None):
            if value is None:
                return None
            arr = np.asarray(value)
            if arr.shape[:2] != (m, n) or (tail is not None and arr.shape[2:] != tail):
                expect = (m, n) + (tail if tail is not None else arr.shape[2:])
                raise ValueError(f"frame {f0}: field '{name}' has shape {arr.shape}, expected {expect}")
            return arr.reshape((m * n,) + arr.shape[2:])

        self.add_batch(
            numbers.reshape(-1), positions.reshape(-1, 3), np.full(m, n, dtype=np.int64),
            energy=energy, forces=flat("forces", forces, (3,)), cell=cell, pbc=pbc, stress=stress,
            properties=properties,
            atom_properties={k: flat(k, v, None) for k, v in (atom_properties or {}).items()},
            strings=strings, ragged=ragged,
        )

    def add_batch(
        self,
        numbers: np.ndarray,
        positions: np.ndarray,
        n_atoms: Sequence[int] | np.ndarray,
        energy: np.ndarray | None = None,
        forces: np.ndarray | None = None,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | None = None,
        stress: np.ndarray | None = None,
        properties: Mapping[str, np.ndarray] | None = None,
        atom_properties: Mapping[str, np.ndarray] | None = None,
        strings: Mapping[str, Sequence[str]] | None = None,
        ragged: Mapping[str, Sequence[np.ndarray]] | None = None,
    ) -> None:
        """Add M frames of any sizes in the flat layout of the file.

        ``numbers`` [sum N], ``positions`` [sum N, 3], ``n_atoms`` [M]; ``energy`` [M];
        ``forces`` [sum N, 3]; ``cell`` [M, 3, 3]; ``pbc`` [M, 3]; ``stress`` [M, 3, 3];
        ``properties`` name -> [M, ...]; ``atom_properties`` name -> [sum N, ...];
        ``strings`` name -> M strings; ``ragged`` name -> M 1-D arrays.
        """
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        f0 = self._n_frames
        counts = np.asarray(n_atoms, dtype=np.int64).reshape(-1)
        m = counts.shape[0]
        if m == 0:
            return
        if (counts < 1).any():
            raise ValueError(f"frame {f0 + int(np.argmax(counts < 1))}: has no atoms")
        local = np.concatenate([[0], np.cumsum(counts)])
        total = int(local[-1])

        def frame_of(row: int) -> tuple[int, int]:
            k = int(np.searchsorted(local, row, side="right") - 1)
            return f0 + k, row - int(local[k])

        numbers = np.asarray(numbers).reshape(-1)
        positions = np.asarray(positions, dtype=np.float64)
        if numbers.shape != (total,):
            raise ValueError(f"frame {f0}: field 'numbers' has {numbers.shape[0]} atoms, expected {total}")
        integral = np.issubdtype(numbers.dtype, np.integer) or (
            np.issubdtype(numbers.dtype, np.floating) and np.all(numbers == np.round(numbers)))
        if not integral:
            raise ValueError(f"frame {f0}: field 'numbers' must hold integers, got dtype {numbers.dtype}")
        bad = (numbers < 1) | (numbers > MAX_Z)
        if bad.any():
            k, a = frame_of(int(np.argmax(bad)))
            raise ValueError(f"frame {k}: field 'numbers' atom {a} has atomic number "
                             f"{numbers[np.argmax(bad)]}, expected 1..{MAX_Z}")

        items: dict[str, tuple[Any, bool, str]] = {}

        def add_item(name: str, path: str, value, per_atom: bool, tail: tuple | None) -> None:
            arr = np.asarray(value)
            dtype = _numeric_dtype(arr, f"frame {f0}: field '{name}'")
            rows = total if per_atom else m
            if arr.shape[:1] != (rows,) or (tail is not None and arr.shape[1:] != tail):
                expect = (rows,) + (tail if tail is not None else arr.shape[1:])
                what = "one row per atom" if per_atom else "one row per frame"
                raise ValueError(f"frame {f0}: field '{name}' has shape {arr.shape}, expected {expect} ({what})")
            items[path] = (arr.astype(dtype, copy=False), per_atom, "array")

        items["numbers"] = (numbers.astype(np.uint8), True, "array")
        add_item("positions", "positions", positions, True, (3,))
        if energy is not None:
            add_item("energy", "energy", np.asarray(energy, dtype=np.float64).reshape(-1), False, ())
        if forces is not None:
            add_item("forces", "forces", np.asarray(forces, dtype=np.float64), True, (3,))
        if cell is not None:
            add_item("cell", "cell", np.asarray(cell, dtype=np.float64), False, (3, 3))
        if pbc is not None:
            add_item("pbc", "pbc", np.asarray(pbc).astype(bool), False, (3,))
        if stress is not None:
            add_item("stress", "stress", np.asarray(stress, dtype=np.float64), False, (3, 3))
        for name, value in (properties or {}).items():
            _check_name(name, f0)
            add_item(name, f"properties/{name}", value, False, None)
        for name, value in (atom_properties or {}).items():
            _check_name(name, f0)
            add_item(name, f"atom_properties/{name}", value, True, None)
        for name, value in (strings or {}).items():
            _check_name(name, f0)
            values = [str(v) for v in value]
            if len(values) != m:
                raise ValueError(f"frame {f0}: field '{name}' has {len(values)} strings, expected {m}")
            items[f"strings/{name}"] = (values, False, "string")
        for name, value in (ragged or {}).items():
            _check_name(name, f0)
            lists = [np.asarray(v, dtype=np.float64).reshape(-1) for v in value]
            if len(lists) != m:
                raise ValueError(f"frame {f0}: field '{name}' has {len(lists)} entries, expected {m}")
            for k, v in enumerate(lists):
                if not np.isfinite(v).all():
                    raise ValueError(f"frame {f0 + k}: field '{name}' contains NaN or inf")
            items[f"ragged/{name}"] = (lists, False, "ragged")

        for path, (arr, per_atom, kind) in items.items():
            if kind != "array":
                continue
            bad_row = _first_bad_row(arr)
            if bad_row is not None:
                if per_atom:
                    k, a = frame_of(bad_row)
                    raise ValueError(f"frame {k}: field '{_leaf(path)}' atom {a} contains NaN or inf")
                raise ValueError(f"frame {f0 + bad_row}: field '{_leaf(path)}' contains NaN or inf")

        if self._fields is None:
            self._fields = {}
            for path, (arr, per_atom, kind) in items.items():
                if kind == "array":
                    self._fields[path] = _Field(path, per_atom, arr.shape[1:], arr.dtype)
                else:
                    self._fields[path] = _Field(path, False, (), np.dtype(object), kind)
        else:
            missing = [p for p in self._fields if p not in items]
            extra = [p for p in items if p not in self._fields]
            if missing:
                raise ValueError(f"frame {f0}: field '{_leaf(missing[0])}' is missing "
                                 f"(it is present in earlier frames)")
            if extra:
                raise ValueError(f"frame {f0}: field '{_leaf(extra[0])}' is present but earlier frames "
                                 f"do not have it")
            for path, (arr, per_atom, kind) in items.items():
                fld = self._fields[path]
                if kind != "array":
                    continue
                if arr.shape[1:] != fld.shape:
                    raise ValueError(f"frame {f0}: field '{_leaf(path)}' has shape {arr.shape[1:]} per "
                                     f"{'atom' if per_atom else 'frame'}, earlier frames have {fld.shape}")
                if arr.dtype != fld.dtype:
                    # ints after floats are fine; floats after ints would lose data
                    if not np.can_cast(arr.dtype, fld.dtype, "same_kind"):
                        raise ValueError(f"frame {f0}: field '{_leaf(path)}' has dtype {arr.dtype}, "
                                         f"earlier frames have {fld.dtype}")
                    items[path] = (arr.astype(fld.dtype), per_atom, kind)

        for path, (arr, _, kind) in items.items():
            if kind == "array":
                self._fields[path].buffer.append(arr)
            else:
                self._fields[path].buffer.extend(arr)
        self._elements[np.unique(numbers)] = True
        self._offsets.append(self._n_atoms + local[1:])
        self._n_frames += m
        self._n_atoms += total
        self._buffered_frames += m
        self._buffered_atoms += total
        if self._buffered_atoms >= self._buffer_atoms or self._buffered_frames >= self._buffer_atoms:
            self._flush()

    def add_split(self, name: str, indices: Iterable[int] | np.ndarray) -> None:
        """Record a named subset of frame indices (checked against the frame count at close)."""
        _check_name(name, None)
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"split '{name}': indices must be integers, got dtype {idx.dtype}")
        self._splits[name] = idx.astype(np.int64).reshape(-1)

    def set_units(self, name: str, unit: str, source_unit: str | None = None,
                  description: str | None = None) -> None:
        """Attach ``unit`` (the stored unit), the publisher's ``source_unit`` and a description to a
        field: ``energy``, ``forces``, ``positions``, ``stress``, ``cell`` or a property name."""
        entry = {"unit": unit}
        if source_unit is not None:
            entry["source_unit"] = source_unit
        if description is not None:
            entry["description"] = description
        self._units.setdefault(name, {}).update(entry)

    def add_atomref(self, name: str, values: Mapping[int, float], unit: str,
                    source_unit: str | None = None, description: str | None = None) -> None:
        """Per-element reference values (e.g. isolated-atom energies), atomic number -> value."""
        _check_name(name, None)
        arr = np.zeros(MAX_Z + 1, dtype=np.float64)
        present = np.zeros(MAX_Z + 1, dtype=bool)
        for z, v in values.items():
            if not 1 <= int(z) <= MAX_Z:
                raise ValueError(f"atomref '{name}': atomic number {z} out of range")
            if not np.isfinite(v):
                raise ValueError(f"atomref '{name}': value for Z={z} is NaN or inf")
            arr[int(z)] = float(v)
            present[int(z)] = True
        attrs = {"unit": unit, "elements": np.flatnonzero(present).astype(np.int64)}
        if source_unit is not None:
            attrs["source_unit"] = source_unit
        if description is not None:
            attrs["description"] = description
        self._atomrefs[name] = (arr, attrs)

    # -- writing
    def _create(self, fld: _Field) -> h5py.Dataset:
        if fld.kind == "string":
            return self._file.create_dataset(fld.path, shape=(0,), maxshape=(None,), chunks=(1024,),
                                             dtype=h5py.string_dtype("utf-8"))
        if fld.kind == "ragged":
            self._file.create_dataset(fld.path + "_offsets", data=np.zeros(1, dtype=np.int64),
                                      maxshape=(None,), chunks=(4096,))
            return self._file.create_dataset(fld.path, shape=(0,), maxshape=(None,), chunks=(8192,),
                                             dtype=np.float64, **self._compress())
        row = max(1, int(np.prod(fld.shape)) * fld.dtype.itemsize)
        rows = int(min(max(_CHUNK_BYTES // row, 64), 1 << 16))
        return self._file.create_dataset(fld.path, shape=(0,) + fld.shape, maxshape=(None,) + fld.shape,
                                         chunks=(rows,) + fld.shape, dtype=fld.dtype, **self._compress())

    def _compress(self) -> dict:
        if not self._compression:
            return {}
        return {"compression": self._compression, "compression_opts": self._compression_opts,
                "shuffle": True}

    def _flush(self) -> None:
        if not self._fields or self._buffered_frames == 0:
            return
        for fld in self._fields.values():
            ds = self._file[fld.path] if fld.path in self._file else self._create(fld)
            if fld.kind == "array":
                data = np.concatenate(fld.buffer, axis=0)
            elif fld.kind == "string":
                data = np.array(fld.buffer, dtype=object)
            else:
                lens = np.array([len(v) for v in fld.buffer], dtype=np.int64)
                data = np.concatenate(fld.buffer) if len(fld.buffer) else np.zeros(0)
                total = self._ragged_totals.get(fld.path, 0)
                off_ds = self._file[fld.path + "_offsets"]
                start = off_ds.shape[0]
                off_ds.resize((start + len(lens),))
                off_ds[start:] = total + np.cumsum(lens)
                self._ragged_totals[fld.path] = total + int(lens.sum())
            start = ds.shape[0]
            ds.resize((start + data.shape[0],) + ds.shape[1:])
            if data.shape[0]:
                ds[start:] = data
            fld.buffer = []
        self._buffered_frames = 0
        self._buffered_atoms = 0

    def close(self) -> Path:
        """Finish the file and rename it into place; returns the final path."""
        if self._closed:
            return self.path
        try:
            self._flush()
            if self._n_frames == 0:
                raise ValueError(f"{self.path}: no frames to write")
            f = self._file
            f.create_dataset("offsets", data=np.concatenate(self._offsets))
            for name, idx in self._splits.items():
                if idx.size:
                    bad = (idx < 0) | (idx >= self._n_frames)
                    if bad.any():
                        raise ValueError(f"split '{name}': index {int(idx[np.argmax(bad)])} out of range "
                                         f"for {self._n_frames} frames")
                    if np.unique(idx).size != idx.size:
                        raise ValueError(f"split '{name}': duplicate frame indices")
                f.create_dataset(f"splits/{name}", data=idx, dtype=np.int64)
            for name, (arr, attrs) in self._atomrefs.items():
                ds = f.create_dataset(f"atomrefs/{name}", data=arr)
                ds.attrs.update(attrs)
            for path in ("positions", "energy", "forces", "cell", "stress"):
                if path in f:
                    f[path].attrs["unit"] = _CORE_UNITS[path]
            for name, entry in self._units.items():
                target = _find(f, name)
                if target is not None:
                    target.attrs.update(entry)
            for key, value in self.attrs.items():
                f.attrs[key] = value
            # written last so that user attributes cannot override the format markers
            f.attrs.update({
                "format": FORMAT_NAME,
                "version": SCHEMA_VERSION,
                "energy_unit": "eV",
                "length_unit": "Angstrom",
                "forces_unit": "eV/Angstrom",
                "stress_unit": "eV/Angstrom^3",
                "created_by": f"equipot {_package_version()}",
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "num_frames": self._n_frames,
                "num_atoms": self._n_atoms,
                "elements": np.flatnonzero(self._elements).astype(np.int64),
            })
            f.close()
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard everything: close and delete the temporary file."""
        self._closed = True
        with contextlib.suppress(Exception):  # a broken file must still be deleted below
            self._file.close()
        try:
            self.tmp_path.unlink()
        except FileNotFoundError:
            pass


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("equipot")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


def _leaf(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _check_name(name: str, frame: int | None) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        where = f"frame {frame}: " if frame is not None else ""
        raise ValueError(f"{where}invalid field name {name!r} (non-empty, no '/')")


def _find(f: h5py.File, name: str) -> h5py.Dataset | None:
    for path in (name, f"properties/{name}", f"atom_properties/{name}", f"ragged/{name}", f"strings/{name}"):
        if path in f and isinstance(f[path], h5py.Dataset):
            return f[path]
    return None


def _expect_shape(arr: np.ndarray, shape: tuple, name: str, frame: int) -> None:
    if arr.shape != shape:
        raise ValueError(f"frame {frame}: field '{name}' has shape {arr.shape}, expected {shape}")


def _stress_3x3(stress: np.ndarray, frame: int) -> np.ndarray:
    if stress.shape == (3, 3):
        return stress
    if stress.shape == (6,):
        xx, yy, zz, yz, xz, xy = stress
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"frame {frame}: field 'stress' has shape {stress.shape}, expected (3, 3) or Voigt (6,)")


# --------------------------------------------------------------------------- reader


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open an equipot file read-only; errors name the file and say what is wrong."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected an equipot HDF5 file")
    try:
        return h5py.File(path, "r", rdcc_nbytes=16 << 20)
    except OSError as exc:
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head != b"\x89HDF\r\n\x1a\n":
            raise ValueError(f"{path}: not an HDF5 file (convert it first with `equipot convert`)") from None
        raise ValueError(f"{path}: HDF5 file is truncated or corrupt ({exc})") from None


class _Meta:
    """What the reader needs to know about a file, read once and shared with workers."""

    def __init__(self, path: Path):
        self.path = path
        with open_h5(path) as f:
            try:
                self._read(f)
            except (OSError, RuntimeError, KeyError) as exc:
                raise ValueError(f"{path}: HDF5 file is truncated or corrupt ({exc})") from None

    def _read(self, f: h5py.File) -> None:
        path = self.path
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != FORMAT_NAME:
            raise ValueError(f"{path}: not an equipot dataset (root attribute 'format' is {fmt!r}); "
                             f"convert the source with `equipot convert`")
        version = int(f.attrs.get("version", -1))
        if not 1 <= version <= SCHEMA_VERSION:
            raise ValueError(f"{path}: schema version {version} is not supported by this equipot "
                             f"(supports 1..{SCHEMA_VERSION})")
        for name in ("offsets", "numbers", "positions"):
            if name not in f:
                raise ValueError(f"{path}: missing dataset '/{name}'")
        offsets = f["offsets"][()]
        if offsets.ndim != 1 or offsets.shape[0] < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise ValueError(f"{path}: field '/offsets' is not a non-decreasing list starting at 0")
        self.offsets = offsets.astype(np.int64)
        self.num_frames = int(offsets.shape[0] - 1)
        n_atoms = int(offsets[-1])
        self.attrs = {k: _attr(v) for k, v in f.attrs.items()}

        def check(name: str, rows: int, what: str, tail: tuple | None = None) -> None:
            ds = f[name]
            if ds.shape[:1] != (rows,):
                raise ValueError(f"{path}: field '/{name}' has {ds.shape[0] if ds.shape else 0} rows, "
                                 f"expected {rows} ({what})")
            if tail is not None and ds.shape[1:] != tail:
                raise ValueError(f"{path}: field '/{name}' has shape {ds.shape}, expected {(rows,) + tail}")
            if rows:
                try:
                    ds[rows - 1]  # reading the last row fails on a truncated file
                except (OSError, RuntimeError) as exc:
                    raise ValueError(f"{path}: field '/{name}' cannot be read, file truncated or corrupt "
                                     f"({exc})") from None

        check("numbers", n_atoms, "one per atom", ())
        check("positions", n_atoms, "one per atom", (3,))
        self.core = []
        for name, tail in _FRAME_FIELDS.items():
            if name in f:
                check(name, self.num_frames, "one per frame", tail)
                self.core.append(name)
        for name, tail in _ATOM_FIELDS.items():
            if name in f:
                check(name, n_atoms, "one per atom", tail)
                self.core.append(name)
        self.frame_props: dict[str, dict] = {}
        self.atom_props: dict[str, dict] = {}
        self.strings: list[str] = []
        self.ragged: list[str] = []
        for group, rows, what, target in (("properties", self.num_frames, "one per frame", self.frame_props),
                                          ("atom_properties", n_atoms, "one per atom", self.atom_props)):
            for name, ds in f.get(group, {}).items():
                check(f"{group}/{name}", rows, what)
                target[name] = {"shape": tuple(ds.shape[1:]), "dtype": str(ds.dtype),
                                **{k: _attr(v) for k, v in ds.attrs.items()}}
        for name in f.get("strings", {}):
            check(f"strings/{name}", self.num_frames, "one per frame")
            self.strings.append(name)
        for name in f.get("ragged", {}):
            if name.endswith("_offsets"):
                continue
            check(f"ragged/{name}_offsets", self.num_frames + 1, "frames + 1")
            self.ragged.append(name)
        self.units = {name: _attr(f[name].attrs["unit"]) for name in ("positions", *self.core)
                      if "unit" in f[name].attrs}
        self.splits: dict[str, np.ndarray] = {}
        for name, ds in f.get("splits", {}).items():
            idx = ds[()]
            if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
                raise ValueError(f"{path}: split '{name}' is not a 1-D list of integers")
            if idx.size and (idx.min() < 0 or idx.max() >= self.num_frames):
                bad = idx[(idx < 0) | (idx >= self.num_frames)][0]
                raise ValueError(f"{path}: split '{name}' has index {int(bad)} out of range "
                                 f"for {self.num_frames} frames")
            self.splits[name] = idx.astype(np.int64)
        self.atomrefs: dict[str, tuple[np.ndarray, dict]] = {}
        for name, ds in f.get("atomrefs", {}).items():
            self.atomrefs[name] = (ds[()], {k: _attr(v) for k, v in ds.attrs.items()})


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.dtype.kind != "O" else [_attr(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class H5Dataset(torch.utils.data.Dataset):
    """Lazy ``torch`` Dataset over an equipot HDF5 file; ``dataset[i]`` is a :class:`Frame`.

    The file is checked when the dataset is made (format, shapes, splits) and then closed;
    each process (DataLoader worker) opens its own handle on first access, so
    ``num_workers > 0`` is safe. Pickling drops the handle.

    Args:
        path: the ``.h5`` file.
        split: name of a split stored under ``/splits`` (e.g. ``"train"``), or None for all frames.
        indices: frame indices to keep; with ``split`` they index into the split.
        properties: names of the per-frame/per-atom properties to read (default: all).
        in_memory: read whole arrays into memory on first access (fast for small files).
        extras: also read strings and ragged lists into ``Frame.extras``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        properties: Sequence[str] | None = None,
        in_memory: bool = False,
        extras: bool = False,
    ):
        self.path = Path(path)
        self._meta = _Meta(self.path)
        self.split = split
        if split is not None:
            if split not in self._meta.splits:
                known = ", ".join(sorted(self._meta.splits)) or "none"
                raise ValueError(f"{self.path}: no split named '{split}' (splits in the file: {known})")
            base = self._meta.splits[split]
        else:
            base = np.arange(self._meta.num_frames, dtype=np.int64)
        if indices is not None:
            idx = np.asarray(indices)
            if idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"{self.path}: indices must be integers, got dtype {idx.dtype}")
            idx = idx.astype(np.int64).reshape(-1)
            bad = (idx < -len(base)) | (idx >= len(base))
            if bad.any():
                what = f"split '{split}' ({len(base)} frames)" if split else f"{len(base)} frames"
                raise ValueError(f"{self.path}: index {int(idx[np.argmax(bad)])} out of range for {what}")
            base = base[idx]
        self._indices = base
        known = set(self._meta.frame_props) | set(self._meta.atom_props)
        if properties is None:
            self._props = sorted(known)
        else:
            missing = [p for p in properties if p not in known]
            if missing:
                raise ValueError(f"{self.path}: no property named '{missing[0]}' "
                                 f"(properties: {', '.join(sorted(known)) or 'none'})")
            self._props = list(properties)
        self.in_memory = bool(in_memory)
        self.extras = bool(extras)
        self._h5: h5py.File | None = None
        self._arrays: dict[str, Any] | None = None
        self._pid: int | None = None

    # -- process-local handle
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_h5"] = None
        state["_arrays"] = None
        state["_pid"] = None
        return state

    def _load(self) -> dict[str, Any]:
        if self._arrays is not None and self._pid == os.getpid():
            return self._arrays
        # After a fork the parent's handle must not be used; drop it and open our own.
        self._h5 = open_h5(self.path)
        self._pid = os.getpid()
        f = self._h5
        arrays: dict[str, Any] = {"numbers": f["numbers"][()]}
        names = ["positions", *self._meta.core]
        names += [f"properties/{p}" for p in self._props if p in self._meta.frame_props]
        names += [f"atom_properties/{p}" for p in self._props if p in self._meta.atom_props]
        if self.extras:
            names += [f"strings/{s}" for s in self._meta.strings]
            names += [f"ragged/{r}" for r in self._meta.ragged] + [f"ragged/{r}_offsets" for r in self._meta.ragged]
        for name in names:
            ds = f[name]
            per_frame = name in _FRAME_FIELDS or name.startswith(("properties/", "strings/"))
            small = ds.size * ds.dtype.itemsize <= _CACHE_BYTES
            if self.in_memory or (per_frame and small) or name.endswith("_offsets"):
                arrays[name] = ds[()]
            else:
                arrays[name] = ds
        self._arrays = arrays
        return arrays

    def close(self) -> None:
        """Close this process's handle (it is reopened on the next access)."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None
        self._arrays = None
        self._pid = None

    # -- Dataset protocol
    def __len__(self) -> int:
        return int(self._indices.shape[0])

    def __getitem__(self, i: int) -> Frame:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: frame {i} out of range for {n} frames")
        k = int(self._indices[i])
        a, b = int(self._meta.offsets[k]), int(self._meta.offsets[k + 1])
        arrays = self._load()
        current = "numbers"

        def rows(name: str, per_atom: bool = True):
            nonlocal current
            current = name
            return arrays[name][a:b] if per_atom else arrays[name][k]

        try:
            frame = Frame(numbers=rows("numbers").astype(np.int64),
                          positions=np.asarray(rows("positions"), dtype=np.float64), index=k)
            if "energy" in arrays:
                frame.energy = float(rows("energy", False))
            if "forces" in arrays:
                frame.forces = np.asarray(rows("forces"), dtype=np.float64)
            if "cell" in arrays:
                frame.cell = np.asarray(rows("cell", False), dtype=np.float64)
            if "pbc" in arrays:
                frame.pbc = np.asarray(rows("pbc", False), dtype=bool)
            if "stress" in arrays:
                frame.stress = np.asarray(rows("stress", False), dtype=np.float64)
            for p in self._props:
                if p in self._meta.frame_props:
                    frame.properties[p] = np.asarray(rows(f"properties/{p}", False))
                else:
                    frame.atom_properties[p] = np.asarray(rows(f"atom_properties/{p}"))
            if self.extras:
                for name in self._meta.strings:
                    v = rows(f"strings/{name}", False)
                    frame.extras[name] = v.decode() if isinstance(v, bytes) else str(v)
                for name in self._meta.ragged:
                    current = f"ragged/{name}"
                    off = arrays[f"ragged/{name}_offsets"]
                    frame.extras[name] = np.asarray(arrays[current][int(off[k]):int(off[k + 1])])
        except (OSError, RuntimeError) as exc:
            raise ValueError(f"{self.path}: frame {k}: field '/{current}' cannot be read, file truncated "
                             f"or corrupt ({exc})") from None
        return frame

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split else ""
        return f"H5Dataset({str(self.path)!r}{split}, frames={len(self)})"

    # -- metadata
    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes of the file (source, level_of_theory, units, ...)."""
        return dict(self._meta.attrs)

    @property
    def indices(self) -> np.ndarray:
        """File frame indices of this dataset's frames, [len] int64."""
        return self._indices.copy()

    def splits(self) -> dict[str, np.ndarray]:
        """Named splits stored in the file: name -> frame indices (into the whole file)."""
        return {k: v.copy() for k, v in self._meta.splits.items()}

    def property_names(self) -> list[str]:
        """Per-frame and per-atom properties this dataset reads (targets besides energy/forces/stress)."""
        return list(self._props)

    def property_info(self) -> dict[str, dict]:
        """name -> {"per_atom": bool, "shape", "dtype", "unit", "source_unit", "description"} for every
        property in the file."""
        out = {}
        for name, info in self._meta.frame_props.items():
            out[name] = {"per_atom": False, **info}
        for name, info in self._meta.atom_props.items():
            out[name] = {"per_atom": True, **info}
        return out

    def units(self) -> dict[str, str]:
        """Stored unit of every core field and property (eV, Angstrom, ...)."""
        out = dict(self._meta.units)
        for name, info in self.property_info().items():
            if "unit" in info:
                out[name] = info["unit"]
        return out

    def has(self, name: str) -> bool:
        """Whether the file has ``name``: energy, forces, cell, pbc, stress or a property."""
        return (name in self._meta.core or name in self._meta.frame_props or name in self._meta.atom_props
                or name in ("numbers", "positions"))

    def elements(self) -> list[int]:
        """Sorted atomic numbers present in the file."""
        if "elements" in self._meta.attrs:
            return [int(z) for z in np.atleast_1d(self._meta.attrs["elements"])]
        return sorted(int(z) for z in np.unique(self._load()["numbers"]))

    def atomrefs(self) -> dict[str, tuple[np.ndarray, dict]]:
        """Per-element reference values: name -> ([119] array indexed by Z, attrs with 'unit')."""
        return {k: (v.copy(), dict(a)) for k, (v, a) in self._meta.atomrefs.items()}

    def num_atoms(self) -> np.ndarray:
        """Atoms per frame, [len] int64."""
        return (self._meta.offsets[self._indices + 1] - self._meta.offsets[self._indices]).astype(np.int64)

    def numbers_per_frame(self) -> list[np.ndarray]:
        """Atomic numbers of every frame (int64 arrays), without reading positions."""
        numbers = self._load()["numbers"]
        off = self._meta.offsets
        return [numbers[off[k]:off[k + 1]].astype(np.int64) for k in self._indices]

    def energies(self) -> np.ndarray:
        """Energies of every frame, [len] float64 eV."""
        if "energy" not in self._meta.core:
            raise ValueError(f"{self.path}: the file has no field 'energy'")
        return np.asarray(self._load()["energy"][()], dtype=np.float64)[self._indices]

    def property_values(self, name: str) -> np.ndarray:
        """A per-frame property for every frame of this dataset, [len, ...]."""
        if name not in self._meta.frame_props:
            raise ValueError(f"{self.path}: no per-frame property named '{name}'")
        with open_h5(self.path) as f:
            return f[f"properties/{name}"][()][self._indices]

    def strings(self, name: str) -> list[str]:
        """A string field (e.g. SMILES) for every frame of this dataset."""
        if name not in self._meta.strings:
            raise ValueError(f"{self.path}: no string field named '{name}' "
                             f"(strings: {', '.join(self._meta.strings) or 'none'})")
        with open_h5(self.path) as f:
            values = f[f"strings/{name}"].asstr()[()]
        return [str(values[k]) for k in self._indices]

    def subset(self, indices: Sequence[int] | np.ndarray) -> H5Dataset:
        """A dataset over ``self[indices]`` (same file, same options)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise ValueError(f"{self.path}: subset index out of range for {len(self)} frames")
        new = copy.copy(self)
        new._indices = self._indices[idx]
        new._h5 = None
        new._arrays = None
        new._pid = None
        return new


def random_split(
    dataset: H5Dataset,
    lengths: Sequence[int | float],
    seed: int = 0,
) -> list[H5Dataset]:
    """Split ``dataset`` at random into parts of the given sizes.

    ``lengths`` are either frame counts or fractions; fractions that sum to 1 give the rounding
    remainder to the last part, fractions that sum to less leave frames unused.
    The same ``seed`` gives the same split.
    """
    n = len(dataset)
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: no lengths given")
    if all(isinstance(x, (int, np.integer)) for x in lengths):
        sizes = [int(x) for x in lengths]
    else:
        fracs = [float(x) for x in lengths]
        if any(x < 0 for x in fracs) or sum(fracs) > 1 + 1e-9:
            raise ValueError(f"random_split: fractions {fracs} must be >= 0 and sum to at most 1")
        sizes = [int(np.floor(x * n)) for x in fracs]
        if abs(sum(fracs) - 1) < 1e-9:
            sizes[-1] = n - sum(sizes[:-1])
    if any(s < 0 for s in sizes) or sum(sizes) > n:
        raise ValueError(f"random_split: sizes {sizes} exceed the {n} frames of {dataset.path}")
    perm = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for s in sizes:
        out.append(dataset.subset(perm[start:start + s]))
        start += s
    return out
