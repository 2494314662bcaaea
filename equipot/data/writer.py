"""The atomic, streaming writer of equipot HDF5 files (schema: :mod:`equipot.data.schema`)."""
from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from .. import __version__
from ..safe_write import check_free_space, output_lock, remove_stale_temporaries, temporary_path
from .schema import (
    CHUNK_BYTES,
    CORE_UNITS,
    FORMAT_NAME,
    MAX_Z,
    SCHEMA_VERSION,
    check_coincident,
    check_name,
    expect_shape,
    find_dataset,
    leaf_name,
    stress_3x3,
)

if TYPE_CHECKING:
    from typing_extensions import Self

# HDF5's chunk cache per dataset: small, so that what is not yet on disk stays small and known.
_CHUNK_CACHE_BYTES = 4 * CHUNK_BYTES



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
    are written. The file is written to a temporary file of its own beside ``path`` (see
    :func:`equipot.safe_write.temporary_path`) and renamed to ``path`` when :meth:`close`
    succeeds; on any exception inside a ``with`` block (or :meth:`abort`) the temporary file is
    deleted and nothing is left behind. While it writes, the writer holds ``path``'s output lock:
    a second writer of the same path fails at once (FileExistsError naming the file). Before each
    block of data goes to disk it checks that the disk has room for it (HDF5 does not survive a
    full disk), so a full disk is one OSError (ENOSPC) and the previous file is untouched.

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
        self._overwrite = overwrite
        self._closed = True  # nothing of ours to clean up until the lock and the temporary file exist
        self._lock = output_lock(self.path)
        self._lock.__enter__()
        try:
            remove_stale_temporaries(self.path)  # what killed writers of this path left behind
            self.tmp_path = temporary_path(self.path)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
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
        try:
            self._file = h5py.File(self.tmp_path, "w", rdcc_nbytes=_CHUNK_CACHE_BYTES)
        except BaseException:
            self.abort()
            raise

    # -- context manager
    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        # A writer dropped without close() must not leave its half-written temporary file.
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
        expect_shape(positions, (n, 3), "positions", f0)
        if forces is not None:
            forces = np.asarray(forces, dtype=np.float64)
            expect_shape(forces, (n, 3), "forces", f0)
        if stress is not None:
            stress = stress_3x3(np.asarray(stress, dtype=np.float64), f0)
        if cell is not None:
            cell = np.asarray(cell, dtype=np.float64)
            expect_shape(cell, (3, 3), "cell", f0)
        if pbc is not None:
            pbc = np.asarray(pbc, dtype=bool)
            expect_shape(pbc, (3,), "pbc", f0)
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
            check_name(name, f0)
            add_item(name, f"properties/{name}", value, False, None)
        for name, value in (atom_properties or {}).items():
            check_name(name, f0)
            add_item(name, f"atom_properties/{name}", value, True, None)
        for name, value in (strings or {}).items():
            check_name(name, f0)
            values = [str(v) for v in value]
            if len(values) != m:
                raise ValueError(f"frame {f0}: field '{name}' has {len(values)} strings, expected {m}")
            items[f"strings/{name}"] = (values, False, "string")
        for name, value in (ragged or {}).items():
            check_name(name, f0)
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
                    raise ValueError(f"frame {k}: field '{leaf_name(path)}' atom {a} contains NaN or inf")
                raise ValueError(f"frame {f0 + bad_row}: field '{leaf_name(path)}' contains NaN or inf")

        check_coincident(positions, local, cell, pbc, f0)

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
                raise ValueError(f"frame {f0}: field '{leaf_name(missing[0])}' is missing "
                                 f"(it is present in earlier frames)")
            if extra:
                raise ValueError(f"frame {f0}: field '{leaf_name(extra[0])}' is present but earlier frames "
                                 f"do not have it")
            for path, (arr, per_atom, kind) in items.items():
                fld = self._fields[path]
                if kind != "array":
                    continue
                if arr.shape[1:] != fld.shape:
                    raise ValueError(f"frame {f0}: field '{leaf_name(path)}' has shape {arr.shape[1:]} per "
                                     f"{'atom' if per_atom else 'frame'}, earlier frames have {fld.shape}")
                if arr.dtype != fld.dtype:
                    # ints after floats are fine; floats after ints would lose data
                    if not np.can_cast(arr.dtype, fld.dtype, "same_kind"):
                        raise ValueError(f"frame {f0}: field '{leaf_name(path)}' has dtype {arr.dtype}, "
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
        check_name(name, None)
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
        check_name(name, None)
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
        rows = int(min(max(CHUNK_BYTES // row, 64), 1 << 16))
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
            # Field by field, each on disk before the next is checked: HDF5 must never meet a full
            # disk itself. The bound is the uncompressed size plus what the chunk cache may hold.
            pending = sum(getattr(v, "nbytes", len(str(v))) + 8 for v in fld.buffer) + 2 * _CHUNK_CACHE_BYTES
            check_free_space(self.path, pending)
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
            self._file.flush()
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
                    f[path].attrs["unit"] = CORE_UNITS[path]
            for name, entry in self._units.items():
                target = find_dataset(f, name)
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
                "created_by": f"equipot {__version__}",
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "num_frames": self._n_frames,
                "num_atoms": self._n_atoms,
                "elements": np.flatnonzero(self._elements).astype(np.int64),
            })
            f.close()
            if self._overwrite:
                os.replace(self.tmp_path, self.path)
            else:  # no clobbering: a file that appeared meanwhile is kept, and this is an error
                try:
                    os.link(self.tmp_path, self.path)
                except FileExistsError:
                    raise FileExistsError(f"{self.path}: output file appeared while writing; kept it "
                                          f"(pass overwrite=True / --overwrite)") from None
                self.tmp_path.unlink()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._lock.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Discard everything: close and delete the temporary file, release the output lock."""
        if self._closed:
            return
        self._closed = True
        if hasattr(self, "_file"):
            with contextlib.suppress(Exception):  # a broken file must still be deleted below
                self._file.close()
        self.tmp_path.unlink(missing_ok=True)
        self._lock.__exit__(None, None, None)
