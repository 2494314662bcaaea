"""QM9 -> equipot HDF5 from the original ``dsgdb9nsd`` xyz files (``qm9pack``'s CSV files: see
:mod:`equipot.data.qm9pack`).

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

import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from .conversion import add_splits, as_paths, collect_splits, progress_bar
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
#: QM9's ``atomref.txt`` (Ramakrishnan et al. 2014, figshare 1057643): the isolated atoms at the
#: level of theory of the data set, stored by the converters when no other file is given (qm9pack
#: does not ship it)
PUBLISHED_ATOMREFS = """\
   Ele-    ZPVE         U (0 K)      U (298.15 K)    H (298.15 K)    G (298.15 K)     CV
   ment   Hartree       Hartree        Hartree         Hartree         Hartree        Cal/(Mol Kelvin)
    H     0.000000     -0.500273      -0.498857       -0.497912       -0.510927       2.981
    C     0.000000    -37.846772     -37.845355      -37.844411      -37.861317       2.981
    N     0.000000    -54.583861     -54.582445      -54.581501      -54.598897       2.981
    O     0.000000    -75.064579     -75.063163      -75.062219      -75.079532       2.981
    F     0.000000    -99.718730     -99.717314      -99.716370      -99.733544       2.981
"""
XYZ_NAME = re.compile(r"dsgdb9nsd_(\d+)\.xyz$")


def qm9_float(token: str, where: str) -> float:
    """A number as QM9's files write it; ValueError naming ``where``."""
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
    values = np.array([qm9_float(t, f"{name}: line 2: field '{QM9_PROPERTIES[k][0]}'")
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
        positions[a] = [qm9_float(t, f"{name}: line {lineno}: atom {a} position") for t in parts[1:4]]
        charges[a] = qm9_float(parts[4], f"{name}: line {lineno}: atom {a} Mulliken charge")
    freqs = np.array([qm9_float(t, f"{name}: line {na + 3}: frequencies") for t in lines[na + 2].split()])
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
    return parse_atomrefs(path.read_text(encoding="utf-8", errors="replace"), str(path))


def parse_atomrefs(text: str, path: str = "<atomrefs>") -> dict[str, dict[int, float]]:
    """:func:`read_atomrefs` of the text of an ``atomref.txt`` (errors name ``path``)."""
    out: dict[str, dict[int, float]] = {c[0]: {} for c in ATOMREF_COLUMNS}
    for lineno, line in enumerate(text.splitlines(), 1):
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
            out[col][z] = qm9_float(token, f"{path}: line {lineno}: column '{col}'") * factor
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


def set_qm9_units(w: HDF5Writer) -> None:
    """Record the stored and published unit of every QM9 property (the table above)."""
    for name, src, unit, _, desc in QM9_PROPERTIES:
        w.set_units(name, unit, source_unit=src, description=desc)
    w.set_units("energy", "eV", source_unit="Hartree", description="U0, internal energy at 0 K")
    w.set_units("positions", "Angstrom", source_unit="Angstrom")
    w.set_units("index", "", description="molecule index in QM9 (1..133885)")
    w.set_units("mulliken_charges", "e", source_unit="e", description="Mulliken partial charges")
    w.set_units("frequencies", "cm^-1", source_unit="cm^-1", description="harmonic vibrational frequencies")


def add_atomrefs(w: HDF5Writer, atomrefs: str | os.PathLike | None) -> None:
    """Store the isolated-atom values of ``atomref.txt``, or when None those of the published
    file (:data:`PUBLISHED_ATOMREFS`)."""
    if atomrefs is None:
        table, origin = parse_atomrefs(PUBLISHED_ATOMREFS, "PUBLISHED_ATOMREFS"), "QM9's published atomref.txt"
    else:
        table, origin = read_atomrefs(atomrefs), Path(atomrefs).name
    for name, src, unit, _ in ATOMREF_COLUMNS:
        w.add_atomref(name, table[name], unit=unit, source_unit=src,
                      description=f"isolated-atom {name} ({LEVEL_OF_THEORY}) from {origin}")


class MoleculeBatch:
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
    splits: Mapping[str, str | os.PathLike | Sequence[int]] | None = None,
    random_splits: Mapping[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """Convert the original QM9 xyz files (tarball, folder or list of files) into equipot HDF5.

    ``exclude``: path of ``uncharacterized.txt`` (or indices) of molecules to drop.
    ``atomrefs``: path of ``atomref.txt``; stored under ``/atomrefs`` (eV); default: the published
    values (:data:`PUBLISHED_ATOMREFS`).
    ``limit``: stop after that many molecules have been written. Units: see the module docstring.
    ``splits``: name -> index file or frame indices (of the molecules written); ``random_splits``:
    name -> size, disjoint random splits drawn with ``seed`` (e.g. ``{"train": 10000, "valid":
    1000, "test": 2000}``).
    """
    skip = read_exclusions(exclude)
    split_map = collect_splits(splits)
    total = _count_xyz(source)
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    src_name = ", ".join(p.name for p in as_paths(source))
    with HDF5Writer(output, source=src_name, level_of_theory=LEVEL_OF_THEORY, overwrite=overwrite,
                    attrs={"source_format": "qm9", "excluded": len(skip),
                           "source_energy_unit": "Hartree", "source_length_unit": "Angstrom"}) as w:
        add_atomrefs(w, atomrefs)
        bar = progress_bar(total, f"qm9 -> {Path(output).name}", progress, unit="mol")
        batch = MoleculeBatch(w)
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
        add_splits(w, split_map, batch.count, limit, random_splits, seed)
        set_qm9_units(w)
    return Path(output)


def read_exclusions(exclude: str | os.PathLike | Iterable[int] | None) -> set[int]:
    """GDB indices to leave out: from ``uncharacterized.txt`` (a path) or given."""
    if exclude is None:
        return set()
    if isinstance(exclude, (str, os.PathLike)):
        return read_uncharacterized(exclude)
    return {int(i) for i in exclude}


_TAR_SUFFIXES = (".tar", ".tar.bz2", ".tbz2", ".tbz", ".tar.gz", ".tgz", ".tar.xz", ".txz")


def recognises_qm9(path: Path) -> bool:
    """True for the dsgdb9nsd tarball, one of its xyz files, or a folder of them."""
    name = path.name.lower()
    if path.is_dir():
        return any(XYZ_NAME.search(p.name) for p in path.iterdir())
    return (name.endswith(_TAR_SUFFIXES) or (tarfile.is_tarfile(path) and not name.endswith(".xyz"))
            or bool(XYZ_NAME.search(name)))
