"""QM9 -> equipot HDF5, from the original ``dsgdb9nsd`` xyz files or from ``qm9pack``.

Original files (Ramakrishnan et al., Sci. Data 1, 140022 (2014), figshare 978904):
``dsgdb9nsd.xyz.tar.bz2`` holds one ``dsgdb9nsd_NNNNNN.xyz`` per molecule::

    line 1          number of atoms na
    line 2          gdb <index> A B C mu alpha homo lumo gap r2 zpve U0 U H G Cv
    lines 3..na+2   element  x  y  z  mulliken_charge          (Å, e)
    line na+3       harmonic frequencies (cm^-1)
    line na+4       SMILES from GDB-17, SMILES of the relaxed B3LYP geometry
    line na+5       InChI from Corina, InChI of the relaxed B3LYP geometry

Numbers may use Mathematica's ``*^`` exponent (``1.5*^-6``). ``uncharacterized.txt`` lists the
3054 molecules that failed the geometry consistency check (first column = index), and
``atomref.txt`` the per-element energies of the isolated atoms.

Units stored (``unit`` attribute; the published unit in ``source_unit``):

=========  ============================  =================  ==============
name       quantity                      published          stored
=========  ============================  =================  ==============
A, B, C    rotational constants          GHz                GHz
mu         dipole moment                 Debye              Debye
alpha      isotropic polarizability      Bohr^3             Bohr^3
homo       HOMO energy                   Hartree            eV
lumo       LUMO energy                   Hartree            eV
gap        HOMO-LUMO gap                 Hartree            eV
r2         electronic spatial extent     Bohr^2             Bohr^2
zpve       zero-point vibrational energy Hartree            eV
U0         internal energy at 0 K        Hartree            eV
U          internal energy at 298.15 K   Hartree            eV
H          enthalpy at 298.15 K          Hartree            eV
G          free energy at 298.15 K       Hartree            eV
Cv         heat capacity at 298.15 K     cal/(mol K)        cal/(mol K)
=========  ============================  =================  ==============

Energies go to eV, the unit of every energy in equipot; μ, α and R² keep their published
units (Debye, Bohr^3, Bohr^2), the units QM9 results are reported in. ``/energy`` holds U0
(eV) so that a potential can be trained on it directly. Per atom: ``mulliken_charges`` (e);
strings: ``smiles``, ``smiles_relaxed``, ``inchi``, ``inchi_relaxed``; ragged:
``frequencies`` (cm^-1); property ``index`` is the GDB index (1..133885).
"""
from __future__ import annotations

import csv
import importlib.util
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from .conversion import as_paths, progress_bar
from .units import HARTREE
from .writer import HDF5Writer

#: (name, published unit, stored unit, factor published -> stored, description), in file order
QM9_PROPERTIES: list[tuple[str, str, str, float, str]] = [
    ("A", "GHz", "GHz", 1.0, "rotational constant A"),
    ("B", "GHz", "GHz", 1.0, "rotational constant B"),
    ("C", "GHz", "GHz", 1.0, "rotational constant C"),
    ("mu", "Debye", "Debye", 1.0, "dipole moment"),
    ("alpha", "Bohr^3", "Bohr^3", 1.0, "isotropic polarizability"),
    ("homo", "Hartree", "eV", HARTREE, "energy of the highest occupied molecular orbital"),
    ("lumo", "Hartree", "eV", HARTREE, "energy of the lowest unoccupied molecular orbital"),
    ("gap", "Hartree", "eV", HARTREE, "HOMO-LUMO gap"),
    ("r2", "Bohr^2", "Bohr^2", 1.0, "electronic spatial extent"),
    ("zpve", "Hartree", "eV", HARTREE, "zero-point vibrational energy"),
    ("U0", "Hartree", "eV", HARTREE, "internal energy at 0 K"),
    ("U", "Hartree", "eV", HARTREE, "internal energy at 298.15 K"),
    ("H", "Hartree", "eV", HARTREE, "enthalpy at 298.15 K"),
    ("G", "Hartree", "eV", HARTREE, "free energy at 298.15 K"),
    ("Cv", "cal/(mol K)", "cal/(mol K)", 1.0, "heat capacity at 298.15 K"),
]
#: atomref.txt columns after the element symbol
ATOMREF_COLUMNS: list[tuple[str, str, str, float]] = [
    ("zpve", "Hartree", "eV", HARTREE),
    ("U0", "Hartree", "eV", HARTREE),
    ("U", "Hartree", "eV", HARTREE),
    ("H", "Hartree", "eV", HARTREE),
    ("G", "Hartree", "eV", HARTREE),
    ("Cv", "cal/(mol K)", "cal/(mol K)", 1.0),
]
LEVEL_OF_THEORY = "B3LYP/6-31G(2df,p)"
XYZ_NAME = re.compile(r"dsgdb9nsd_(\d+)\.xyz$")


def _float(token: str, where: str) -> float:
    try:
        # Mathematica writes 1.5*^-6 for 1.5e-6
        return float(token.replace("*^", "e"))
    except ValueError:
        raise ValueError(f"{where}: cannot read number {token!r}") from None


def parse_qm9_xyz(text: str, name: str = "<xyz>") -> dict:
    """Parse one QM9 xyz file's text; errors name ``name`` and the line.

    Returns a dict with ``numbers`` [n], ``positions`` [n, 3] Å, ``properties`` (published
    units, QM9_PROPERTIES order) [15], ``index`` int, ``mulliken`` [n] e, ``frequencies`` [k]
    cm^-1, ``smiles``/``smiles_relaxed``/``inchi``/``inchi_relaxed`` str.
    """
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"{name}: empty file")
    try:
        na = int(lines[0].split()[0])
    except ValueError:
        raise ValueError(f"{name}: line 1: expected the number of atoms, got {lines[0][:40]!r}") from None
    if na < 1:
        raise ValueError(f"{name}: line 1: number of atoms {na} must be positive")
    if len(lines) < na + 5:
        raise ValueError(f"{name}: file has {len(lines)} lines, expected {na + 5} for {na} atoms (truncated?)")
    props = lines[1].split()
    if len(props) != 17 or props[0] != "gdb":
        raise ValueError(f"{name}: line 2: expected 'gdb <index>' and 15 properties, got {len(props)} fields")
    try:
        index = int(props[1])
    except ValueError:
        raise ValueError(f"{name}: line 2: field 'index' is not an integer: {props[1]!r}") from None
    values = np.array([_float(t, f"{name}: line 2: field '{QM9_PROPERTIES[k][0]}'")
                       for k, t in enumerate(props[2:])])
    numbers = np.empty(na, dtype=np.int64)
    positions = np.empty((na, 3))
    charges = np.empty(na)
    for a in range(na):
        lineno = a + 3
        parts = lines[a + 2].split()
        if len(parts) != 5:
            raise ValueError(f"{name}: line {lineno}: expected 'element x y z charge', got {len(parts)} fields")
        z = atomic_numbers.get(parts[0])
        if z is None:
            raise ValueError(f"{name}: line {lineno}: unknown element {parts[0]!r}")
        numbers[a] = z
        positions[a] = [_float(t, f"{name}: line {lineno}: atom {a} position") for t in parts[1:4]]
        charges[a] = _float(parts[4], f"{name}: line {lineno}: atom {a} Mulliken charge")
    freqs = np.array([_float(t, f"{name}: line {na + 3}: frequencies") for t in lines[na + 2].split()])
    smiles = lines[na + 3].split()
    inchi = lines[na + 4].split()
    if len(smiles) != 2:
        raise ValueError(f"{name}: line {na + 4}: expected two SMILES strings, got {len(smiles)}")
    if len(inchi) != 2:
        raise ValueError(f"{name}: line {na + 5}: expected two InChI strings, got {len(inchi)}")
    for what, arr in (("properties", values), ("positions", positions), ("Mulliken charges", charges),
                      ("frequencies", freqs)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: field '{what}' contains NaN or inf")
    return {"numbers": numbers, "positions": positions, "properties": values, "index": index,
            "mulliken": charges, "frequencies": freqs, "smiles": smiles[0], "smiles_relaxed": smiles[1],
            "inchi": inchi[0], "inchi_relaxed": inchi[1]}


def read_uncharacterized(path: str | os.PathLike) -> set[int]:
    """Molecule indices from QM9's ``uncharacterized.txt`` (or any file with one index per line).

    Lines whose first field is an integer are entries; headers and separators are skipped.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such exclusion list")
    out = set()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            if parts and parts[0].isdigit():
                out.add(int(parts[0]))
    if not out:
        raise ValueError(f"{path}: no molecule indices found (expected lines starting with an index)")
    return out


def read_atomrefs(path: str | os.PathLike) -> dict[str, dict[int, float]]:
    """Per-element references from QM9's ``atomref.txt``, in stored units (eV; Cv in cal/(mol K)).

    Returns ``{"zpve": {1: ..., 6: ...}, "U0": ..., "U": ..., "H": ..., "G": ..., "Cv": ...}``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such atomrefs file")
    out: dict[str, dict[int, float]] = {c[0]: {} for c in ATOMREF_COLUMNS}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or parts[0] not in atomic_numbers or len(parts) < 2:
                continue
            try:
                float(parts[1])
            except ValueError:
                continue
            if len(parts) != 1 + len(ATOMREF_COLUMNS):
                raise ValueError(f"{path}: line {lineno}: expected element and {len(ATOMREF_COLUMNS)} "
                                 f"values (ZPVE U0 U H G Cv), got {len(parts) - 1}")
            z = atomic_numbers[parts[0]]
            for (col, _, _, factor), token in zip(ATOMREF_COLUMNS, parts[1:]):
                out[col][z] = _float(token, f"{path}: line {lineno}: column '{col}'") * factor
    if not out["U0"]:
        raise ValueError(f"{path}: no element rows found (expected lines like 'H  0.0  -0.500273 ...')")
    return out


def _iter_xyz_sources(source: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[tuple[str, str]]:
    """Yield ``(name, text)`` for every QM9 xyz file of a tarball, folder or list of files."""
    if not isinstance(source, (str, os.PathLike)):
        for p in source:
            yield from _iter_xyz_sources(p)
        return
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if XYZ_NAME.search(p.name))
        if not files:
            raise ValueError(f"{path}: no dsgdb9nsd_*.xyz files in this directory")
        for p in files:
            yield str(p), p.read_text(encoding="utf-8", errors="replace")
        return
    if path.suffix == ".xyz":
        yield str(path), path.read_text(encoding="utf-8", errors="replace")
        return
    if not tarfile.is_tarfile(path):
        raise ValueError(f"{path}: not a tar archive or a directory of QM9 xyz files")
    found = False
    try:
        # Stream mode reads the compressed archive front to back without seeking.
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile() or not XYZ_NAME.search(member.name):
                    continue
                fh = tar.extractfile(member)
                text = fh.read().decode("utf-8", errors="replace")
                found = True
                yield f"{path}:{member.name}", text
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: corrupt or truncated tar archive ({exc})") from None
    if not found:
        raise ValueError(f"{path}: no dsgdb9nsd_*.xyz files in this archive")


def _count_xyz(source) -> int | None:
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            return sum(1 for q in p.iterdir() if XYZ_NAME.search(q.name))
        return 1 if p.suffix == ".xyz" else None
    counts = [_count_xyz(s) for s in source]
    return None if None in counts else sum(counts)


def _set_qm9_units(w: HDF5Writer) -> None:
    for name, src, unit, _, desc in QM9_PROPERTIES:
        w.set_units(name, unit, source_unit=src, description=desc)
    w.set_units("energy", "eV", source_unit="Hartree", description="U0, internal energy at 0 K")
    w.set_units("positions", "Angstrom", source_unit="Angstrom")
    w.set_units("index", "", description="molecule index in QM9 (1..133885)")
    w.set_units("mulliken_charges", "e", source_unit="e", description="Mulliken partial charges")
    w.set_units("frequencies", "cm^-1", source_unit="cm^-1", description="harmonic vibrational frequencies")


def _add_atomrefs(w: HDF5Writer, atomrefs: str | os.PathLike | None) -> None:
    if atomrefs is None:
        return
    table = read_atomrefs(atomrefs)
    for name, src, unit, _ in ATOMREF_COLUMNS:
        w.add_atomref(name, table[name], unit=unit, source_unit=src,
                      description=f"isolated-atom {name} ({LEVEL_OF_THEORY}) from {Path(atomrefs).name}")


class _Batch:
    """Molecules collected for one :meth:`HDF5Writer.add_batch` call (per-frame calls are slow)."""

    def __init__(self, writer: HDF5Writer, size: int = 2048):
        self.writer = writer
        self.size = size
        self.count = 0  # molecules accepted so far, written or pending
        self._reset()

    def _reset(self) -> None:
        self.mols: list[dict] = []
        self.extra: list[dict] = []
        self.names: list[str] = []

    def add(self, mol: dict, name: str, extra: dict | None = None) -> None:
        self.mols.append(mol)
        self.extra.append(extra or {})
        self.names.append(name)
        self.count += 1
        if len(self.mols) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.mols:
            return
        mols = self.mols
        props = np.stack([m["properties"] for m in mols]) * _FACTORS
        properties = {name: props[:, k] for k, (name, *_rest) in enumerate(QM9_PROPERTIES)}
        properties["index"] = np.array([m["index"] for m in mols], dtype=np.int64)
        for key in self.extra[0]:
            properties[key] = np.stack([e[key] for e in self.extra])
        string_keys = [k for k in ("smiles", "smiles_relaxed", "inchi", "inchi_relaxed") if k in mols[0]]
        try:
            self.writer.add_batch(
                np.concatenate([m["numbers"] for m in mols]),
                np.concatenate([m["positions"] for m in mols]),
                [len(m["numbers"]) for m in mols],
                energy=props[:, 10],
                properties=properties,
                atom_properties={"mulliken_charges": np.concatenate([m["mulliken"] for m in mols])},
                strings={k: [m[k] for m in mols] for k in string_keys},
                ragged={"frequencies": [m["frequencies"] for m in mols]},
            )
        except ValueError as exc:
            raise ValueError(f"{self.names[0]} .. {self.names[-1]}: {exc}") from None
        self._reset()


_FACTORS = np.array([p[3] for p in QM9_PROPERTIES])


def convert_qm9(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    exclude: str | os.PathLike | Iterable[int] | None = None,
    atomrefs: str | os.PathLike | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Convert the original QM9 xyz files (tarball, folder or list of files) into equipot HDF5.

    ``exclude``: path of ``uncharacterized.txt`` (or indices) of molecules to drop.
    ``atomrefs``: path of ``atomref.txt``; stored under ``/atomrefs`` (eV).
    ``limit``: stop after that many molecules have been written. Units: see the module docstring.
    """
    skip = _exclusions(exclude)
    total = _count_xyz(source)
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    src_name = ", ".join(p.name for p in as_paths(source))
    with HDF5Writer(output, source=src_name, level_of_theory=LEVEL_OF_THEORY, overwrite=overwrite,
                    attrs={"source_format": "qm9", "excluded": len(skip),
                           "source_energy_unit": "Hartree", "source_length_unit": "Angstrom"}) as w:
        _add_atomrefs(w, atomrefs)
        bar = progress_bar(total, f"qm9 -> {Path(output).name}", progress, unit="mol")
        batch = _Batch(w)
        for name, text in _iter_xyz_sources(source):
            if limit is not None and batch.count >= limit:
                break
            mol = parse_qm9_xyz(text, name)
            if mol["index"] in skip:
                continue
            batch.add(mol, name)
            bar.update(1)
        batch.flush()
        bar.close()
        _set_qm9_units(w)
    return Path(output)


def _exclusions(exclude) -> set[int]:
    if exclude is None:
        return set()
    if isinstance(exclude, (str, os.PathLike)):
        return read_uncharacterized(exclude)
    return {int(i) for i in exclude}


# ----------------------------------------------------------------------------- qm9pack

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
        xx, xy, yy, xz, yz, zz = (_float(row[c] or "", f"{self.path}: molecule {key}: column '{c}'")
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
    props = np.array([_float(row[QM9PACK_COLUMNS[name]], f"{where}: column '{QM9PACK_COLUMNS[name]}'")
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
) -> Path:
    """Convert QM9 as shipped by the PyPI package ``qm9pack==1.0.3`` into equipot HDF5.

    ``source`` is the folder holding ``qm9_part1..3.csv`` (and ``qm9_polarizability.csv``) or
    the CSV files themselves; by default the installed package's data folder. qm9pack already
    leaves out the 3054 uncharacterized molecules (130,831 remain). Same properties and units
    as :func:`convert_qm9`, plus ``alpha_tensor`` [3, 3] (Bohr^3) when the polarizability CSV
    is present; strings ``smiles`` and ``inchi``.

    Values are stored as qm9pack gives them. Note that qm9pack lists the linear molecules 4 and
    24 with z = 1 Å for every atom, apparently a lost ``*^-6`` exponent of the original files;
    it is a rigid translation, so no energy or property changes.
    """
    parts, alpha_path = _qm9pack_files(source)
    skip = _exclusions(exclude)
    alpha = _AlphaTable(alpha_path) if alpha_path is not None else None
    try:
        return _write_qm9pack(output, parts, alpha, skip, atomrefs, limit, overwrite, progress)
    finally:
        if alpha is not None:
            alpha.close()


def _write_qm9pack(output, parts: list[Path], alpha: _AlphaTable | None, skip: set[int], atomrefs,
                   limit: int | None, overwrite: bool, progress: bool) -> Path:
    total = 130831 if limit is None else limit
    with HDF5Writer(output, source="qm9pack 1.0.3: " + ", ".join(p.name for p in parts),
                    level_of_theory=LEVEL_OF_THEORY, overwrite=overwrite,
                    attrs={"source_format": "qm9pack", "excluded": len(skip),
                           "source_energy_unit": "Hartree", "source_length_unit": "Angstrom"}) as w:
        _add_atomrefs(w, atomrefs)
        bar = progress_bar(total, f"qm9pack -> {Path(output).name}", progress, unit="mol")
        batch = _Batch(w)
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
        _set_qm9_units(w)
        w.set_units("alpha_tensor", "Bohr^3", source_unit="Bohr^3",
                    description="static polarizability tensor (xx, xy, xz / xy, yy, yz / xz, yz, zz)")
    return Path(output)


_TAR_SUFFIXES = (".tar", ".tar.bz2", ".tbz2", ".tbz", ".tar.gz", ".tgz", ".tar.xz", ".txz")


def recognises_qm9(path: Path) -> bool:
    """True for the dsgdb9nsd tarball, one of its xyz files, or a folder of them."""
    name = path.name.lower()
    if path.is_dir():
        return any(XYZ_NAME.search(p.name) for p in path.iterdir())
    return (name.endswith(_TAR_SUFFIXES) or (tarfile.is_tarfile(path) and not name.endswith(".xyz"))
            or bool(XYZ_NAME.search(name)))


def recognises_qm9pack(path: Path) -> bool:
    """True for qm9pack's data folder or one of its CSV files."""
    if path.is_dir():
        return (path / QM9PACK_PARTS[0]).exists()
    return path.name.lower() in (*QM9PACK_PARTS, QM9PACK_POLARIZABILITY)
