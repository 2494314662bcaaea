"""Targets other than molecular energy + forces: a QM9-style property, periodic stress, float32."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from equipot.cli.main import main
from equipot.data import H5Dataset, HDF5Writer
from equipot.training import load_config, read_metrics, train

from .conftest import TINY


@pytest.fixture(scope="module")
def property_h5(ethanol_h5, tmp_path_factory):
    """Ethanol geometries labelled with a made-up per-molecule property 'gap' (eV) and no energies."""
    path = tmp_path_factory.mktemp("prop") / "gap.h5"
    src = H5Dataset(ethanol_h5, split="train")
    with HDF5Writer(path, source="test") as w:
        for k in range(40):
            f = src[k]
            d = np.linalg.norm(f.positions[:, None] - f.positions[None], axis=-1)
            w.add(f.numbers, f.positions, properties={"gap": 5.0 + float(np.exp(-d).sum() - 9)})
        w.set_units("gap", "eV")
    return path


def test_property_target(property_h5, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(None, [f"data.train_file={property_h5}", "data.valid_size=8", "data.batch_size=8",
                             "train.epochs=3", "train.property=gap", "train.monitor=gap_mae",
                             f"train.run_dir={run}", *TINY])
    summary = train(cfg, log=lambda s: None)
    assert set(summary["valid"]) == {"gap_mae", "gap_rmse", "loss"}
    cols = read_metrics(run / "metrics.csv")
    assert "gap_mae" in cols and "forces_mae" not in cols and len(cols["step"]) == 3
    assert main(["eval", str(run / "model.pt"), str(property_h5), "--property", "gap"]) == 0


def test_unknown_property_is_named(property_h5, tmp_path):
    cfg = load_config(None, [f"data.train_file={property_h5}", "train.property=homo",
                             f"train.run_dir={tmp_path / 'r'}", *TINY])
    with pytest.raises(ValueError, match="no property 'homo'.*gap"):
        train(cfg, log=lambda s: None)


def test_periodic_stress_float32(tmp_path):
    """Rattled fcc copper cells labelled by ASE's EMT (energy, forces, stress); trained in float32."""
    rng = np.random.default_rng(0)
    path = tmp_path / "cu.h5"
    with HDF5Writer(path, source="EMT") as w:
        for k in range(16):
            atoms = bulk("Cu", "fcc", a=3.6 + 0.05 * rng.normal(), cubic=True)
            atoms.rattle(0.05, seed=k)
            atoms.calc = EMT()
            w.add(atoms.numbers, atoms.positions, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                  cell=atoms.cell.array, pbc=atoms.pbc, stress=atoms.get_stress(voigt=False))
    run = tmp_path / "run"
    cfg = load_config(None, [f"data.train_file={path}", "data.valid_size=4", "data.batch_size=4",
                             "train.epochs=2", "train.dtype=float32", "train.stress_weight=10",
                             f"train.run_dir={run}", *TINY])
    summary = train(cfg, log=lambda s: None)
    assert "stress_mae" in summary["valid"] and np.isfinite(summary["valid"]["stress_mae"])
    assert "stress_mae" in read_metrics(run / "metrics.csv")
