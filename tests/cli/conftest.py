"""Fixtures of the command-line tests: real rMD17 ethanol frames and a tiny saved model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_RMD17 = REPO / ".." / "shared" / "data" / "rmd17"


@pytest.fixture(scope="session")
def ethanol_h5_cli(tmp_path_factory) -> Path:
    """30 training + 30 test frames of rMD17 ethanol (splits 'train' and 'test')."""
    src = SHARED_RMD17.resolve()
    if not (src / "rmd17_ethanol_train_01.npz").exists():
        pytest.skip(f"real rMD17 files not found at {src} (shared/ must sit beside the repository)")
    from equipot.data import convert_rmd17

    out = tmp_path_factory.mktemp("data") / "ethanol.h5"
    convert_rmd17([src / "rmd17_ethanol_train_01.npz", src / "rmd17_ethanol_test_01.npz"], out, limit=30,
                  keep_old=False)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, ethanol_h5_cli) -> Path:
    """An untrained tiny model for H, C, O with reference energies fitted to the ethanol frames."""
    import torch

    from equipot import build_potential, save_model
    from equipot.data import H5Dataset

    torch.manual_seed(0)
    model = build_potential("ponita", elements=(1, 6, 8), cutoff=4.0, hidden=8, layers=1, r3_only=True,
                            basis_size=6, kernel_dim=6, widening=2, avg_num_neighbors=8.0, scale=0.5)
    data = H5Dataset(ethanol_h5_cli, split="train")
    model.fit_atomic_energies(data.numbers_per_frame(), data.energies())
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(model.double(), path)
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env
