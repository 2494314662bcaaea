"""QM9 converters: the original dsgdb9nsd xyz files (folder, tarball) and qm9pack's CSV files.

The small files written here follow the published formats (Ramakrishnan et al. 2014 and the
qm9pack 1.0.3 CSV header); values are those of molecules 1, 2, 3 and 212 of QM9.
"""
from __future__ import annotations

import importlib.util
import tarfile

import numpy as np
import pytest
from ase.units import Hartree

from equipot.data import H5Dataset, convert_qm9, convert_qm9pack, read_atomrefs, read_uncharacterized
from equipot.data.qm9 import QM9_PROPERTIES

# index, properties line (A .. Cv), atoms (symbol, x, y, z, Mulliken), frequencies, SMILES pair, InChI pair
MOLECULES = [
    (1, ("157.7118 157.70997 157.70699 0. 13.21 -0.3877 0.1171 0.5048 35.3641 0.044749 -40.47893 -40.476062 "
        "-40.475117 -40.498597 6.469"),
     [("C", "-0.0126981359", "1.0858041578", "0.0080009958", "-0.535689"),
      ("H", "0.002150416", "-0.0060313176", "0.0019761204", "0.133921"),
      ("H", "1.0117308433", "1.4637511618", "0.0002765748", "0.133922"),
      ("H", "-0.540815069", "1.4475266138", "-0.8766437152", "0.133923"),
      ("H", "-0.5238136345", "1.4379326443", "0.9063972942", "0.133923")],
     "1341.307 1341.3284 1341.365 1562.6731 1562.7453 3038.3205 3151.6034 3151.6788 3151.7078",
     ("C", "C"), ("InChI=1S/CH4/h1H4", "InChI=1S/CH4/h1H4")),
    (2, ("293.60975 293.54111 191.39397 1.6256 9.46 -0.257 0.0829 0.3399 26.1563 0.034358 -56.525887 "
        "-56.523026 -56.522082 -56.544961 6.316"),
     [("N", "-0.0404260543", "1.0241077531", "0.0625637998", "-0.707143"),
      ("H", "0.0172574639", "0.0125452063", "-0.0273771593", "0.235712"),
      ("H", "0.9157893661", "1.3587451948", "-0.0287577581", "0.235712"),
      ("H", "-0.5202777357", "1.3435321258", "-0.7755426124", "0.23572")],
     "1103.8733 1684.1158 1684.3072 3458.7145 3575.2414 3575.3343",
     ("N", "N"), ("InChI=1S/H3N/h1H3", "InChI=1S/H3N/h1H3")),
    (3, ("799.58812 437.90386 282.94545 1.8511 6.31 -0.2928 0.0687 0.3615 19.0002 0.021375 -76.404702 "
        "-76.401867 -76.400922 -76.422349 6.002"),
     [("O", "-0.0343604951", "0.9775395708", "0.0076015923", "-0.589706"),
      ("H", "0.0647664923", "0.0205721989", "0.0015346341", "0.294853"),
      ("H", "0.8717903737", "1.3007924048", "0.0006931336", "0.294853")],
     "1671.4222 3803.6305 3907.698",
     ("O", "O"), ("InChI=1S/H2O/h1H2", "InChI=1S/H2O/h1H2")),
    (212, ("8.71953 3.56689 2.57362 2.0318 55.54 -0.2006 0.0463 0.2469 510.1975 0.110002 -249.387499 "
          "-249.381908 -249.380963 -249.416542 20.193"),
     [("C", "2.1997*^-6", "1.4462618059", "0.0098312216", "-0.335446"),
      ("N", "-0.0395853465", "-0.0001481182", "0.0022628164", "0.039731"),
      ("C", "-0.0102031441", "-0.7914294915", "-1.1197711939", "-0.096411"),
      ("C", "0.0424480479", "-2.1071237431", "-0.7205292439", "-0.16246"),
      ("C", "0.051416093", "-2.1148079393", "0.7011850782", "-0.162537"),
      ("C", "0.0029673515", "-0.8035395846", "1.1152367693", "-0.0964"),
      ("H", "1.027926131", "1.828132226", "0.0028554018", "0.136776"),
      ("H", "-0.5211791052", "1.8337374247", "-0.8690329378", "0.139105"),
      ("H", "-0.5054481987", "1.8237838058", "0.9020802045", "0.139122"),
      ("H", "-0.0304306812", "-0.3464381728", "-2.1023011685", "0.108555"),
      ("H", "0.0571095205", "-2.9656370805", "-1.3743309873", "0.090693"),
      ("H", "0.0741869784", "-2.9803348886", "1.3454340259", "0.090693"),
      ("H", "-0.0055890963", "-0.3691945839", "2.1026885337", "0.108578")],
     ("84.7872 189.0812 356.3627 619.1378 624.1803 674.909 679.7685 740.2186 794.6395 847.8113 885.4596 "
     "986.4404 1065.0089 1082.5292 1112.0581 1115.044 1149.8349 1295.9374 1325.3584 1405.4785 1421.6329 "
     "1453.8035 1489.2357 1513.4836 1545.1919 1561.1991 3027.4816 3096.3939 3128.7982 3237.7763 3247.9307 "
     "3259.7673 3268.7513"),
     ("CN1C=CC=C1", "Cn1cccc1"),
     ("InChI=1S/C5H7N/c1-6-4-2-3-5-6/h2-5H,1H3", "InChI=1S/C5H7N/c1-6-4-2-3-5-6/h2-5H,1H3")),
]

UNCHARACTERIZED = """



List of molecules among the 133885 GDB9 molecules for which the Corina generated Cartesian coordinates and \
the B3LYP/6-31G(2df,p) equilibrium geometry lead to
different SMILES and InChI strings when parsed through the program Openbabel.
SMILES generated from the Cartesian coordinates using Openbabel, as well as the L1 norm of the difference.
corresponding to the Corina and B3LYP coordinates.

==============================================================================================================
#   Index                           GDB17 SMILES                         SMILES for B3LYP XYZ        D_IJ
==============================================================================================================
       2                               NC(=N)C#N                                    NC(=N)C#N    6.036217
      58                               NC(=N)C#N                                    NC(=N)C#N    6.036217
      61                               NC(=N)C=O                                    NC(=N)C=O    5.631463
==============================================================================================================
"""

ATOMREF = """   Element-specific  energies (in Hartree) of the atoms used for computing atomization energies.

   Ele-    ZPVE         U (0 K)      U (298.15 K)    H (298.15 K)    G (298.15 K)     CV
   ment   Hartree       Hartree        Hartree         Hartree         Hartree        Cal/(Mol Kelvin)
===========================================================================================================
   H     0.000000     -0.500273      -0.498857       -0.497912       -0.510927       2.981
   C     0.000000    -37.846772     -37.845355      -37.844411      -37.861317       2.981
   N     0.000000    -54.583861     -54.582445      -54.581501      -54.598897       2.981
   O     0.000000    -75.064579     -75.063163      -75.062219      -75.079532       2.981
   F     0.000000    -99.718730     -99.717314      -99.716370      -99.733544       2.981
===========================================================================================================
"""


def _xyz_text(mol) -> str:
    index, props, atoms, freqs, smiles, inchi = mol
    lines = [str(len(atoms)), "gdb " + str(index) + "\t" + "\t".join(props.split()) + "\t"]
    lines += ["\t".join([a[0]] + [v if v.startswith("-") else " " + v for v in a[1:]]) for a in atoms]
    lines += ["\t".join(freqs.split()), "\t".join(smiles), "\t".join(inchi)]
    return "\n".join(lines) + "\n"


def _num(token: str) -> float:
    return float(token.replace("*^", "e"))


@pytest.fixture
def xyz_dir(tmp_path):
    folder = tmp_path / "dsgdb9nsd"
    folder.mkdir()
    for mol in MOLECULES:
        (folder / f"dsgdb9nsd_{mol[0]:06d}.xyz").write_text(_xyz_text(mol))
    return folder


def _check_molecules(ds: H5Dataset, molecules, relaxed: bool = True) -> None:
    assert len(ds) == len(molecules)
    for k, mol in enumerate(molecules):
        index, props, atoms, freqs, smiles, inchi = mol
        fr = ds[k]
        assert int(fr.properties["index"]) == index
        np.testing.assert_array_equal(fr.positions, [[_num(v) for v in a[1:4]] for a in atoms])
        np.testing.assert_array_equal(fr.atom_properties["mulliken_charges"], [_num(a[4]) for a in atoms])
        values = [_num(v) for v in props.split()]
        for (name, _, _, factor, _), value in zip(QM9_PROPERTIES, values):
            assert float(fr.properties[name]) == value * factor, name
        assert fr.energy == values[10] * Hartree
        np.testing.assert_array_equal(fr.extras["frequencies"], [float(v) for v in freqs.split()])
        assert fr.extras["smiles"] == smiles[0] and fr.extras["inchi"] == inchi[0]
        if relaxed:
            assert fr.extras["smiles_relaxed"] == smiles[1] and fr.extras["inchi_relaxed"] == inchi[1]


def test_qm9_folder_round_trip(xyz_dir, tmp_path):
    out = convert_qm9(xyz_dir, tmp_path / "qm9.h5")
    ds = H5Dataset(out, extras=True)
    _check_molecules(ds, MOLECULES)
    info = ds.property_info()
    assert info["homo"]["unit"] == "eV" and info["homo"]["source_unit"] == "Hartree"
    assert info["mu"]["unit"] == "Debye" and info["Cv"]["unit"] == "cal/(mol K)"
    assert info["alpha"]["unit"] == "Bohr^3" and info["r2"]["unit"] == "Bohr^2"
    assert ds.attrs["level_of_theory"] == "B3LYP/6-31G(2df,p)"
    assert ds.elements() == [1, 6, 7, 8]
    # the *^ exponent of molecule 212
    assert ds[3].positions[0, 0] == 2.1997e-6


def test_qm9_tarball_exclude_atomrefs_limit(xyz_dir, tmp_path):
    tarball = tmp_path / "dsgdb9nsd.xyz.tar.bz2"
    with tarfile.open(tarball, "w:bz2") as tar:
        for p in sorted(xyz_dir.iterdir()):
            tar.add(p, arcname=p.name)
    (tmp_path / "uncharacterized.txt").write_text(UNCHARACTERIZED)
    (tmp_path / "atomref.txt").write_text(ATOMREF)
    assert read_uncharacterized(tmp_path / "uncharacterized.txt") == {2, 58, 61}
    out = convert_qm9(tarball, tmp_path / "qm9.h5", exclude=tmp_path / "uncharacterized.txt",
                      atomrefs=tmp_path / "atomref.txt")
    ds = H5Dataset(out, extras=True)
    _check_molecules(ds, [m for m in MOLECULES if m[0] != 2])
    refs = ds.atomrefs()
    assert refs["U0"][0][6] == -37.846772 * Hartree and refs["U0"][1]["unit"] == "eV"
    assert refs["Cv"][0][1] == 2.981 and list(refs["G"][1]["elements"]) == [1, 6, 7, 8, 9]
    assert read_atomrefs(tmp_path / "atomref.txt")["U"][8] == -75.063163 * Hartree
    ds2 = H5Dataset(convert_qm9(tarball, tmp_path / "two.h5", limit=2), extras=True)
    _check_molecules(ds2, MOLECULES[:2])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: "\n".join(t.splitlines()[:-2]), r"expected 9 for 4 atoms \(truncated\?\)"),
        (lambda t: t.replace("gdb 2\t", "gdb 2\t1.0\t"), r"line 2: expected 'gdb <index>' and 15 properties"),
        (lambda t: t.replace("0.0829", "0.08x29"), r"line 2: field 'lumo': cannot read number '0.08x29'"),
        (lambda t: t.replace("0.0829", "nan"), r"field 'properties' contains NaN"),
        (lambda t: t.replace("\nN\t", "\nXx\t"), r"line 3: unknown element 'Xx'"),
        (lambda t: t.replace("\t 0.235712\n", "\n", 1), r"line 4: expected 'element x y z charge'"),
    ],
)
def test_qm9_bad_files(xyz_dir, tmp_path, edit, message):
    path = xyz_dir / "dsgdb9nsd_000002.xyz"
    path.write_text(edit(path.read_text()))
    with pytest.raises(ValueError, match=rf"dsgdb9nsd_000002.xyz: .*{message}"):
        convert_qm9(xyz_dir, tmp_path / "bad.h5")
    assert not list(tmp_path.glob("bad.h5*"))


def test_qm9_bad_archive(tmp_path):
    junk = tmp_path / "dsgdb9nsd.xyz.tar.bz2"
    junk.write_bytes(b"BZh91AY&SY" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="dsgdb9nsd.xyz.tar.bz2"):
        convert_qm9(junk, tmp_path / "bad.h5")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no dsgdb9nsd_"):
        convert_qm9(empty, tmp_path / "bad.h5")
    assert not list(tmp_path.glob("bad.h5*"))


QM9PACK_HEADER = ("XYZ_file,Index,SMILES,InChi,N_atoms,Stoichiometry,Elements,XYZ_Ang,Mulliken_pop,"
                  "Harmonic_Freq_cmi,RotA_GHz,RotB_GHz,RotC_GHz,Dipole_debye,Polarizability_bohr3,HOMO_au,"
                  "LUMO_au,HOMO_LUMO_gap_au,R2_bohr2,ZPVE_au,InternalEnergy_0K_au,InternalEnergy_298K_au,"
                  "Enthalphy_298K_au,GibbsFreeEnergy_298K_au,Heatcapacity_Cv_cal_mol_K")


def _qm9pack_row(mol) -> str:
    index, props, atoms, freqs, smiles, inchi = mol
    symbols = [a[0] for a in atoms]
    stoich = [symbols.count(s) for s in ("H", "C", "N", "O", "F")]
    xyz = ",".join("[" + ",".join(v.replace("*^", "E") for v in a[1:4]) + "]" for a in atoms)
    return ",".join([
        f'"dsgdb9nsd_{index:06d}.xyz"', str(index), f'"{smiles[0]}"', f'"{inchi[0]}"', str(len(atoms)),
        '"[' + ",".join(map(str, stoich)) + ']"', '"[' + ",".join(f"'{s}'" for s in symbols) + ']"',
        f'"[{xyz}]"', '"[' + ",".join(a[4] for a in atoms) + ']"', '"[' + ",".join(freqs.split()) + ']"',
        *props.split(),
    ])


def test_qm9pack_csv_layout(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "qm9_part1.csv").write_text("\n".join([QM9PACK_HEADER, *map(_qm9pack_row, MOLECULES[:2])]) + "\n")
    (data / "qm9_part2.csv").write_text("\n".join([QM9PACK_HEADER, *map(_qm9pack_row, MOLECULES[2:])]) + "\n")
    (data / "qm9_part3.csv").write_text(QM9PACK_HEADER + "\n")
    alpha = ["XYZ_file,A_xx,A_xy,A_yy,A_xz,A_yz,A_zz"]
    for mol in MOLECULES:
        alpha.append(f'"dsgdb9nsd_{mol[0]:06d}.xyz",13.211,0.100,12.5,0.000,-0.200,11.0')
    (data / "qm9_polarizability.csv").write_text("\n".join(alpha) + "\n")
    ds = H5Dataset(convert_qm9pack(tmp_path / "p.h5", source=data, exclude=[3]), extras=True)
    _check_molecules(ds, [m for m in MOLECULES if m[0] != 3], relaxed=False)
    np.testing.assert_array_equal(ds[0].properties["alpha_tensor"],
                                  [[13.211, 0.1, 0.0], [0.1, 12.5, -0.2], [0.0, -0.2, 11.0]])
    assert ds.attrs["source_format"] == "qm9pack"

    (data / "qm9_part2.csv").write_text(QM9PACK_HEADER.replace("Mulliken_pop", "Charges") + "\n")
    with pytest.raises(ValueError, match=r"qm9_part2.csv: missing column 'Mulliken_pop'"):
        convert_qm9pack(tmp_path / "bad.h5", source=data)
    bad_row = _qm9pack_row(MOLECULES[0]).replace("1.0858041578", "1.0858041578,7.5")
    (data / "qm9_part2.csv").write_text(QM9PACK_HEADER + "\n" + bad_row + "\n")
    with pytest.raises(ValueError, match=r"qm9_part2.csv: row 2: column 'XYZ_Ang' has 16 numbers, expected 15"):
        convert_qm9pack(tmp_path / "bad.h5", source=data)
    assert not list(tmp_path.glob("bad.h5*"))


needs_qm9pack = pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None,
                                   reason="qm9pack not installed (pip install 'equipot[qm9]')")


@needs_qm9pack
def test_qm9pack_installed_slice(tmp_path):
    ds = H5Dataset(convert_qm9pack(tmp_path / "q.h5", limit=40), extras=True)
    assert len(ds) == 40
    _check_molecules(ds.subset([0, 1, 2]), MOLECULES[:3], relaxed=False)
    assert ds[0].properties["alpha_tensor"].shape == (3, 3)


@pytest.mark.slow
@needs_qm9pack
def test_qm9pack_installed_full(tmp_path):
    ds = H5Dataset(convert_qm9pack(tmp_path / "q.h5"))
    assert len(ds) == 130831
    assert ds.elements() == [1, 6, 7, 8, 9]
    assert ds.num_atoms().max() == 29


def test_qm9_sources_take_split_files_and_random_splits(xyz_dir, tmp_path, capsys):
    """`equipot convert --split/--random-split` for both QM9 sources (xyz files and qm9pack CSV): the
    splits are stored, disjoint, of the sizes asked; the published atomrefs are stored by default."""
    from equipot.cli.main import main

    data = tmp_path / "pack"
    data.mkdir()
    (data / "qm9_part1.csv").write_text("\n".join([QM9PACK_HEADER, *map(_qm9pack_row, MOLECULES)]) + "\n")
    (tmp_path / "first.txt").write_text("0\n2\n")
    for fmt, src in (("qm9", xyz_dir), ("qm9pack", data)):
        out = tmp_path / f"{fmt}.h5"
        assert main(["convert", "--format", fmt, str(src), "-o", str(out), "--split", f"first={tmp_path / 'first.txt'}",
                     "--random-split", "train=2,test=1", "--seed", "3", "-q"]) == 0
        ds = H5Dataset(out)
        splits = ds.splits()
        np.testing.assert_array_equal(splits["first"], [0, 2])
        assert len(splits["train"]) == 2 and len(splits["test"]) == 1
        assert not set(splits["train"]) & set(splits["test"])
        assert ds.atomrefs()["U0"][0][6] == pytest.approx(-37.846772 * Hartree)
    capsys.readouterr()
    assert main(["convert", "--format", "qm9pack", str(data), "-o", str(tmp_path / "x.h5"),
                 "--random-split", "train=9"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "need 9 frames" in err and "has 4" in err
