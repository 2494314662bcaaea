"""The lazy reader of equipot HDF5 files (schema: :mod:`equipot.data.schema`)."""
from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .schema import ATOM_FIELDS, CACHE_BYTES, FORMAT_NAME, FRAME_FIELDS, SCHEMA_VERSION, Frame


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

        def check(name: str, rows: int, what: str, tail: tuple | None = None, numeric: bool = True) -> None:
            ds = f[name]
            if ds.shape[:1] != (rows,):
                raise ValueError(f"{path}: field '/{name}' has {ds.shape[0] if ds.shape else 0} rows, "
                                 f"expected {rows} ({what})")
            if tail is not None and ds.shape[1:] != tail:
                raise ValueError(f"{path}: field '/{name}' has shape {ds.shape}, expected {(rows,) + tail}")
            if numeric and not (np.issubdtype(ds.dtype, np.number) or np.issubdtype(ds.dtype, np.bool_)):
                raise ValueError(f"{path}: field '/{name}' holds {ds.dtype} values, not numbers")
            if rows:
                try:
                    ds[rows - 1]  # reading the last row fails on a truncated file
                except (OSError, RuntimeError) as exc:
                    raise ValueError(f"{path}: field '/{name}' cannot be read, file truncated or corrupt "
                                     f"({exc})") from None

        check("numbers", n_atoms, "one per atom", ())
        check("positions", n_atoms, "one per atom", (3,))
        self.core = []
        for name, tail in FRAME_FIELDS.items():
            if name in f:
                check(name, self.num_frames, "one per frame", tail)
                self.core.append(name)
        for name, tail in ATOM_FIELDS.items():
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
            check(f"strings/{name}", self.num_frames, "one per frame", numeric=False)
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
        self._nonfinite: dict[str, np.ndarray] = {}

    def nonfinite_frames(self, name: str) -> np.ndarray:
        """File frame indices [K] whose field ``name`` (a core field or ``properties/<name>``) holds
        NaN or inf; the whole field is read once, a block at a time, and the answer kept."""
        if name not in self._nonfinite:
            bad: list[np.ndarray] = []
            with open_h5(self.path) as f:
                ds = f[name]
                per_atom = name in ("positions", *ATOM_FIELDS) or name.startswith("atom_properties/")
                step = max(1, (1 << 24) // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:]))))
                for a in range(0, ds.shape[0], step):
                    block = np.asarray(ds[a:a + step], dtype=np.float64).reshape(min(step, ds.shape[0] - a), -1)
                    rows = np.flatnonzero(~np.isfinite(block).all(axis=1)) + a
                    if rows.size:
                        bad.append(np.searchsorted(self.offsets, rows, side="right") - 1 if per_atom else rows)
            self._nonfinite[name] = np.unique(np.concatenate(bad)) if bad else np.zeros(0, dtype=np.int64)
        return self._nonfinite[name]


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.dtype.kind != "O" else [_attr(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class H5Dataset:
    """Lazy map-style dataset over an equipot HDF5 file (what torch's DataLoader takes; torch itself
    is not needed to read it); ``dataset[i]`` is a :class:`Frame`.

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
            per_frame = name in FRAME_FIELDS or name.startswith(("properties/", "strings/"))
            small = ds.size * ds.dtype.itemsize <= CACHE_BYTES
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

    def check_labels(self, property_name: str | None = None) -> None:
        """ValueError naming the file, field and frame of the first frame of this dataset that has
        no atoms, or NaN/inf in its positions, energy, forces or stress (or ``property_name``).

        Training and evaluation call it when they open a dataset; each field of a file is scanned
        once per process.
        """
        empty = np.flatnonzero(self.num_atoms() == 0)
        if empty.size:
            raise ValueError(f"{self.path}: frame {int(self._indices[empty[0]])} has no atoms")
        names = [n for n in ("positions", "energy", "forces", "stress") if n == "positions" or n in self._meta.core]
        if property_name is not None and property_name in self._meta.frame_props:
            names.append(f"properties/{property_name}")
        for name in names:
            bad = np.intersect1d(self._meta.nonfinite_frames(name), self._indices)
            if bad.size:
                raise ValueError(f"{self.path}: field '{name}' is NaN or inf in frame {int(bad[0])}")

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
