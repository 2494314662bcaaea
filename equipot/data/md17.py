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
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .conversion import Inputs, Splits, add_splits, collect_splits, open_inputs, progress_bar, relabel_error
from .npz import NpzFile, npz_keys
from .units import KCAL_MOL, energy_factor, length_factor
from .writer import HDF5Writer

RMD17_KEYS = ("nuclear_charges", "coords", "energies", "forces")
RMD17_OLD_KEYS = ("old_indices", "old_energies", "old_forces")
MD17_KEYS = ("R", "z", "E", "F")
_CHUNK_FRAMES = 8192


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


def _check_finite(arr: np.ndarray, path: Path, key: str, start: int) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        flat = np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
        k = int(np.argmin(flat))
        raise ValueError(f"{path}: field '{key}' frame {start + k} contains NaN or inf")


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
    inputs: Inputs,
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
    paths = open_inputs(inputs)
    extra_splits = collect_splits(splits, find_split_files(splits_dir) if splits_dir is not None else None)
    names = _split_names(paths)
    files = [NpzFile(p) for p in paths]
    try:
        checked = [_check_rmd17(npz, keep_old) for npz in files]
        old_sets = {tuple(c[2]) for c in checked}
        if len(old_sets) > 1:
            raise ValueError(f"{paths[0]}: inputs differ in which old_* keys they have; "
                             f"pass keep_old=False to drop them")
        counts = [m if limit is None else min(m, limit) for _, m, _ in checked]
        with HDF5Writer(output, source=", ".join(p.name for p in paths), level_of_theory=level_of_theory,
                        overwrite=overwrite,
                        attrs={"source_format": "rmd17", "molecule": _molecule_name(paths),
                               "source_energy_unit": "kcal/mol", "source_length_unit": "Angstrom"}) as w:
            _write_inputs(w, [lambda bar, npz=npz, c=c, n=n: _write_rmd17_file(w, npz, c[0], n, c[2], bar)
                              for npz, c, n in zip(files, checked, counts)],
                          counts, names, extra_splits, limit, f"rmd17 -> {Path(output).name}", progress)
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


def _write_inputs(w: HDF5Writer, writers: list, counts: list[int], names: list[str | None], extra_splits: Splits,
                  limit: int | None, desc: str, progress: bool) -> None:
    """Write each input (``writers[k](bar)`` writes input k's ``counts[k]`` frames) in order, record
    each named input as a split of its frames, then the extra splits."""
    bar = progress_bar(sum(counts), desc, progress)
    start = 0
    for write, count, name in zip(writers, counts, names):
        write(bar)
        if name is not None:
            w.add_split(name, np.arange(start, start + count))
        start += count
    bar.close()
    add_splits(w, extra_splits, sum(counts), limit)


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
    inputs: Inputs,
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
    paths = open_inputs(inputs)
    extra_splits = collect_splits(splits, find_split_files(splits_dir) if splits_dir is not None else None)
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
        with HDF5Writer(output, source=", ".join(p.name for p in paths), level_of_theory=theory,
                        overwrite=overwrite,
                        attrs={"source_format": "md17", "molecule": ",".join(sorted({i["name"] for i in infos})),
                               "source_energy_unit": e_unit, "source_length_unit": r_unit}) as w:
            _write_inputs(w, [lambda bar, npz=npz, i=i, n=n: _write_md17_file(w, npz, i, n, bar)
                              for npz, i, n in zip(files, infos, counts)],
                          counts, names, extra_splits, limit, f"md17 -> {Path(output).name}", progress)
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
