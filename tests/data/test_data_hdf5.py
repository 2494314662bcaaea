"""The HDF5 format: writer, lazy reader, splits, and every kind of bad file."""
from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

from equipot.data import SCHEMA_VERSION, H5Dataset, HDF5Writer, random_split


def _symmetric(a: np.ndarray) -> np.ndarray:
    return a + a.T


def _frames(rng: np.random.Generator, count: int = 7) -> list[dict]:
    out = []
    for k in range(count):
        n = 3 + k % 4
        out.append({
            "numbers": rng.choice([1, 6, 8, 14], size=n),
            "positions": rng.normal(size=(n, 3)) * 2.0,
            "energy": float(rng.normal() * 10 - 100),
            "forces": rng.normal(size=(n, 3)),
            "cell": np.diag(rng.uniform(5, 8, size=3)),
            "pbc": np.array([True, True, k % 2 == 0]),
            "stress": _symmetric(rng.normal(size=(3, 3)) * 1e-3),
            "properties": {"dipole": rng.normal(size=3), "charge": np.int64(k % 2), "temperature": 300.0 + k},
            "atom_properties": {"charges": rng.normal(size=n)},
            "strings": {"config": f"frame-{k}"},
            "ragged": {"freqs": rng.uniform(100, 4000, size=k + 1)},
        })
    return out


def _write(path, frames, **kw):
    with HDF5Writer(path, source="unit test", level_of_theory="none", **kw) as w:
        for fr in frames:
            w.add(**fr)
        w.add_split("train", [0, 2, 4, 6])
        w.add_split("test", [1, 3])
        w.set_units("dipole", "e*Angstrom", source_unit="Debye", description="a vector")
    return path


def test_round_trip_every_field(tmp_path):
    rng = np.random.default_rng(0)
    frames = _frames(rng)
    path = _write(tmp_path / "d.h5", frames)
    assert not (tmp_path / "d.h5.tmp").exists()
    ds = H5Dataset(path, extras=True)
    assert len(ds) == len(frames)
    for k, ref in enumerate(frames):
        fr = ds[k]
        assert fr.index == k
        np.testing.assert_array_equal(fr.numbers, ref["numbers"])
        assert fr.numbers.dtype == np.int64
        np.testing.assert_array_equal(fr.positions, ref["positions"])
        assert fr.energy == ref["energy"]
        np.testing.assert_array_equal(fr.forces, ref["forces"])
        np.testing.assert_array_equal(fr.cell, ref["cell"])
        np.testing.assert_array_equal(fr.pbc, ref["pbc"])
        np.testing.assert_array_equal(fr.stress, ref["stress"])
        for name, value in ref["properties"].items():
            np.testing.assert_array_equal(fr.properties[name], value)
        assert fr.properties["charge"].dtype == np.int64
        np.testing.assert_array_equal(fr.atom_properties["charges"], ref["atom_properties"]["charges"])
        assert fr.extras["config"] == ref["strings"]["config"]
        np.testing.assert_array_equal(fr.extras["freqs"], ref["ragged"]["freqs"])
    assert ds[-1].index == len(frames) - 1
    assert ds.elements() == sorted({int(z) for f in frames for z in f["numbers"]})
    assert set(ds.splits()) == {"train", "test"}
    assert ds.has("stress") and ds.has("dipole") and not ds.has("magmoms")
    info = ds.property_info()
    assert info["dipole"]["unit"] == "e*Angstrom" and info["dipole"]["source_unit"] == "Debye"
    assert info["charges"]["per_atom"] and not info["dipole"]["per_atom"]
    assert ds.units()["energy"] == "eV" and ds.units()["forces"] == "eV/Angstrom"
    assert ds.attrs["version"] == SCHEMA_VERSION and ds.attrs["format"] == "equipot"
    assert ds.strings("config") == [f"frame-{k}" for k in range(len(frames))]
    np.testing.assert_array_equal(ds.energies(), [f["energy"] for f in frames])
    np.testing.assert_array_equal(ds.num_atoms(), [len(f["numbers"]) for f in frames])
    atoms = ds[0].to_atoms()
    assert atoms.get_potential_energy() == frames[0]["energy"]


def test_splits_subsets_and_random_split(tmp_path):
    frames = _frames(np.random.default_rng(1), 20)
    path = _write(tmp_path / "d.h5", frames)
    train = H5Dataset(path, split="train")
    assert len(train) == 4 and [train[i].index for i in range(4)] == [0, 2, 4, 6]
    sub = H5Dataset(path, split="train", indices=[1, 3])
    assert [f.index for f in sub] == [2, 6]
    full = H5Dataset(path, in_memory=True)
    a, b, c = random_split(full, [0.5, 0.25, 0.25], seed=3)
    assert len(a) + len(b) + len(c) == 20
    assert not set(a.indices) & set(b.indices) and not set(b.indices) & set(c.indices)
    a2, _, _ = random_split(full, [0.5, 0.25, 0.25], seed=3)
    np.testing.assert_array_equal(a.indices, a2.indices)
    a3, _ = random_split(full, [10, 5], seed=4)
    assert len(a3) == 10 and not np.array_equal(a3.indices, a.indices[:10])
    with pytest.raises(ValueError, match="exceed"):
        random_split(full, [15, 10])
    only = H5Dataset(path, properties=["dipole"])
    assert set(only[0].properties) == {"dipole"} and not only[0].atom_properties


def test_pickle_drops_handle_and_reopens(tmp_path):
    path = _write(tmp_path / "d.h5", _frames(np.random.default_rng(2)))
    ds = H5Dataset(path)
    first = ds[0]
    assert ds._h5 is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5 is None
    np.testing.assert_array_equal(clone[0].positions, first.positions)
    ds._pid = -1  # as if the handle came from another process: it must be reopened
    np.testing.assert_array_equal(ds[0].forces, first.forces)
    ds.close()


def test_refuses_to_overwrite_and_leaves_no_tmp_on_error(tmp_path):
    frames = _frames(np.random.default_rng(3))
    path = _write(tmp_path / "d.h5", frames)
    with pytest.raises(FileExistsError, match="d.h5"):
        HDF5Writer(path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError), HDF5Writer(path, overwrite=True) as w:
        w.add(**frames[0])
        raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert not (tmp_path / "d.h5.tmp").exists()
    _write(path, frames[::-1], overwrite=True)
    assert H5Dataset(path)[0].energy == frames[-1]["energy"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.update(forces=f["forces"][:-1]), r"frame 1: field 'forces' has shape"),
        (lambda f: f.update(positions=f["positions"][:, :2]), r"frame 1: field 'positions'"),
        (lambda f: f["forces"].__setitem__((1, 2), np.nan), r"frame 1: field 'forces' atom 1 contains NaN"),
        (lambda f: f.update(energy=float("nan")), r"frame 1: field 'energy' contains NaN"),
        (lambda f: f.pop("stress"), r"frame 1: field 'stress' is missing"),
        (lambda f: f["properties"].update(extra=1.0), r"frame 1: field 'extra' is present"),
        (lambda f: f["properties"].update(dipole=np.zeros(4)), r"frame 1: field 'dipole' has shape"),
        (lambda f: f.update(numbers=np.r_[f["numbers"][:-1], 0]), r"frame 1: field 'numbers' atom \d+ has atomic"),
    ],
)
def test_writer_rejects_bad_frames(tmp_path, change, message):
    frames = _frames(np.random.default_rng(4), 3)
    change(frames[1])
    out = tmp_path / "bad.h5"
    with pytest.raises(ValueError, match=message), HDF5Writer(out) as w:
        for fr in frames:
            w.add(**fr)
    assert not out.exists() and not (tmp_path / "bad.h5.tmp").exists()


def test_split_out_of_range_at_write_leaves_nothing(tmp_path):
    out = tmp_path / "s.h5"
    frames = _frames(np.random.default_rng(5), 3)
    with pytest.raises(ValueError, match=r"split 'test': index 7 out of range for 3 frames"), HDF5Writer(out) as w:
        for fr in frames:
            w.add(**fr)
        w.add_split("test", [0, 7])
    assert list(tmp_path.iterdir()) == []


def test_empty_writer_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no frames"), HDF5Writer(tmp_path / "e.h5"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_truncated_file(tmp_path):
    path = _write(tmp_path / "d.h5", _frames(np.random.default_rng(6), 50))
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=r"cut.h5: HDF5 file is truncated or corrupt"):
        H5Dataset(cut)
    head = tmp_path / "head.h5"
    head.write_bytes(data[:100])
    with pytest.raises(ValueError, match=r"head.h5: HDF5 file is truncated or corrupt"):
        H5Dataset(head)


def test_not_hdf5_and_missing_file(tmp_path):
    other = tmp_path / "data.h5"
    other.write_text("Properties=species:S:1:pos:R:3\nthis is not HDF5\n")
    with pytest.raises(ValueError, match=r"data.h5: not an HDF5 file"):
        H5Dataset(other)
    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        H5Dataset(tmp_path / "nothere.h5")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ValueError, match=r"foreign.h5: not an equipot dataset"):
        H5Dataset(foreign)


def _tamper(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)
    return path


def test_bad_contents_are_reported_with_file_and_field(tmp_path):
    frames = _frames(np.random.default_rng(7), 7)
    cases = [
        (lambda f: f.__delitem__("positions"), r"missing dataset '/positions'"),
        (lambda f: (f.__delitem__("energy"), f.create_dataset("energy", data=np.zeros(5))),
         r"field '/energy' has 5 rows, expected 7"),
        (lambda f: (f.__delitem__("forces"), f.create_dataset("forces", data=np.zeros((3, 3)))),
         r"field '/forces' has 3 rows"),
        (lambda f: f.create_dataset("splits/bad", data=np.array([0, 7])),
         r"split 'bad' has index 7 out of range for 7 frames"),
        (lambda f: f.attrs.__setitem__("version", 99), r"schema version 99"),
    ]
    for k, (fn, message) in enumerate(cases):
        path = _write(tmp_path / f"t{k}.h5", frames)
        _tamper(path, fn)
        with pytest.raises(ValueError, match=rf"t{k}.h5: .*{message}"):
            H5Dataset(path)
    path = _write(tmp_path / "ok.h5", frames)
    with pytest.raises(ValueError, match=r"ok.h5: no split named 'valid'"):
        H5Dataset(path, split="valid")
    with pytest.raises(ValueError, match=r"ok.h5: index 4 out of range for split 'test' \(2 frames\)"):
        H5Dataset(path, split="test", indices=[0, 4])
    with pytest.raises(ValueError, match=r"no property named 'mu'"):
        H5Dataset(path, properties=["mu"])


def test_streaming_flushes_in_chunks(tmp_path):
    rng = np.random.default_rng(8)
    m, n = 300, 5
    pos = rng.normal(size=(m, n, 3))
    with HDF5Writer(tmp_path / "big.h5", buffer_atoms=64) as w:
        for a in range(0, m, 7):
            w.add_many([1, 1, 6, 8, 8], pos[a:a + 7], energy=np.arange(a, min(a + 7, m), dtype=float))
    ds = H5Dataset(tmp_path / "big.h5")
    assert len(ds) == m
    with h5py.File(tmp_path / "big.h5") as f:
        assert f["positions"].chunks is not None and f["positions"].compression == "gzip"
    for k in (0, 123, m - 1):
        np.testing.assert_array_equal(ds[k].positions, pos[k])
        assert ds[k].energy == k


def test_corrupt_chunk_names_the_field(tmp_path):
    rng = np.random.default_rng(9)
    path = tmp_path / "c.h5"
    with HDF5Writer(path, buffer_atoms=1000) as w:
        w.add_many([6, 1, 1, 1, 1], rng.normal(size=(2000, 5, 3)), energy=rng.normal(size=2000),
                   forces=rng.normal(size=(2000, 5, 3)))
    with h5py.File(path) as f:
        ds = f["forces"]
        first, last = ds.id.get_chunk_info(0), ds.id.get_chunk_info(ds.id.get_num_chunks() - 1)
    data = bytearray(path.read_bytes())
    data[first.byte_offset + 64:first.byte_offset + 512] = bytes(448)
    bad_first = tmp_path / "first.h5"
    bad_first.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"first.h5: frame 0: field '/forces' cannot be read"):
        H5Dataset(bad_first)[0]
    data[last.byte_offset + 64:last.byte_offset + 512] = b"\xff" * 448
    bad_last = tmp_path / "last.h5"
    bad_last.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"last.h5: field '/forces' cannot be read, file truncated or corrupt"):
        H5Dataset(bad_last)
