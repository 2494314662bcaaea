"""MD17 and revised MD17 ``.npz`` files -> equipot HDF5.

Revised MD17 (Christensen & von Lilienfeld 2020, figshare 10.6084/m9.figshare.12672038),
one ``rmd17_<molecule>.npz`` per molecule with keys

    nuclear_charges [N] uint8, coords [M, N, 3] Å, energies [M] kcal/mol,
    forces [M, N, 3] kcal/mol/Å, old_indices [M] int (row in the original MD17 file),
    old_energies [M] kcal/mol, old_forces [M, N, 3] kcal/mol/Å (original MD17 labels)

and the official splits as plain-text files ``index_train_0X.csv`` / ``index_test_0X.csv``
(one integer per line, X = 1..5). The per-split files ``rmd17_<mol>_train_01.npz`` /
``rmd17_<mol>_test_01.npz`` have the same keys; converting them together gives one HDF5
file with ``/splits/train`` and ``/splits/test``.

Original MD17 (sGDML, quantum-machine.org/gdml): keys ``R`` [M, N, 3], ``z`` [N], ``E``
[M, 1] or [M], ``F`` [M, N, 3] and metadata ``name``, ``theory``, ``type``, ``md5`` and
(newer files) ``r_unit`` (default ``Ang``) and ``e_unit`` (default ``kcal/mol``); a
``lattice`` [3, 3] key marks a periodic dataset.

Energies and forces are stored in eV and eV/Å; the source units are kept in the
``source_unit`` attributes. Arrays are read from the zip members a block of frames at a
time, so a 1M-frame file converts in bounded memory.
"""
from __future__ import annotations

import os
import re
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .units import KCAL_MOL, energy_factor, length_factor
from .writer import HDF5Writer

if TYPE_CHECKING:
    from typing_extensions import Self

RMD17_KEYS = ("nuclear_charges", "coords", "energies", "forces")
RMD17_OLD_KEYS = ("old_indices", "old_energies", "old_forces")
MD17_KEYS = ("R", "z", "E", "F")
_CHUNK_FRAMES = 8192


class NpzFile:
    """Lazy reader of a NumPy ``.npz`` archive: headers first, rows on demand.

    Never unpickles (``allow_pickle=False``). Errors name the file and the key.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file")
        if not zipfile.is_zipfile(self.path):
            with open(self.path, "rb") as fh:
                zip_magic = fh.read(2) == b"PK"
            if zip_magic:
                raise ValueError(f"{self.path}: truncated or corrupt .npz file (zip directory unreadable)")
            raise ValueError(f"{self.path}: not an .npz file (not a zip archive)")
        try:
            self._zip = zipfile.ZipFile(self.path)
            names = self._zip.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"{self.path}: corrupt .npz file ({exc})") from None
        self.keys = [n[:-4] for n in names if n.endswith(".npy")]
        self._headers: dict[str, tuple[tuple, bool, np.dtype]] = {}

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def _open(self, key: str):
        if key not in self.keys:
            raise ValueError(f"{self.path}: missing key '{key}' (keys in the file: {', '.join(self.keys)})")
        fp = self._zip.open(key + ".npy")
        try:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(fp)
            else:
                header = np.lib.format._read_array_header(fp, version)
        except (ValueError, OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            fp.close()
            raise ValueError(f"{self.path}: key '{key}' is not a valid array ({exc})") from None
        return fp, header

    def header(self, key: str) -> tuple[tuple, np.dtype]:
        """``(shape, dtype)`` of an array without reading it."""
        if key not in self._headers:
            fp, header = self._open(key)
            fp.close()
            self._headers[key] = header
        shape, _, dtype = self._headers[key]
        return tuple(shape), dtype

    def read(self, key: str) -> np.ndarray:
        """The whole array (use for small arrays and metadata)."""
        fp, (shape, fortran, dtype) = self._open(key)
        try:
            if dtype.hasobject:
                raise ValueError(f"{self.path}: key '{key}' holds Python objects; refusing to unpickle it")
            count = int(np.prod(shape))
            data = fp.read(count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise ValueError(f"{self.path}: key '{key}' is truncated")
            fp.read(1)  # reaching the end makes zipfile verify the member's CRC
            arr = np.frombuffer(data, dtype=dtype, count=count)
            return arr.reshape(shape, order="F" if fortran else "C").copy()
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise ValueError(f"{self.path}: key '{key}' cannot be read, corrupt file ({exc})") from None
        finally:
            fp.close()

    def read_str(self, key: str) -> str | None:
        """A string metadata entry, or None if absent or not a plain string array."""
        if key not in self.keys:
            return None
        try:
            value = self.read(key)
        except ValueError:
            return None
        if value.dtype.kind not in "US":
            return None
        value = value.reshape(-1)[0] if value.size else ""
        return value.decode() if isinstance(value, bytes) else str(value)

    def iter_rows(self, key: str, chunk: int, limit: int | None = None) -> Iterator[np.ndarray]:
        """Yield consecutive blocks of at most ``chunk`` rows (first axis) of ``key``."""
        fp, (shape, fortran, dtype) = self._open(key)
        try:
            if dtype.hasobject:
                raise ValueError(f"{self.path}: key '{key}' holds Python objects; refusing to unpickle it")
            n = shape[0] if shape else 1
            if limit is not None:
                n = min(n, limit)
            if fortran and len(shape) > 1:
                fp.close()
                arr = self.read(key)
                for a in range(0, n, chunk):
                    yield arr[a:min(a + chunk, n)]
                return
            row_shape = tuple(shape[1:])
            row_bytes = int(np.prod(row_shape)) * dtype.itemsize
            for a in range(0, n, chunk):
                rows = min(chunk, n - a)
                data = fp.read(rows * row_bytes)
                if len(data) != rows * row_bytes:
                    frame = a + len(data) // max(row_bytes, 1)
                    raise ValueError(f"{self.path}: key '{key}' is truncated (frame {frame})")
                if a + rows >= n and limit is None:
                    fp.read(1)  # reaching the end makes zipfile verify the member's CRC
                yield np.frombuffer(data, dtype=dtype).reshape((rows,) + row_shape)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise ValueError(f"{self.path}: key '{key}' cannot be read, corrupt file ({exc})") from None
        finally:
            fp.close()


def npz_keys(path: str | os.PathLike) -> list[str]:
    """Array names in an ``.npz`` file (reads only the zip directory)."""
    with NpzFile(path) as npz:
        return list(npz.keys)


def read_index_file(path: str | os.PathLike) -> np.ndarray:
    """Frame indices from an rMD17 split file: plain text, one integer per line (blank lines ignored)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such split file")
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip().rstrip(",")
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{path}: line {lineno}: expected one integer index, got {text[:40]!r}") from None
            if value != int(value) or value < 0:
                raise ValueError(f"{path}: line {lineno}: index {text!r} is not a non-negative integer")
            out.append(int(value))
    return np.asarray(out, dtype=np.int64)


_SPLIT_FILE = re.compile(r"^index_(train|test|valid|validation|val)_(\d+)\.(csv|txt)$")
_SPLIT_NAME = re.compile(r"_(train|test|valid|validation|val)(?:_(\d+))?$")


def find_split_files(directory: str | os.PathLike) -> dict[str, Path]:
    """Official rMD17 split files in ``directory``: ``index_train_01.csv`` -> ``"train_01"``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: splits directory does not exist")
    found = {}
    for p in sorted(directory.iterdir()):
        m = _SPLIT_FILE.match(p.name)
        if m:
            found[f"{m.group(1)}_{m.group(2)}"] = p
    if not found:
        raise ValueError(f"{directory}: no split files named index_train_XX.csv / index_test_XX.csv")
    return found


def _split_names(paths: Sequence[Path]) -> list[str | None]:
    """``rmd17_x_train_01.npz`` -> ``train``; longer names (``train_01``) only when needed to be unique."""
    short, long = [], []
    for p in paths:
        m = _SPLIT_NAME.search(p.stem)
        short.append(m.group(1) if m else None)
        long.append((m.group(1) + (f"_{m.group(2)}" if m.group(2) else "")) if m else None)
    if len(paths) == 1:
        return [None]
    if None in short:
        return [p.stem for p in paths]
    if len(set(short)) == len(short):
        return short
    if len(set(long)) == len(long):
        return long
    return [p.stem for p in paths]


def _molecule_name(paths: Sequence[Path]) -> str:
    names = set()
    for p in paths:
        stem = _SPLIT_NAME.sub("", p.stem)
        for prefix in ("rmd17_", "md17_"):
            stem = stem.removeprefix(prefix)
        names.add(stem)
    return ",".join(sorted(names))


def relabel_error(exc: ValueError, path: Path | str, base: int) -> ValueError:
    """The writer's ``frame <k>: ...`` error as ``<path>: frame <k - base>: ...`` (frames of this input)."""
    m = re.match(r"^frame (\d+): (.*)$", str(exc), re.DOTALL)
    if m:
        return ValueError(f"{path}: frame {int(m.group(1)) - base}: {m.group(2)}")
    return ValueError(f"{path}: {exc}")


def _check_finite(arr: np.ndarray, path: Path, key: str, start: int) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        flat = np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
        k = int(np.argmin(flat))
        raise ValueError(f"{path}: field '{key}' frame {start + k} contains NaN or inf")


def _collect_splits(
    splits: Mapping[str, str | os.PathLike | Sequence[int] | np.ndarray] | None,
    splits_dir: str | os.PathLike | None,
) -> dict[str, tuple[np.ndarray, str]]:
    out: dict[str, tuple[np.ndarray, str]] = {}
    if splits_dir is not None:
        for name, p in find_split_files(splits_dir).items():
            out[name] = (read_index_file(p), str(p))
    for name, value in (splits or {}).items():
        if isinstance(value, (str, os.PathLike)):
            out[name] = (read_index_file(value), str(value))
        else:
            out[name] = (np.asarray(value, dtype=np.int64).reshape(-1), f"split '{name}'")
    return out


def _add_splits(writer: HDF5Writer, splits: dict[str, tuple[np.ndarray, str]], total: int,
                limit: int | None) -> None:
    for name, (idx, origin) in splits.items():
        if limit is not None:
            # A --limit slice keeps only the split entries that fall inside it.
            idx = idx[idx < total]
        elif idx.size and idx.max() >= total:
            raise ValueError(f"{origin}: split '{name}' index {int(idx.max())} out of range "
                             f"for {total} frames")
        writer.add_split(name, idx)


def _open_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    if not paths:
        raise ValueError("no input files given")
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
    return paths


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, dynamic_ncols=True)


def _check_trajectory(npz, path, z_key: str, r_key: str, e_key: str, f_key: str,
                      energy_shape: str) -> tuple[np.ndarray, int, int]:
    """Check the shapes of an (r)MD17 trajectory from the npz headers, without reading the arrays.

    Returns (atomic numbers [n], n atoms, m frames); ``energy_shape`` is the publisher's shape of
    the energies as shown in the error message (``{m}`` is filled in).
    """
    z = npz.read(z_key)
    if z.ndim != 1 or not np.issubdtype(z.dtype, np.integer):
        raise ValueError(f"{path}: field '{z_key}' has shape {z.shape} dtype {z.dtype}, "
                         f"expected integers of shape (n_atoms,)")
    n = z.shape[0]
    shape, _ = npz.header(r_key)
    if len(shape) != 3 or shape[1:] != (n, 3):
        raise ValueError(f"{path}: field '{r_key}' has shape {shape}, expected (n_frames, {n}, 3)")
    m = shape[0]
    eshape, _ = npz.header(e_key)
    if eshape not in ((m,), (m, 1)):
        raise ValueError(f"{path}: field '{e_key}' has shape {eshape}, expected {energy_shape.format(m=m)}")
    fshape, _ = npz.header(f_key)
    if fshape != (m, n, 3):
        raise ValueError(f"{path}: field '{f_key}' has shape {fshape}, expected ({m}, {n}, 3)")
    return z, n, m


def _check_rmd17(npz: NpzFile, keep_old: bool) -> tuple[np.ndarray, int, list[str]]:
    path = npz.path
    for key in RMD17_KEYS:
        if key not in npz:
            hint = " (this looks like an original MD17 file; use format 'md17')" if "R" in npz else ""
            raise ValueError(f"{path}: missing key '{key}'{hint}")
    z, n, m = _check_trajectory(npz, path, "nuclear_charges", "coords", "energies", "forces", "({m},)")
    old = []
    if keep_old:
        expect = {"old_indices": ((m,), (m, 1)), "old_energies": ((m,), (m, 1)), "old_forces": ((m, n, 3),)}
        for key in RMD17_OLD_KEYS:
            if key in npz:
                s, _ = npz.header(key)
                if s not in expect[key]:
                    raise ValueError(f"{path}: field '{key}' has shape {s}, expected {expect[key][0]}")
                old.append(key)
    return z, m, old


def convert_rmd17(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    splits: Mapping[str, str | os.PathLike | Sequence[int]] | None = None,
    splits_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    keep_old: bool = True,
    level_of_theory: str = "PBE/def2-SVP",
) -> Path:
    """Convert revised-MD17 ``.npz`` files into one equipot HDF5 file.

    Frames of several inputs are concatenated in order. When there are several inputs whose
    names end in ``_train_XX`` / ``_test_XX`` (the per-split files), each input becomes a split
    (``/splits/train``, ``/splits/test``). ``splits_dir`` adds the official split files found
    there (``index_train_01.csv`` -> ``/splits/train_01``), ``splits`` maps names to index
    files or index lists; their indices count frames of the concatenated inputs.

    ``limit`` keeps at most that many frames of each input (a quick slice; split indices past
    the slice are dropped). ``keep_old`` also stores the original MD17 labels as
    ``old_energies`` (per frame, eV), ``old_forces`` (per atom, eV/Å) and ``old_indices``.
    Returns the output path.
    """
    paths = _open_inputs(inputs)
    extra_splits = _collect_splits(splits, splits_dir)
    names = _split_names(paths)
    files = [NpzFile(p) for p in paths]
    try:
        checked = [_check_rmd17(npz, keep_old) for npz in files]
        old_sets = {tuple(c[2]) for c in checked}
        if len(old_sets) > 1:
            raise ValueError(f"{paths[0]}: inputs differ in which old_* keys they have; "
                             f"pass keep_old=False to drop them")
        counts = [m if limit is None else min(m, limit) for _, m, _ in checked]
        total = sum(counts)
        with HDF5Writer(output, source=", ".join(p.name for p in paths), level_of_theory=level_of_theory,
                        overwrite=overwrite,
                        attrs={"source_format": "rmd17", "molecule": _molecule_name(paths),
                               "source_energy_unit": "kcal/mol", "source_length_unit": "Angstrom"}) as w:
            bar = _progress(total, f"rmd17 -> {Path(output).name}", progress)
            start = 0
            for npz, (z, _, old), count, name in zip(files, checked, counts, names):
                _write_rmd17_file(w, npz, z, count, old, bar)
                if name is not None:
                    w.add_split(name, np.arange(start, start + count))
                start += count
            bar.close()
            _add_splits(w, extra_splits, total, limit)
            w.set_units("positions", "Angstrom", source_unit="Angstrom")
            w.set_units("energy", "eV", source_unit="kcal/mol")
            w.set_units("forces", "eV/Angstrom", source_unit="kcal/mol/Angstrom")
            if "old_energies" in old_sets.pop():
                w.set_units("old_energies", "eV", source_unit="kcal/mol",
                            description="key old_energies: in rMD17 the original MD17 (PBE+vdW-TS) energy")
                w.set_units("old_forces", "eV/Angstrom", source_unit="kcal/mol/Angstrom",
                            description="key old_forces: in rMD17 the original MD17 (PBE+vdW-TS) forces")
                w.set_units("old_indices", "", description="key old_indices: in rMD17 the row in the MD17 file")
    finally:
        for npz in files:
            npz.close()
    return Path(output)


def _write_rmd17_file(w: HDF5Writer, npz: NpzFile, z: np.ndarray, count: int, old: list[str], bar) -> None:
    keys = ["coords", "energies", "forces", *old]
    streams = [npz.iter_rows(k, _CHUNK_FRAMES, limit=count) for k in keys]
    start = 0
    for blocks in zip(*streams):
        data = dict(zip(keys, blocks))
        for key in keys:
            _check_finite(data[key], npz.path, key, start)
        props, atom_props = {}, {}
        if "old_indices" in data:
            idx = data["old_indices"].reshape(-1)
            if not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"{npz.path}: field 'old_indices' has dtype {idx.dtype}, expected integers")
            props["old_indices"] = idx.astype(np.int64)
        if "old_energies" in data:
            props["old_energies"] = data["old_energies"].reshape(-1) * KCAL_MOL
        if "old_forces" in data:
            atom_props["old_forces"] = data["old_forces"] * KCAL_MOL
        try:
            w.add_many(z, data["coords"], energy=data["energies"].reshape(-1) * KCAL_MOL,
                       forces=data["forces"] * KCAL_MOL, properties=props, atom_properties=atom_props)
        except ValueError as exc:
            raise relabel_error(exc, npz.path, w.num_frames - start) from None
        start += len(blocks[0])
        bar.update(len(blocks[0]))


def convert_md17(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    splits: Mapping[str, str | os.PathLike | Sequence[int]] | None = None,
    splits_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    level_of_theory: str | None = None,
) -> Path:
    """Convert original-MD17 (sGDML format) ``.npz`` files into one equipot HDF5 file.

    Units come from the ``e_unit`` / ``r_unit`` keys when present (kcal/mol and Å otherwise);
    an unknown unit is an error. A ``lattice`` key [3, 3] makes every frame periodic with that
    cell. ``level_of_theory`` defaults to the file's ``theory`` key. Splits and ``limit`` work
    as in :func:`convert_rmd17`.
    """
    paths = _open_inputs(inputs)
    extra_splits = _collect_splits(splits, splits_dir)
    names = _split_names(paths)
    files = [NpzFile(p) for p in paths]
    try:
        infos = [_check_md17(npz) for npz in files]
        units = {(i["e_unit"], i["r_unit"]) for i in infos}
        if len(units) > 1:
            raise ValueError(f"{paths[0]}: inputs use different units {sorted(units)}")
        e_unit, r_unit = units.pop()
        theory = level_of_theory or ", ".join(sorted({i["theory"] for i in infos if i["theory"]})) or "unknown"
        counts = [i["m"] if limit is None else min(i["m"], limit) for i in infos]
        total = sum(counts)
        with HDF5Writer(output, source=", ".join(p.name for p in paths), level_of_theory=theory,
                        overwrite=overwrite,
                        attrs={"source_format": "md17", "molecule": ",".join(sorted({i["name"] for i in infos})),
                               "source_energy_unit": e_unit, "source_length_unit": r_unit}) as w:
            bar = _progress(total, f"md17 -> {Path(output).name}", progress)
            start = 0
            for npz, info, count, name in zip(files, infos, counts, names):
                _write_md17_file(w, npz, info, count, bar)
                if name is not None:
                    w.add_split(name, np.arange(start, start + count))
                start += count
            bar.close()
            _add_splits(w, extra_splits, total, limit)
            w.set_units("positions", "Angstrom", source_unit=r_unit)
            w.set_units("energy", "eV", source_unit=e_unit)
            w.set_units("forces", "eV/Angstrom", source_unit=f"{e_unit}/{r_unit}")
    finally:
        for npz in files:
            npz.close()
    return Path(output)


def _check_md17(npz: NpzFile) -> dict:
    path = npz.path
    for key in MD17_KEYS:
        if key not in npz:
            hint = " (this looks like a revised MD17 file; use format 'rmd17')" if "coords" in npz else ""
            raise ValueError(f"{path}: missing key '{key}'{hint}")
    z, n, m = _check_trajectory(npz, path, "z", "R", "E", "F", "({m}, 1)")
    e_unit = npz.read_str("e_unit") or "kcal/mol"
    r_unit = npz.read_str("r_unit") or "Ang"
    ef = energy_factor(e_unit, f"{path}: field 'e_unit'")
    rf = length_factor(r_unit, f"{path}: field 'r_unit'")
    lattice = None
    if "lattice" in npz:
        lattice = npz.read("lattice").astype(np.float64)
        if lattice.shape != (3, 3):
            raise ValueError(f"{path}: field 'lattice' has shape {lattice.shape}, expected (3, 3)")
        if not np.isfinite(lattice).all():
            raise ValueError(f"{path}: field 'lattice' contains NaN or inf")
        lattice = lattice * rf
    return {"z": z, "m": m, "e_unit": e_unit, "r_unit": r_unit, "ef": ef, "rf": rf, "lattice": lattice,
            "theory": npz.read_str("theory") or "", "name": npz.read_str("name") or _molecule_name([path])}


def _write_md17_file(w: HDF5Writer, npz: NpzFile, info: dict, count: int, bar) -> None:
    keys = ["R", "E", "F"]
    streams = [npz.iter_rows(k, _CHUNK_FRAMES, limit=count) for k in keys]
    start = 0
    for blocks in zip(*streams):
        data = dict(zip(keys, blocks))
        for key in keys:
            _check_finite(data[key], npz.path, key, start)
        k = len(blocks[0])
        extra = {}
        if info["lattice"] is not None:
            extra["cell"] = np.broadcast_to(info["lattice"], (k, 3, 3))
            extra["pbc"] = np.ones((k, 3), dtype=bool)
        try:
            w.add_many(info["z"], data["R"] * info["rf"], energy=data["E"].reshape(-1) * info["ef"],
                       forces=data["F"] * (info["ef"] / info["rf"]), **extra)
        except ValueError as exc:
            raise relabel_error(exc, npz.path, w.num_frames - start) from None
        start += k
        bar.update(k)


def recognises_rmd17(path: Path) -> bool:
    """True for a revised-MD17 ``.npz`` (keys nuclear_charges, coords, ...)."""
    return path.is_file() and path.name.lower().endswith(".npz") and bool(
        {"nuclear_charges", "coords"} & set(npz_keys(path)))


def recognises_md17(path: Path) -> bool:
    """True for an original-MD17 ``.npz`` (keys R, z, E, F)."""
    return path.is_file() and path.name.lower().endswith(".npz") and bool({"R", "z"} & set(npz_keys(path)))
