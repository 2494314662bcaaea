"""LAMMPS for the interface tests: found, or built once from the team's source tarball.

Where LAMMPS comes from, in order:

1. ``EQUIPOT_LAMMPS``: a prefix made by ``tools/build_lammps.sh`` (or any with ``bin/lmp``,
   ``bin/mpirun``, ``lib/`` and the LAMMPS Python module in ``python/``).
2. ``../shared/lammps/lammps-src-2Aug2023.tar.gz`` beside the checkout: built by
   ``tools/build_lammps.sh`` into ``~/.cache/equipot/lammps-<sha256 of the tarball>-py<X.Y>``
   (4-10 minutes on 2 cores, once; outside the clone, so later runs and other clones reuse
   it). A file lock keeps two test runs from building at once, and the build counts only when
   its ``.done`` marker exists (written last, atomically), so an interrupted build is redone.
3. Neither, or the build's prerequisites (cmake, a compiler, PyPI for mpich and cython) are
   missing: the tests that need LAMMPS are skipped, saying so. A build that starts and then
   fails is a test failure.

The build links LAMMPS to this Python's libpython; at run time the embedded interpreter finds
this Python's packages (torch, equipot) because this Python's folder comes first on PATH
(:class:`equipot.interfaces.lammps_run.LAMMPSInstall`).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from equipot.interfaces.lammps_run import LAMMPSInstall

REPO = Path(__file__).resolve().parents[2]
TARBALL = REPO.parent / "shared" / "lammps" / "lammps-src-2Aug2023.tar.gz"
BUILD_SCRIPT = REPO / "tools" / "build_lammps.sh"


def _cache_prefix() -> Path:
    digest = hashlib.sha256(TARBALL.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "equipot"
    return cache / f"lammps-{digest}-py{sys.version_info[0]}.{sys.version_info[1]}"


def _build(prefix: Path) -> None:
    """Build into ``prefix`` under a lock; the ``.done`` marker says a build finished."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    done = prefix / ".done"
    with open(prefix.parent / f"{prefix.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second test run waits here, then finds the marker
        if done.is_file() and LAMMPSInstall(prefix).usable():
            return
        done.unlink(missing_ok=True)
        log = prefix.parent / f"{prefix.name}.log"
        sys.__stderr__.write(f"\nbuilding LAMMPS from {TARBALL} into {prefix} (once, 4-10 min; log {log})\n")
        env = {**os.environ, "PYTHON": sys.executable}
        with open(log, "w") as out:
            result = subprocess.run(["bash", str(BUILD_SCRIPT), str(TARBALL), str(prefix)], stdout=out,
                                    stderr=subprocess.STDOUT, env=env)
        if result.returncode == 3:  # no compiler, cmake or PyPI here: nothing equipot can fix
            tail = log.read_text().strip().splitlines()[-1:]
            pytest.skip(f"cannot build LAMMPS here: {' '.join(tail)} (log {log})")
        if result.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
            pytest.fail(f"building LAMMPS failed (log {log}):\n{tail}", pytrace=False)
        tmp = prefix / ".done.tmp"
        tmp.write_text(f"{TARBALL}\n")
        os.replace(tmp, done)


@pytest.fixture(scope="session")
def lammps() -> LAMMPSInstall:
    """The LAMMPS the tests run (see the module docstring); skips when there is none."""
    given = os.environ.get("EQUIPOT_LAMMPS")
    if given:
        install = LAMMPSInstall(Path(given))
        if not install.usable():
            pytest.fail(f"EQUIPOT_LAMMPS={given} has no bin/lmp and bin/mpirun", pytrace=False)
        return install
    if not TARBALL.is_file():
        pytest.skip(f"no LAMMPS: set EQUIPOT_LAMMPS to a prefix built by tools/build_lammps.sh, or put the LAMMPS "
                    f"source at {TARBALL}")
    install = LAMMPSInstall(_cache_prefix())
    if not ((install.prefix / ".done").is_file() and install.usable()):
        _build(install.prefix)
    return install
