"""Any file :func:`ase.io.read` reads (extxyz, ASE db, trajectory, ...) -> equipot HDF5.

Per frame: energy, forces and stress from the attached (single-point) calculator, or from
``atoms.info`` / ``atoms.arrays`` keys you name; cell and pbc always. Every other number in
``atoms.info`` (or an ASE db row's key-value pairs and data) becomes a per-frame property,
every numeric ``atoms.arrays`` entry (charges, magmoms...) a per-atom property, and text
``info`` values become strings. The first frame decides which keys are stored; a later
frame that lacks one is an error, extra keys of later frames are dropped with a warning.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .conversion import add_splits, collect_splits, open_inputs, relabel_error
from .units import energy_factor, length_factor
from .writer import HDF5Writer

_SKIP_ARRAYS = {"numbers", "positions"}
# Calculator results that are stored as core fields rather than properties.
_CORE_RESULTS = {"energy", "forces", "stress"}


def _iter_atoms(path: Path, index: str, fmt: str | None) -> Iterator[Any]:
    """Frames of ``path``; an ASE db keeps its key-value pairs and data in ``atoms.info``."""
    import ase.io

    is_db = fmt in ("db", "json") or (fmt is None and path.suffix == ".db")
    if is_db:
        import ase.db

        try:
            db = ase.db.connect(str(path), type=fmt or "extract_from_name")
            rows = db.select()
            for row in rows:
                atoms = row.toatoms()
                atoms.info.update(row.key_value_pairs)
                for key, value in (row.data or {}).items():
                    atoms.info.setdefault(key, value)
                yield atoms
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - ase.db raises sqlite3 and its own errors on bad files
            raise ValueError(f"{path}: ASE database cannot be read ({type(exc).__name__}: {exc})") from None
        return
    try:
        frames = ase.io.iread(str(path), index=index, format=fmt)
    except Exception as exc:  # noqa: BLE001 - ase.io raises many types for unreadable files
        raise ValueError(f"{path}: ase.io cannot read this file ({type(exc).__name__}: {exc})") from None
    k = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - parser errors come as many types; report them uniformly
            raise ValueError(f"{path}: ase.io cannot read frame {k} ({type(exc).__name__}: {exc})") from None
        yield atoms
        k += 1


def _guess_format(path: Path) -> str:
    from ase.io.formats import UnknownFileTypeError, filetype

    try:
        return filetype(str(path))
    except (UnknownFileTypeError, OSError, ValueError):
        return "unknown"


def _numeric(value: Any) -> np.ndarray | None:
    if isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        return np.asarray(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            arr = np.asarray(value)
        except ValueError:
            return None
        if arr.dtype.kind in "biuf" and arr.size > 0:
            return arr
    return None


def _safe(name: str) -> str:
    return str(name).replace("/", "_") or "_"


def _extract(atoms, ef: float, lf: float, energy_key: str | None, forces_key: str | None,
             stress_key: str | None, where: str) -> dict:
    """The fields of one frame in eV and Å."""
    calc = atoms.calc
    results = dict(getattr(calc, "results", {}) or {}) if calc is not None else {}
    out: dict[str, Any] = {
        "numbers": atoms.numbers,
        "positions": atoms.positions * lf,
        "cell": atoms.cell.array * lf,
        "pbc": atoms.pbc,
    }
    used_info: set[str] = set()
    used_arrays: set[str] = set()

    def pick(key: str | None, result: str, per_atom: bool):
        if key is None:
            return results.get(result)
        src = atoms.arrays if per_atom else atoms.info
        if key in src:
            (used_arrays if per_atom else used_info).add(key)
            return src[key]
        if key in results:
            return results[key]
        raise ValueError(f"{where}: missing key '{key}' in atoms.{'arrays' if per_atom else 'info'}")

    energy = pick(energy_key, "energy", False)
    if energy is not None:
        e = np.asarray(energy, dtype=np.float64)
        if e.size != 1:
            raise ValueError(f"{where}: field 'energy' has shape {e.shape}, expected a number")
        out["energy"] = float(e.reshape(())) * ef
    forces = pick(forces_key, "forces", True)
    if forces is not None:
        f = np.asarray(forces, dtype=np.float64)
        if f.shape != (len(atoms), 3):
            raise ValueError(f"{where}: field 'forces' has shape {f.shape}, expected ({len(atoms)}, 3)")
        out["forces"] = f * (ef / lf)
    stress = pick(stress_key, "stress", False)
    if stress is not None:
        s = np.asarray(stress, dtype=np.float64)
        if s.shape not in ((6,), (3, 3), (9,)):
            raise ValueError(f"{where}: field 'stress' has shape {s.shape}, expected (6,) or (3, 3)")
        out["stress"] = (s.reshape(3, 3) if s.shape == (9,) else s) * (ef / lf**3)

    props: dict[str, np.ndarray] = {}
    atom_props: dict[str, np.ndarray] = {}
    strings: dict[str, str] = {}
    n = len(atoms)
    for key, value in results.items():
        if key in _CORE_RESULTS:
            continue
        arr = _numeric(value)
        if arr is None:
            continue
        if arr.ndim >= 1 and arr.shape[0] == n and key in ("charges", "magmoms", "energies", "stresses"):
            atom_props[_safe(key)] = arr
        else:
            props[_safe(key)] = arr
    for key, value in atoms.info.items():
        if key in used_info or _safe(key) in props:
            continue
        if isinstance(value, str):
            strings[_safe(key)] = value
            continue
        arr = _numeric(value)
        if arr is not None:
            props[_safe(key)] = arr
    for key, value in atoms.arrays.items():
        if key in _SKIP_ARRAYS or key in used_arrays or _safe(key) in atom_props:
            continue
        if value.dtype.kind in "biuf":
            atom_props[_safe(key)] = value
    out["properties"] = props
    out["atom_properties"] = atom_props
    out["strings"] = strings
    return out


def convert_ase(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    index: str = ":",
    format: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    energy_unit: str = "eV",
    length_unit: str = "Angstrom",
    splits: Mapping[str, str | os.PathLike | Sequence[int]] | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    level_of_theory: str = "",
    random_splits: Mapping[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """Convert files that ``ase.io`` reads into one equipot HDF5 file (frames concatenated).

    ``energy_key``/``forces_key``/``stress_key`` name ``atoms.info`` / ``atoms.arrays`` entries
    to use instead of the calculator results (e.g. ``"REF_energy"``). ``energy_unit`` and
    ``length_unit`` give the file's units (forces are energy/length, stress energy/length^3);
    other numbers are stored as they are. ``index`` is an ASE index string (``":"``, ``"::10"``).
    ``splits`` maps split names to index files or lists; ``random_splits`` (name -> size) adds
    disjoint random splits drawn with ``seed``. ``limit`` caps the frame count.
    """
    paths = open_inputs(inputs)
    ef = energy_factor(energy_unit, f"{paths[0]}: option energy_unit")
    lf = length_factor(length_unit, f"{paths[0]}: option length_unit")
    split_map = collect_splits(splits, None)
    from tqdm.auto import tqdm

    dropped: dict[str, int] = {}
    keys: dict[str, set[str]] | None = None
    with HDF5Writer(output, source=", ".join(p.name for p in paths), level_of_theory=level_of_theory,
                    overwrite=overwrite,
                    attrs={"source_format": "ase", "source_energy_unit": energy_unit,
                           "source_length_unit": length_unit}) as w:
        bar = tqdm(total=limit, desc=f"ase -> {Path(output).name}", unit="frame", disable=not progress,
                   dynamic_ncols=True)
        for path in paths:
            if limit is not None and w.num_frames >= limit:
                break
            read = 0
            for k, atoms in enumerate(_iter_atoms(path, index, format)):
                read += 1
                if limit is not None and w.num_frames >= limit:
                    break
                where = f"{path}: frame {k}"
                fields = _extract(atoms, ef, lf, energy_key, forces_key, stress_key, where)
                groups = ("properties", "atom_properties", "strings")
                if keys is None:
                    keys = {g: set(fields[g]) for g in groups}
                for g in groups:
                    for name in list(fields[g]):
                        if name not in keys[g]:
                            dropped[name] = dropped.get(name, 0) + 1
                            del fields[g][name]
                    missing = keys[g] - set(fields[g])
                    if missing:
                        raise ValueError(f"{where}: key '{min(missing)}' is missing "
                                         f"(the first frame has it)")
                try:
                    w.add(**fields)
                except ValueError as exc:
                    raise relabel_error(exc, path, w.num_frames - k) from None
                bar.update(1)
            if read == 0:
                raise ValueError(f"{path}: ase.io read no frames from it (as format "
                                 f"'{format or _guess_format(path)}'); is it a structure file?")
        bar.close()
        add_splits(w, split_map, w.num_frames, None, random_splits, seed)
        w.set_units("positions", "Angstrom", source_unit=length_unit)
        w.set_units("cell", "Angstrom", source_unit=length_unit)
        w.set_units("energy", "eV", source_unit=energy_unit)
        w.set_units("forces", "eV/Angstrom", source_unit=f"{energy_unit}/{length_unit}")
        w.set_units("stress", "eV/Angstrom^3", source_unit=f"{energy_unit}/{length_unit}^3")
    if dropped:
        names = ", ".join(f"{k} ({v} frames)" for k, v in sorted(dropped.items()))
        warnings.warn(f"{output}: keys absent from the first frame were not stored: {names}", stacklevel=2)
    return Path(output)
