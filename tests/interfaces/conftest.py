"""LAMMPS for the interface tests: found, or built once from the team's source tarball.

Where LAMMPS comes from, in order:

1. ``EQUIPOT_LAMMPS``: a prefix made by ``tools/build_lammps.sh`` (or any with ``bin/lmp``,
   ``bin/mpirun``, ``lib/`` and the LAMMPS Python module in ``python/``).
2. ``../shared/lammps/lammps-src-2Aug2023.tar.gz`` beside the checkout: built by
   ``tools/build_lammps.sh`` into ``~/.cache/equipot/lammps-<sha256 of the tarball>-py<X.Y>``
   (about 12 minutes on 2 cores, once; outside the clone, so later runs and other clones reuse
   it). A file lock keeps two test runs from building at once, and the build counts only when
   its ``.done`` marker exists (written last, atomically), so an interrupted build is redone.
3. Neither: the tests that need LAMMPS are skipped, saying so.

The build links LAMMPS to this Python's libpython; at run time the embedded interpreter finds
this Python's packages (torch, equipot) because this Python's folder comes first on PATH.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARBALL = REPO.parent / "shared" / "lammps" / "lammps-src-2Aug2023.tar.gz"
BUILD_SCRIPT = REPO / "tools" / "build_lammps.sh"


@dataclass
class LAMMPS:
    """A LAMMPS installation: ``prefix/bin/lmp``, ``prefix/bin/mpirun``."""

    prefix: Path

    def env(self) -> dict[str, str]:
        """The environment LAMMPS runs in: this Python first on PATH, this checkout's equipot."""
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(self.prefix / "bin"), env.get("PATH", "")])
        libs = [str(self.prefix / "lib"), sysconfig.get_config_var("LIBDIR") or ""]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(self.prefix / "python"), env.get("PYTHONPATH", "")])
        env["OMP_NUM_THREADS"] = "1"  # ranks share the 2 cores of CI
        return env

    def run(self, input_text: str, cwd: Path, ranks: int = 1, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``input_text`` on ``ranks`` MPI ranks in ``cwd``; stdout and stderr together in ``.stdout``."""
        (cwd / "in.lammps").write_text(input_text)
        cmd = [str(self.prefix / "bin" / "mpirun"), "-np", str(ranks), str(self.prefix / "bin" / "lmp"),
               "-in", "in.lammps", "-log", "log.lammps", "-nocite"]
        return subprocess.run(cmd, cwd=cwd, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)


def _usable(prefix: Path) -> bool:
    return (prefix / "bin" / "lmp").is_file() and (prefix / "bin" / "mpirun").is_file()


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
        if done.is_file() and _usable(prefix):
            return
        done.unlink(missing_ok=True)
        log = prefix.parent / f"{prefix.name}.log"
        sys.__stderr__.write(f"\nbuilding LAMMPS from {TARBALL} into {prefix} (once, ~12 min; log {log})\n")
        env = {**os.environ, "PYTHON": sys.executable}
        with open(log, "w") as out:
            result = subprocess.run(["bash", str(BUILD_SCRIPT), str(TARBALL), str(prefix)], stdout=out,
                                    stderr=subprocess.STDOUT, env=env)
        if result.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
            pytest.fail(f"building LAMMPS failed (log {log}):\n{tail}", pytrace=False)
        tmp = prefix / ".done.tmp"
        tmp.write_text(f"{TARBALL}\n")
        os.replace(tmp, done)


@pytest.fixture(scope="session")
def lammps() -> LAMMPS:
    """The LAMMPS the tests run (see the module docstring); skips when there is none."""
    given = os.environ.get("EQUIPOT_LAMMPS")
    if given:
        prefix = Path(given)
        if not _usable(prefix):
            pytest.fail(f"EQUIPOT_LAMMPS={given} has no bin/lmp and bin/mpirun", pytrace=False)
        return LAMMPS(prefix)
    if not TARBALL.is_file():
        pytest.skip(f"no LAMMPS: set EQUIPOT_LAMMPS to a prefix built by tools/build_lammps.sh, or put the LAMMPS "
                    f"source at {TARBALL}")
    prefix = _cache_prefix()
    if not ((prefix / ".done").is_file() and _usable(prefix)):
        _build(prefix)
    return LAMMPS(prefix)
