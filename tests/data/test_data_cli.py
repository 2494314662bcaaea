"""`equipot convert` and `equipot info` through the command-line entry point."""
from __future__ import annotations

import importlib.util
import json

import ase.io
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Hartree, kcal, mol

from equipot.cli.main import main
from equipot.data import H5Dataset

MOLECULES = ("ethanol", "aspirin", "malonaldehyde", "uracil", "benzene", "toluene")


def test_convert_all_six_real_molecules_and_info(rmd17_dir, tmp_path, capsys):
    for name in MOLECULES:
        out = tmp_path / f"{name}.h5"
        files = [str(rmd17_dir / f"rmd17_{name}_{s}_01.npz") for s in ("train", "test")]
        assert main(["convert", *files, "-o", str(out), "--limit", "5"]) == 0
        ds = H5Dataset(out)
        assert len(ds) == 10 and sorted(ds.splits()) == ["test", "train"]
        assert ds.attrs["source_format"] == "rmd17"
    text = capsys.readouterr().out
    assert "wrote" in text and "splits: test (5), train (5)" in text

    assert main(["info", str(tmp_path / "aspirin.h5")]) == 0
    text = capsys.readouterr().out
    for expected in ("frames: 10", "H(1) C(6) O(8)", "atoms per frame: 21..21", "energy", "eV (source kcal/mol)",
                     "splits: test (5), train (5)", "PBE/def2-SVP", "old_forces"):
        assert expected in text, expected
    assert main(["info", "--json", str(tmp_path / "uracil.h5")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 10 and summary["elements"] == {"H": 1, "C": 6, "N": 7, "O": 8}
    assert summary["fields"]["forces"]["source_unit"] == "kcal/mol/Angstrom"
    ref = np.concatenate([np.load(rmd17_dir / f"rmd17_uracil_{s}_01.npz")["energies"][:5] for s in ("train", "test")])
    assert summary["energy_stats"]["min"] == pytest.approx(ref.min() * kcal / mol, rel=1e-14)
    assert summary["energy_stats"]["max"] == pytest.approx(ref.max() * kcal / mol, rel=1e-14)


def test_convert_detects_formats_and_refuses_overwrite(tmp_path, capsys):
    atoms = molecule("CH4")
    frames = []
    for k in range(3):
        a = atoms.copy()
        a.rattle(0.01, seed=k)
        a.calc = SinglePointCalculator(a, energy=-24.0 - 0.01 * k, forces=np.zeros((5, 3)))
        frames.append(a)
    src = tmp_path / "methane.extxyz"
    ase.io.write(src, frames)
    out = tmp_path / "m.h5"
    (tmp_path / "train.txt").write_text("0\n2\n")
    assert main(["convert", str(src), str(out), "--split", f"train={tmp_path / 'train.txt'}"]) == 0
    ds = H5Dataset(out)
    assert len(ds) == 3 and ds.attrs["source_format"] == "ase"
    np.testing.assert_array_equal(ds.splits()["train"], [0, 2])

    assert main(["convert", str(src), "-o", str(out)]) == 1
    assert "output file exists" in capsys.readouterr().err
    assert main(["convert", str(src), "-o", str(out), "--overwrite", "--limit", "2"]) == 0
    assert len(H5Dataset(out)) == 2

    npz = tmp_path / "md17_methane.npz"
    np.savez(npz, R=np.stack([f.positions for f in frames]), z=atoms.numbers, E=np.full((3, 1), -15000.0),
             F=np.zeros((3, 5, 3)), name=np.array("methane"), theory=np.array("PBE+TS"))
    assert main(["convert", str(npz), "-o", str(tmp_path / "md.h5")]) == 0
    assert H5Dataset(tmp_path / "md.h5").attrs["source_format"] == "md17"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("not a dataset"), "not an HDF5 file"),
        (lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(300)), "truncated or corrupt"),
    ],
)
def test_info_bad_file_is_one_line_error(tmp_path, capsys, make, message):
    path = tmp_path / "broken.h5"
    make(path)
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("equipot info: error:") and "broken.h5" in err and message in err
    assert len(err.splitlines()) == 1


def test_convert_errors(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing.npz"), "-o", str(tmp_path / "o.h5")]) == 1
    assert "missing.npz" in capsys.readouterr().err
    bad = tmp_path / "weird.npz"
    np.savez(bad, a=np.zeros(3))
    assert main(["convert", str(bad), "-o", str(tmp_path / "o.h5")]) == 1
    assert "match neither revised MD17" in capsys.readouterr().err
    assert main(["convert", str(bad)]) == 1
    assert "no output file" in capsys.readouterr().err
    assert not list(tmp_path.glob("o.h5*"))


METHANE_XYZ = """5
gdb 1\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749\t-40.47893\t\
-40.476062\t-40.475117\t-40.498597\t6.469\t
C\t-0.0126981359\t 1.0858041578\t 0.0080009958\t-0.535689
H\t 0.002150416\t-0.0060313176\t 0.0019761204\t 0.133921
H\t 1.0117308433\t 1.4637511618\t 0.0002765748\t 0.133922
H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923
H\t-0.5238136345\t 1.4379326443\t 0.9063972942\t 0.133923
1341.307\t1341.3284\t1341.365\t1562.6731\t1562.7453\t3038.3205\t3151.6034\t3151.6788\t3151.7078
C\tC\t
InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4
"""


def test_convert_qm9_folder_and_qm9pack(tmp_path, capsys):
    folder = tmp_path / "xyz"
    folder.mkdir()
    (folder / "dsgdb9nsd_000001.xyz").write_text(METHANE_XYZ)
    assert main(["convert", str(folder), "-o", str(tmp_path / "q.h5")]) == 0
    ds = H5Dataset(tmp_path / "q.h5")
    assert ds.attrs["source_format"] == "qm9" and ds[0].properties["U0"] == -40.47893 * Hartree
    assert main(["info", str(tmp_path / "q.h5")]) == 0
    assert "eV (source Hartree)" in capsys.readouterr().out
    assert main(["convert", str(folder), "-o", str(tmp_path / "x.h5"), "--splits-dir", str(folder)]) == 1
    assert "--splits-dir applies to" in capsys.readouterr().err
    if importlib.util.find_spec("qm9pack") is None:
        pytest.skip("qm9pack not installed (pip install 'equipot[qm9]')")
    assert main(["convert", "--format", "qm9pack", str(tmp_path / "p.h5"), "--limit", "3"]) == 0
    assert len(H5Dataset(tmp_path / "p.h5")) == 3
