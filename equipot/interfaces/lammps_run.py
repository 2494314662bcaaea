"""Run a LAMMPS built by ``tools/build_lammps.sh`` from Python (tests, benchmarks), and read its output.

The prefix holds ``bin/lmp``, ``bin/mpirun`` (mpich), ``lib/`` (liblammps, libmpi) and the LAMMPS
Python module in ``python/``; the environment is what ``PREFIX/env.sh`` sets, with this Python
and this equipot: this Python's folder first on PATH (the interpreter LAMMPS embeds finds its
packages through it) and this equipot's folder first on PYTHONPATH.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding this equipot


@dataclass
class LAMMPSInstall:
    """A LAMMPS prefix made by ``tools/build_lammps.sh``."""

    prefix: Path

    def usable(self) -> bool:
        return (self.prefix / "bin" / "lmp").is_file() and (self.prefix / "bin" / "mpirun").is_file()

    def env(self, threads: int = 1) -> dict[str, str]:
        """The environment of a run: ``threads`` torch/OpenMP threads per rank."""
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(self.prefix / "bin"), env.get("PATH", "")])
        libs = [str(self.prefix / "lib"), sysconfig.get_config_var("LIBDIR") or ""]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join([str(_PACKAGE_ROOT), str(self.prefix / "python"),
                                             env.get("PYTHONPATH", "")])
        env["OMP_NUM_THREADS"] = str(threads)
        return env

    def run(self, input_text: str, cwd: Path, ranks: int = 1, threads: int = 1,
            timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run ``input_text`` (written to ``cwd/in.lammps``) on ``ranks`` MPI ranks; stdout and
        stderr together in ``.stdout``, the log in ``cwd/log.lammps``."""
        cwd = Path(cwd)
        (cwd / "in.lammps").write_text(input_text)
        cmd = [str(self.prefix / "bin" / "mpirun"), "-np", str(ranks), str(self.prefix / "bin" / "lmp"),
               "-in", "in.lammps", "-log", "log.lammps", "-nocite"]
        return subprocess.run(cmd, cwd=cwd, env=self.env(threads), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)


def thermo_table(output: str, which: int = 0) -> np.ndarray:
    """Rows [steps, columns] of the ``which``-th thermo table in LAMMPS's output (after a 'Step' header)."""
    lines = output.splitlines()
    headers = [k for k, line in enumerate(lines) if line.split()[:1] == ["Step"]]
    rows = []
    for line in lines[headers[which] + 1:]:
        if not re.fullmatch(r"\s*[-+0-9.eE ]+", line):
            break
        rows.append([float(v) for v in line.split()])
    return np.array(rows)


def loop_times(output: str) -> list[tuple[float, int]]:
    """(seconds, steps) of every ``run`` in LAMMPS's output ('Loop time of T on P procs for N steps')."""
    return [(float(t), int(n)) for t, n in re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps",
                                                      output)]


def read_dump(path: str | os.PathLike) -> np.ndarray:
    """The first snapshot of a LAMMPS text dump, [atoms, columns]."""
    lines = Path(path).read_text().splitlines()
    n = int(lines[3])
    return np.array([[float(v) for v in line.split()] for line in lines[9:9 + n]])


def write_data(atoms: Atoms, path: str | os.PathLike, elements: tuple[int, ...] | list[int]) -> None:
    """A LAMMPS data file (atom_style atomic) of ``atoms`` in an orthorhombic box from the origin:
    atom type k + 1 is ``elements[k]``, masses ASE's (so LAMMPS and ASE move the same atoms),
    positions to the last bit."""
    cell = atoms.cell.array
    if np.abs(cell - np.diag(np.diag(cell))).max() > 0:
        raise ValueError("write_data needs an orthorhombic cell")
    types = {int(z): k + 1 for k, z in enumerate(elements)}
    lines = [f"written by equipot\n\n{len(atoms)} atoms\n{len(types)} atom types\n"]
    lines += [f"0 {d:.17g} {name}lo {name}hi" for d, name in zip(np.diag(cell), "xyz")]
    lines += ["\nMasses\n"] + [f"{k} {float(atomic_masses[z])!r}" for z, k in types.items()] + ["\nAtoms # atomic\n"]
    lines += [f"{k + 1} {types[int(z)]} {p[0]:.17g} {p[1]:.17g} {p[2]:.17g}"
              for k, (z, p) in enumerate(zip(atoms.numbers, atoms.positions))]
    Path(path).write_text("\n".join(lines) + "\n")
