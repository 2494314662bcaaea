"""Fixtures of the training tests: a small HDF5 file of real revised-MD17 ethanol frames."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_RMD17 = REPO / ".." / "shared" / "data" / "rmd17"

# A tiny model and run that train in seconds on 2 cores.
TINY = [
    "model.cutoff=4.0", "model.hidden=16", "model.layers=2", "model.r3_only=true", "model.basis_size=8",
    "model.kernel_dim=8", "model.widening=2", "train.device=cpu", "train.progress=false",
]


@pytest.fixture(scope="session")
def ethanol_h5(tmp_path_factory) -> Path:
    """120 training + 120 test frames of rMD17 ethanol (splits 'train' and 'test'), eV and Å."""
    src = SHARED_RMD17.resolve()
    if not (src / "rmd17_ethanol_train_01.npz").exists():
        pytest.skip(f"real rMD17 files not found at {src} (shared/ must sit beside the repository)")
    from equipot.data import convert_rmd17

    out = tmp_path_factory.mktemp("data") / "ethanol.h5"
    convert_rmd17([src / "rmd17_ethanol_train_01.npz", src / "rmd17_ethanol_test_01.npz"], out, limit=120,
                  keep_old=False)
    return out


def cli_env() -> dict[str, str]:
    """Environment for `python -m equipot.cli` subprocesses: this checkout first, one thread each."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "equipot.cli", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"equipot {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
