"""Converter for files ase.io reads: extxyz, ASE db and trajectory round trips, bad inputs."""
from __future__ import annotations

import ase.db
import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import kcal, mol

from equipot.data import H5Dataset, convert_ase


def _periodic_frames(count: int = 4) -> list:
    rng = np.random.default_rng(0)
    frames = []
    for k in range(count):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((1, 1, 1 + k % 2))
        atoms.pbc = [True, True, k != 2]
        atoms.rattle(0.05, seed=k)
        atoms.cell[0, 1] = 0.1 * k
        stress = rng.normal(scale=1e-3, size=6)
        atoms.calc = SinglePointCalculator(atoms, energy=-5.4 * len(atoms) + rng.normal(),
                                           forces=rng.normal(scale=0.5, size=(len(atoms), 3)), stress=stress)
        atoms.info["temperature"] = 300.0 + 10 * k
        atoms.info["step"] = 100 * k
        atoms.info["config_type"] = "bulk" if k % 2 else "slab"
        atoms.info["dipole_guess"] = rng.normal(size=3)
        atoms.arrays["initial_charges_x"] = rng.normal(size=len(atoms))
        frames.append(atoms)
    return frames


def test_extxyz_round_trip_with_stress_pbc_info(tmp_path):
    frames = _periodic_frames()
    src = tmp_path / "train.extxyz"
    ase.io.write(src, frames, format="extxyz")
    ds = H5Dataset(convert_ase(src, tmp_path / "t.h5"), extras=True)
    back = ase.io.read(src, ":")
    assert len(ds) == len(frames)
    for k, ref in enumerate(back):
        fr = ds[k]
        np.testing.assert_array_equal(fr.numbers, ref.numbers)
        np.testing.assert_array_equal(fr.positions, ref.positions)
        np.testing.assert_array_equal(fr.cell, ref.cell.array)
        np.testing.assert_array_equal(fr.pbc, ref.pbc)
        assert fr.energy == ref.get_potential_energy()
        np.testing.assert_array_equal(fr.forces, ref.get_forces())
        np.testing.assert_allclose(fr.stress, ref.get_stress(voigt=False), rtol=0, atol=0)
        assert float(fr.properties["temperature"]) == ref.info["temperature"]
        assert int(fr.properties["step"]) == ref.info["step"]
        np.testing.assert_array_equal(fr.properties["dipole_guess"], ref.info["dipole_guess"])
        np.testing.assert_array_equal(fr.atom_properties["initial_charges_x"], ref.arrays["initial_charges_x"])
        assert fr.extras["config_type"] == ref.info["config_type"]
    assert ds[2].pbc.tolist() == [True, True, False]
    assert ds.property_info()["step"]["dtype"] == "int64"


def test_reference_keys_and_units(tmp_path):
    rng = np.random.default_rng(1)
    frames = []
    for k in range(3):
        atoms = molecule("H2O")
        atoms.rattle(0.02, seed=k)
        atoms.info["REF_energy"] = -47000.0 + rng.normal()
        atoms.arrays["REF_forces"] = rng.normal(scale=20, size=(3, 3))
        frames.append(atoms)
    src = tmp_path / "water.xyz"
    ase.io.write(src, frames, format="extxyz")
    back = ase.io.read(src, ":")
    ds = H5Dataset(convert_ase(src, tmp_path / "w.h5", energy_key="REF_energy", forces_key="REF_forces",
                               energy_unit="kcal/mol"))
    unit = kcal / mol
    for k, ref in enumerate(back):
        assert ds[k].energy == ref.info["REF_energy"] * unit
        np.testing.assert_array_equal(ds[k].forces, ref.arrays["REF_forces"] * unit)
        assert "REF_energy" not in ds[k].properties and "REF_forces" not in ds[k].atom_properties
        assert not ds[k].pbc.any()
    assert ds.attrs["source_energy_unit"] == "kcal/mol"
    with pytest.raises(ValueError, match=r"energy_unit: unknown energy unit 'kcal'"):
        convert_ase(src, tmp_path / "x.h5", energy_unit="kcal")
    with pytest.raises(ValueError, match=r"water.xyz: frame 0: missing key 'nope' in atoms.info"):
        convert_ase(src, tmp_path / "x.h5", energy_key="nope")
    assert not list(tmp_path.glob("x.h5*"))


def test_ase_db_and_trajectory(tmp_path):
    frames = _periodic_frames(3)
    db_path = tmp_path / "frames.db"
    with ase.db.connect(db_path) as db:
        for k, atoms in enumerate(frames):
            db.write(atoms, temperature=float(300 + k), label=f"s{k}", data={"moments": np.arange(3.0) + k})
    ds = H5Dataset(convert_ase(db_path, tmp_path / "db.h5"), extras=True)
    assert len(ds) == 3
    for k, ref in enumerate(frames):
        assert ds[k].energy == ref.get_potential_energy()
        np.testing.assert_array_equal(ds[k].forces, ref.get_forces())
        assert float(ds[k].properties["temperature"]) == 300 + k
        np.testing.assert_array_equal(ds[k].properties["moments"], np.arange(3.0) + k)
        assert ds[k].extras["label"] == f"s{k}"
    traj = tmp_path / "md.traj"
    ase.io.write(traj, frames)
    ds2 = H5Dataset(convert_ase(traj, tmp_path / "traj.h5", limit=2))
    assert len(ds2) == 2
    np.testing.assert_array_equal(ds2[1].stress, frames[1].get_stress(voigt=False))


def test_ase_bad_inputs(tmp_path):
    frames = _periodic_frames(3)
    del frames[2].info["temperature"]
    src = tmp_path / "bad.extxyz"
    ase.io.write(src, frames, format="extxyz")
    with pytest.raises(ValueError, match=r"bad.extxyz: frame 2: key 'temperature' is missing"):
        convert_ase(src, tmp_path / "o.h5")
    frames = _periodic_frames(3)
    forces = frames[1].get_forces()
    forces[3, 1] = np.nan
    frames[1].calc = SinglePointCalculator(frames[1], energy=-1.0, forces=forces, stress=np.zeros(6))
    ase.io.write(src, frames, format="extxyz")
    with pytest.raises(ValueError, match=r"bad.extxyz: frame 1: field 'forces' atom 3 contains NaN"):
        convert_ase(src, tmp_path / "o.h5")
    garbage = tmp_path / "garbage.extxyz"
    garbage.write_text("3\nLattice=\"1 0 0 0 1 0 0 0 1\" Properties=species:S:1:pos:R:3\nH 0 0\n")
    with pytest.raises(ValueError, match=r"garbage.extxyz"):
        convert_ase(garbage, tmp_path / "o.h5")
    assert not list(tmp_path.glob("o.h5*"))
