"""MD17 and revised-MD17 converters: real shared files, published layouts, bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.units import Bohr, Hartree, kcal, mol

from equipot.data import H5Dataset, convert_md17, convert_rmd17

KCAL = kcal / mol


def test_rmd17_real_round_trip_every_number(rmd17_dir, tmp_path):
    train, test = rmd17_dir / "rmd17_ethanol_train_01.npz", rmd17_dir / "rmd17_ethanol_test_01.npz"
    out = convert_rmd17([train, test], tmp_path / "ethanol.h5")
    ds = H5Dataset(out, in_memory=True)
    refs = [np.load(train), np.load(test)]
    assert len(ds) == 2000
    np.testing.assert_array_equal(ds.splits()["train"], np.arange(1000))
    np.testing.assert_array_equal(ds.splits()["test"], np.arange(1000, 2000))
    assert ds.attrs["level_of_theory"] == "PBE/def2-SVP" and ds.attrs["molecule"] == "ethanol"
    assert ds.property_info()["old_energies"]["source_unit"] == "kcal/mol"
    frames = [ds[k] for k in range(len(ds))]
    for part, ref in enumerate(refs):
        got = frames[part * 1000:(part + 1) * 1000]
        z = ref["nuclear_charges"]
        assert all(np.array_equal(f.numbers, z) for f in got)
        np.testing.assert_array_equal(np.stack([f.positions for f in got]), ref["coords"])
        np.testing.assert_array_equal([f.energy for f in got], ref["energies"] * KCAL)
        np.testing.assert_array_equal(np.stack([f.forces for f in got]), ref["forces"] * KCAL)
        np.testing.assert_array_equal([int(f.properties["old_indices"]) for f in got], ref["old_indices"])
        np.testing.assert_array_equal([float(f.properties["old_energies"]) for f in got],
                                      ref["old_energies"] * KCAL)
        np.testing.assert_array_equal(np.stack([f.atom_properties["old_forces"] for f in got]),
                                      ref["old_forces"] * KCAL)
    train_ds = H5Dataset(out, split="test")
    np.testing.assert_array_equal(train_ds[0].positions, refs[1]["coords"][0])


def test_rmd17_full_file_with_official_index_files(rmd17_dir, tmp_path):
    parts = [np.load(rmd17_dir / f"rmd17_benzene_{s}_01.npz") for s in ("test", "train")]
    full = {k: np.concatenate([p[k] for p in parts]) for k in parts[0].files if k != "nuclear_charges"}
    full["nuclear_charges"] = parts[0]["nuclear_charges"]
    src = tmp_path / "rmd17_benzene.npz"
    np.savez(src, **full)
    splits = tmp_path / "splits"
    splits.mkdir()
    rng = np.random.default_rng(0)
    for k in (1, 2):
        perm = rng.permutation(2000)
        (splits / f"index_train_0{k}.csv").write_text("\n".join(map(str, perm[:1000])) + "\n")
        (splits / f"index_test_0{k}.csv").write_text("\n".join(map(str, perm[1000:])) + "\n")
    out = convert_rmd17(src, tmp_path / "benzene.h5", splits_dir=splits, keep_old=False)
    ds = H5Dataset(out)
    assert set(ds.splits()) == {"train_01", "test_01", "train_02", "test_02"}
    assert ds.property_names() == []
    idx = np.loadtxt(splits / "index_test_02.csv", dtype=int)
    sub = H5Dataset(out, split="test_02")
    for i in (0, 500, 999):
        np.testing.assert_array_equal(sub[i].positions, full["coords"][idx[i]])
        assert sub[i].energy == full["energies"][idx[i]] * KCAL

    # the --limit slice keeps the split entries inside the slice
    small = convert_rmd17(src, tmp_path / "small.h5", splits_dir=splits, limit=50)
    for name, sel in H5Dataset(small).splits().items():
        ref = np.loadtxt(splits / f"index_{name}.csv", dtype=int)
        np.testing.assert_array_equal(sel, ref[ref < 50])

    (splits / "index_test_03.csv").write_text("1\n2\n2000\n")
    with pytest.raises(ValueError, match=r"index_test_03.csv: split 'test_03' index 2000 out of range for 2000"):
        convert_rmd17(src, tmp_path / "bad.h5", splits_dir=splits)
    (splits / "index_test_03.csv").write_text("1\nseven\n")
    with pytest.raises(ValueError, match=r"index_test_03.csv: line 2"):
        convert_rmd17(src, tmp_path / "bad.h5", splits_dir=splits)
    assert not list(tmp_path.glob("bad.h5*"))


def _rmd17_like(path, m=6, **changes):
    """A small file in the revised-MD17 layout (realistic ethanol values)."""
    rng = np.random.default_rng(1)
    atoms = molecule("CH3CH2OH")
    data = {
        "nuclear_charges": atoms.numbers.astype(np.uint8),
        "coords": atoms.positions[None] + rng.normal(scale=0.05, size=(m, 9, 3)),
        "energies": -97080.0 + rng.normal(scale=3.0, size=m),
        "forces": rng.normal(scale=30.0, size=(m, 9, 3)),
        "old_indices": rng.integers(0, 555092, size=m),
        "old_energies": -97200.0 + rng.normal(scale=3.0, size=m),
        "old_forces": rng.normal(scale=30.0, size=(m, 9, 3)),
    }
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}
    np.savez_compressed(path, **data)
    return data


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"forces": None}, r"missing key 'forces'"),
        ({"forces": np.zeros((5, 9, 3))}, r"field 'forces' has shape \(5, 9, 3\), expected \(6, 9, 3\)"),
        ({"coords": np.zeros((6, 8, 3))}, r"field 'coords' has shape \(6, 8, 3\), expected \(n_frames, 9, 3\)"),
        ({"energies": np.r_[np.zeros(3), np.nan, np.zeros(2)]}, r"field 'energies' frame 3 contains NaN"),
        ({"nuclear_charges": np.r_[np.zeros(8, np.uint8), 200].astype(np.uint8)}, r"atomic number"),
    ],
)
def test_rmd17_bad_inputs(tmp_path, changes, message):
    src = tmp_path / "rmd17_ethanol.npz"
    _rmd17_like(src, **changes)
    with pytest.raises(ValueError, match=rf"rmd17_ethanol.npz: .*{message}"):
        convert_rmd17(src, tmp_path / "out.h5")
    assert not list(tmp_path.glob("out.h5*"))


def test_rmd17_not_npz_and_corrupt(tmp_path):
    txt = tmp_path / "x.npz"
    txt.write_text("nuclear_charges,coords\n1,2\n")
    with pytest.raises(ValueError, match=r"x.npz: not an .npz file"):
        convert_rmd17(txt, tmp_path / "out.h5")
    src = tmp_path / "rmd17_ethanol.npz"
    _rmd17_like(src, m=400)
    data = src.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.npz"):
        convert_rmd17(cut, tmp_path / "out.h5")
    assert not list(tmp_path.glob("out.h5*"))


def _md17_file(path, e_unit=None, r_unit=None, lattice=None, m=8, e_shape=1):
    """A small file in the original MD17 / sGDML layout (ethanol, kcal/mol, Å)."""
    rng = np.random.default_rng(2)
    atoms = molecule("CH3CH2OH")
    data = {
        "R": atoms.positions[None] + rng.normal(scale=0.05, size=(m, 9, 3)),
        "z": atoms.numbers.astype(np.uint8),
        "E": (-97190.0 + rng.normal(scale=3.0, size=m)).reshape((m, 1) if e_shape else (m,)),
        "F": rng.normal(scale=30.0, size=(m, 9, 3)),
        "name": np.array("ethanol"),
        "theory": np.array("DFT: PBE+TS"),
        "type": np.array("d"),
        "md5": np.array("0123456789abcdef0123456789abcdef"),
    }
    if e_unit:
        data["e_unit"] = np.array(e_unit)
    if r_unit:
        data["r_unit"] = np.array(r_unit)
    if lattice is not None:
        data["lattice"] = lattice
    np.savez_compressed(path, **data)
    return data


def test_md17_original_layout(tmp_path):
    src = tmp_path / "md17_ethanol.npz"
    ref = _md17_file(src)
    ds = H5Dataset(convert_md17(src, tmp_path / "e.h5"))
    assert ds.attrs["level_of_theory"] == "DFT: PBE+TS" and ds.attrs["molecule"] == "ethanol"
    assert ds.attrs["source_energy_unit"] == "kcal/mol"
    for k in range(len(ds)):
        np.testing.assert_array_equal(ds[k].positions, ref["R"][k])
        assert ds[k].energy == ref["E"][k, 0] * KCAL
        np.testing.assert_array_equal(ds[k].forces, ref["F"][k] * KCAL)
        assert ds[k].cell is None
    src2 = tmp_path / "md17_bohr.npz"
    lattice = np.diag([20.0, 21.0, 22.0])
    ref2 = _md17_file(src2, e_unit="Hartree", r_unit="bohr", lattice=lattice, e_shape=0)
    ds2 = H5Dataset(convert_md17(src2, tmp_path / "b.h5", limit=3))
    assert len(ds2) == 3
    np.testing.assert_allclose(ds2[1].positions, ref2["R"][1] * Bohr, rtol=1e-15)
    np.testing.assert_allclose(ds2[1].energy, ref2["E"][1] * Hartree, rtol=1e-15)
    np.testing.assert_allclose(ds2[1].forces, ref2["F"][1] * Hartree / Bohr, rtol=1e-15)
    np.testing.assert_allclose(ds2[1].cell, lattice * Bohr)
    assert ds2[1].pbc.all()


def test_md17_bad_inputs(tmp_path):
    src = tmp_path / "md17_x.npz"
    _md17_file(src, e_unit="furlongs/fortnight")
    with pytest.raises(ValueError, match=r"md17_x.npz: field 'e_unit': unknown energy unit 'furlongs/fortnight'"):
        convert_md17(src, tmp_path / "o.h5")
    _md17_file(src, r_unit="parsec")
    with pytest.raises(ValueError, match=r"md17_x.npz: field 'r_unit': unknown length unit"):
        convert_md17(src, tmp_path / "o.h5")
    rmd = tmp_path / "rmd17_ethanol.npz"
    _rmd17_like(rmd)
    with pytest.raises(ValueError, match=r"missing key 'R' \(this looks like a revised MD17 file"):
        convert_md17(rmd, tmp_path / "o.h5")
    with pytest.raises(ValueError, match=r"missing key 'nuclear_charges' \(this looks like an original MD17"):
        convert_rmd17(src, tmp_path / "o.h5")
    assert not list(tmp_path.glob("o.h5*"))
