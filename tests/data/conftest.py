"""Fixtures of the data tests: the shared real revised-MD17 files."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_RMD17 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "rmd17"
MOLECULES = ("ethanol", "aspirin", "malonaldehyde", "uracil", "benzene", "toluene")


@pytest.fixture(scope="session")
def rmd17_dir() -> Path:
    """Folder of the real rMD17 split-01 files (skips the test when shared/ is not beside the repo)."""
    path = SHARED_RMD17.resolve()
    if not (path / "rmd17_ethanol_train_01.npz").exists():
        pytest.skip(f"real rMD17 files not found at {path} (shared/ must sit beside the repository)")
    return path
