"""Helpers shared by the model commands (eval, md, optimize, export)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

# torch is imported inside the helpers: `equipot --help` and the data commands start without it.
DTYPE_NAMES = ("float32", "float64")


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model file (model.pt) or a training run directory")


def add_model_options(parser: argparse.ArgumentParser, dtype: str = "float64") -> None:
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default=dtype, choices=DTYPE_NAMES, help="floating-point precision")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: every core this process may use)")


def check_output(path: str | Path, what: str, suffixes: tuple[str, ...] | None = None, ase_format: bool = False,
                 directory: bool = False, inputs: tuple[str | Path | None, ...] = (),
                 overwrite: bool | None = None) -> Path:
    """``path`` as an output that can be written, checked before any work is done (ValueError /
    FileNotFoundError / IsADirectoryError / FileExistsError naming it): its folder exists, it is not
    a folder (or, with ``directory``, not a file), its name has one of ``suffixes`` or, with
    ``ase_format``, names a format ASE can write; it is none of ``inputs`` (the same file under any
    spelling, through a symlink or a hard link: never, even with --overwrite); and with
    ``overwrite=False`` it does not exist yet (None: the command has no --overwrite)."""
    p = Path(path)
    for source in inputs:
        if source is not None and _same_file(p, Path(source)):
            raise ValueError(f"{what} {p} is the input file {source}: refusing to write over it; give another "
                             f"output path")
    if overwrite is False and (p.exists() or p.is_symlink()) and not p.is_dir():
        raise FileExistsError(f"{what} {p} exists; pass --overwrite to replace it")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"{what} {p}: the folder {parent} does not exist")
    if directory:
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"{what} {p} is a file, not a folder")
        return p
    if p.is_dir():
        raise IsADirectoryError(f"{what} {p} is a folder; give a file name")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise ValueError(f"{what} {p}: unknown file type {p.suffix or '(no suffix)'!r}; use one of "
                         f"{', '.join(suffixes)}")
    if ase_format:
        from ase.io.formats import filetype, ioformats

        try:
            kind = filetype(str(p), read=False)
        except Exception:  # ase raises several kinds for names it cannot place
            kind = None
        if kind not in ioformats or not ioformats[kind].can_write:
            raise ValueError(f"{what} {p}: ASE cannot write a file of this name (use e.g. .extxyz, .xyz, .traj, "
                             f".cif, .pdb, POSCAR)")
    return p


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output file (atomically; never an input file)")


def input_file(path: str | Path, what: str) -> Path:
    """``path`` as an existing file to read (FileNotFoundError / IsADirectoryError naming it)."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{what} {p} is a folder, not a file")
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist")
    return p


def dtype_of(name: str):
    """The torch dtype of a ``--dtype`` name."""
    from ..precision import DTYPES

    return DTYPES[name]


def device_of(name: str):
    """The torch device of a ``--device`` name (ValueError when it is not one, or CUDA is missing)."""
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:N)") from None


def model_inputs(model: str) -> tuple[Path, ...]:
    """The files a model argument reads (a model file, or a run folder's model.pt and checkpoint)."""
    p = Path(model)
    return (p / "model.pt", p / "checkpoint.pt", p / "model_last.pt") if p.is_dir() else (p,)


def load_model_file(path: str, threads: int | None = None):
    """A model from a model file, or from a run directory (its model.pt); sets torch's CPU threads
    (``--threads``) first."""
    from ..potentials.model_file import load_model
    from ..threads import set_threads

    set_threads(threads)
    p = Path(path)
    if p.is_dir():
        if not (p / "model.pt").exists():
            raise FileNotFoundError(f"{p} is a folder without model.pt: give a model file or a training run folder")
        p = p / "model.pt"
    if not p.exists():
        raise FileNotFoundError(f"model file {p} does not exist")
    return load_model(p)


def read_structure(path: str, index: str | int = -1):
    """One structure (ase.Atoms) from any file ASE reads (FileNotFoundError / ValueError naming the file)."""
    import ase.io

    p = input_file(path, "structure file")
    try:
        atoms = ase.io.read(p, index=index)
    except Exception as exc:  # ase raises many kinds; the user needs the file name and the reason
        raise ValueError(f"{p}: cannot read a structure ({type(exc).__name__}: {exc})") from None
    if isinstance(atoms, list):
        atoms = atoms[-1]
    if len(atoms) == 0:
        raise ValueError(f"{p}: the structure has no atoms")
    return atoms


def check_structure_elements(model, atoms, where: str) -> None:
    """ValueError naming the first atom of an element the model does not know."""
    known = set(model.config.elements)
    for k, z in enumerate(atoms.numbers):
        if int(z) not in known:
            from ase.data import chemical_symbols

            raise ValueError(f"{where}: atom {k} is {chemical_symbols[int(z)]} (Z={int(z)}), an element the model "
                             f"was not trained on (it knows Z = {sorted(known)})")


def require_potential(model, path: str, command: str) -> None:
    """ValueError (one line) when ``model`` is a property model: ``command`` needs energies and forces."""
    cfg = model.config
    if not cfg.is_potential:
        raise ValueError(f"{path}: a property model (it predicts {cfg.target!r} in {cfg.target_unit}), not a "
                         f"potential: equipot {command} needs energies and forces (score it with equipot eval)")


def structure_with_calculator(args: argparse.Namespace, **calc_options):
    """The last frame of ``args.structure`` with an EquiCalc of ``args.model`` on ``args.device``
    in ``args.dtype`` attached (``calc_options`` go to EquiCalc, e.g. ``skin``)."""
    from ..calculators.ase import EquiCalc

    model = load_model_file(args.model, args.threads)
    require_potential(model, args.model, args.command)
    atoms = read_structure(args.structure)
    check_structure_elements(model, atoms, args.structure)
    atoms.calc = EquiCalc(model, device=device_of(args.device), dtype=dtype_of(args.dtype), **calc_options)
    return atoms
