"""QM9 as shipped by the PyPI package ``qm9pack==1.0.3`` -> equipot HDF5.

qm9pack holds QM9 (see :mod:`equipot.data.qm9` for the properties and the units stored) as three
CSV files ``qm9_part1..3.csv``, one molecule per row, plus ``qm9_polarizability.csv`` with the
static polarizability tensors; it already leaves out the 3054 uncharacterized molecules.
"""
from __future__ import annotations

import csv
import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from .conversion import add_splits, as_paths, collect_splits, progress_bar
from .qm9 import LEVEL_OF_THEORY, QM9_PROPERTIES, MoleculeBatch, add_atomrefs, qm9_float, read_exclusions, set_qm9_units
from .writer import HDF5Writer

QM9PACK_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
QM9PACK_POLARIZABILITY = "qm9_polarizability.csv"
#: qm9pack CSV column for each QM9 property (published units)
QM9PACK_COLUMNS = {
    "A": "RotA_GHz", "B": "RotB_GHz", "C": "RotC_GHz", "mu": "Dipole_debye",
    "alpha": "Polarizability_bohr3", "homo": "HOMO_au", "lumo": "LUMO_au", "gap": "HOMO_LUMO_gap_au",
    "r2": "R2_bohr2", "zpve": "ZPVE_au", "U0": "InternalEnergy_0K_au", "U": "InternalEnergy_298K_au",
    "H": "Enthalphy_298K_au", "G": "GibbsFreeEnergy_298K_au", "Cv": "Heatcapacity_Cv_cal_mol_K",
}
_QM9PACK_REQUIRED = ("Index", "SMILES", "InChi", "N_atoms", "Elements", "XYZ_Ang", "Mulliken_pop",
                     "Harmonic_Freq_cmi", *QM9PACK_COLUMNS.values())
_ALPHA_COLUMNS = ("A_xx", "A_xy", "A_yy", "A_xz", "A_yz", "A_zz")


def qm9pack_data_dir() -> Path:
    """The ``data`` folder of the installed ``qm9pack`` package (found without importing it,
    since its ``__init__`` needs pandas and pkg_resources)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("qm9pack is not installed: pip install 'equipot[qm9]' (qm9pack==1.0.3), "
                                "or pass the folder that holds its qm9_part*.csv files")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _qm9pack_files(source: str | os.PathLike | Sequence[str | os.PathLike] | None) -> tuple[list[Path], Path | None]:
    if source is None:
        source = qm9pack_data_dir()
    paths = as_paths(source)
    parts: list[Path] = []
    alpha: Path | None = None
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or directory")
        if p.is_dir():
            found = [p / n for n in QM9PACK_PARTS if (p / n).exists()]
            if not found:
                raise ValueError(f"{p}: no qm9_part*.csv files (expected the qm9pack data folder)")
            parts += found
            if (p / QM9PACK_POLARIZABILITY).exists():
                alpha = p / QM9PACK_POLARIZABILITY
        elif p.name == QM9PACK_POLARIZABILITY:
            alpha = p
        else:
            parts.append(p)
    if not parts:
        raise ValueError("no qm9pack qm9_part*.csv file given")
    return parts, alpha


class _AlphaTable:
    """qm9pack's polarizability CSV, read alongside the main files.

    Both list molecules in the same order, so rows are read on demand and the lookup table
    stays tiny; molecules out of order are still found (they wait in ``pending``).
    """

    def __init__(self, path: Path):
        self.path = path
        # read alongside the main CSV files, so kept open until close()
        self._fh = open(path, newline="", encoding="utf-8")  # noqa: SIM115
        self._reader = csv.DictReader(self._fh)
        missing = [c for c in ("XYZ_file", *_ALPHA_COLUMNS) if c not in (self._reader.fieldnames or [])]
        if missing:
            self.close()
            raise ValueError(f"{path}: missing column '{missing[0]}'")
        self.pending: dict[str, dict] = {}

    def close(self) -> None:
        self._fh.close()

    def get(self, key: str, where: str) -> np.ndarray:
        row = self.pending.pop(key, None)
        while row is None:
            nxt = next(self._reader, None)
            if nxt is None:
                raise ValueError(f"{self.path}: no polarizability tensor for {key!r} ({where})")
            if nxt.get("XYZ_file") == key:
                row = nxt
            else:
                self.pending[nxt.get("XYZ_file", "")] = nxt
        xx, xy, yy, xz, yz, zz = (qm9_float(row[c] or "", f"{self.path}: molecule {key}: column '{c}'")
                                  for c in _ALPHA_COLUMNS)
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def _list_floats(text: str, where: str) -> np.ndarray:
    cleaned = text.replace("[", " ").replace("]", " ").replace("'", " ").replace("*^", "e")
    try:
        return np.array([float(t) for t in cleaned.split(",") if t.strip()], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{where}: cannot read the list of numbers {text[:60]!r}") from None


def _qm9pack_row(row: dict, where: str) -> dict:
    try:
        index = int(row["Index"])
        n = int(row["N_atoms"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: columns 'Index'/'N_atoms' must be integers") from None
    symbols = [s.strip() for s in row["Elements"].strip("[]").replace("'", "").split(",") if s.strip()]
    unknown = [s for s in symbols if s not in atomic_numbers]
    if unknown:
        raise ValueError(f"{where}: column 'Elements' has unknown element {unknown[0]!r}")
    if len(symbols) != n:
        raise ValueError(f"{where}: column 'Elements' has {len(symbols)} atoms, 'N_atoms' says {n}")
    xyz = _list_floats(row["XYZ_Ang"], f"{where}: column 'XYZ_Ang'")
    if xyz.size != 3 * n:
        raise ValueError(f"{where}: column 'XYZ_Ang' has {xyz.size} numbers, expected {3 * n}")
    charges = _list_floats(row["Mulliken_pop"], f"{where}: column 'Mulliken_pop'")
    if charges.size != n:
        raise ValueError(f"{where}: column 'Mulliken_pop' has {charges.size} values, expected {n}")
    freqs = _list_floats(row["Harmonic_Freq_cmi"], f"{where}: column 'Harmonic_Freq_cmi'")
    props = np.array([qm9_float(row[QM9PACK_COLUMNS[name]], f"{where}: column '{QM9PACK_COLUMNS[name]}'")
                      for name, *_ in QM9_PROPERTIES])
    for what, arr in (("XYZ_Ang", xyz), ("Mulliken_pop", charges), ("Harmonic_Freq_cmi", freqs),
                      ("properties", props)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}: column '{what}' contains NaN or inf")
    return {"numbers": np.array([atomic_numbers[s] for s in symbols], dtype=np.int64),
            "positions": xyz.reshape(n, 3), "properties": props, "index": index, "mulliken": charges,
            "frequencies": freqs, "smiles": row["SMILES"], "inchi": row["InChi"]}


def convert_qm9pack(
    output: str | os.PathLike,
    source: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    exclude: str | os.PathLike | Iterable[int] | None = None,
    atomrefs: str | os.PathLike | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    splits: Mapping[str, str | os.PathLike | Sequence[int]] | None = None,
    random_splits: Mapping[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """Convert QM9 as shipped by the PyPI package ``qm9pack==1.0.3`` into equipot HDF5.

    ``source`` is the folder holding ``qm9_part1..3.csv`` (and ``qm9_polarizability.csv``) or
    the CSV files themselves; by default the installed package's data folder. qm9pack already
    leaves out the 3054 uncharacterized molecules (130,831 remain). Same properties and units
    as :func:`convert_qm9`, plus ``alpha_tensor`` [3, 3] (Bohr^3) when the polarizability CSV
    is present; strings ``smiles`` and ``inchi``. The isolated-atom references are QM9's published
    ``atomref.txt`` unless ``atomrefs`` names another file; ``splits``, ``random_splits`` and ``seed``
    as for :func:`~equipot.data.convert_qm9`.

    Values are stored as qm9pack gives them. Note that qm9pack lists the linear molecules 4 and
    24 with z = 1 Å for every atom, apparently a lost ``*^-6`` exponent of the original files;
    it is a rigid translation, so no energy or property changes.
    """
    parts, alpha_path = _qm9pack_files(source)
    skip = read_exclusions(exclude)
    split_map = collect_splits(splits)
    alpha = _AlphaTable(alpha_path) if alpha_path is not None else None
    try:
        return _write_qm9pack(output, parts, alpha, skip, atomrefs, limit, overwrite, progress,
                              lambda w, total: add_splits(w, split_map, total, limit, random_splits, seed))
    finally:
        if alpha is not None:
            alpha.close()


def _write_qm9pack(output, parts: list[Path], alpha: _AlphaTable | None, skip: set[int], atomrefs,
                   limit: int | None, overwrite: bool, progress: bool,
                   finish: Callable[[HDF5Writer, int], None]) -> Path:
    total = 130831 if limit is None else limit
    with HDF5Writer(output, source="qm9pack 1.0.3: " + ", ".join(p.name for p in parts),
                    level_of_theory=LEVEL_OF_THEORY, overwrite=overwrite,
                    attrs={"source_format": "qm9pack", "excluded": len(skip),
                           "source_energy_unit": "Hartree", "source_length_unit": "Angstrom"}) as w:
        add_atomrefs(w, atomrefs)
        bar = progress_bar(total, f"qm9pack -> {Path(output).name}", progress, unit="mol")
        batch = MoleculeBatch(w)
        done = False
        for part in parts:
            with open(part, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                missing = [c for c in _QM9PACK_REQUIRED if c not in (reader.fieldnames or [])]
                if missing:
                    raise ValueError(f"{part}: missing column '{missing[0]}'")
                for lineno, row in enumerate(reader, 2):
                    if limit is not None and batch.count >= limit:
                        done = True
                        break
                    where = f"{part}: row {lineno}"
                    if None in row or any(v is None for v in row.values()):
                        raise ValueError(f"{where}: wrong number of columns")
                    mol = _qm9pack_row(row, where)
                    if mol["index"] in skip:
                        continue
                    extra = {}
                    if alpha is not None:
                        extra["alpha_tensor"] = alpha.get(row.get("XYZ_file", ""), where)
                    batch.add(mol, where, extra)
                    bar.update(1)
            if done:
                break
        batch.flush()
        bar.close()
        finish(w, batch.count)
        set_qm9_units(w)
        w.set_units("alpha_tensor", "Bohr^3", source_unit="Bohr^3",
                    description="static polarizability tensor (xx, xy, xz / xy, yy, yz / xz, yz, zz)")
    return Path(output)


def recognises_qm9pack(path: Path) -> bool:
    """True for qm9pack's data folder or one of its CSV files."""
    if path.is_dir():
        return (path / QM9PACK_PARTS[0]).exists()
    return path.name.lower() in (*QM9PACK_PARTS, QM9PACK_POLARIZABILITY)
