"""Two writers of one file, and a full disk: one clear error, the previous good file untouched, no
temporary file left, and never a corrupt file behind an exit code 0.

Measured on the code before these tests: two `equipot convert` runs to the same output corrupted it
in 2 of ~30 races (the shared `OUT.tmp` name, truncated by the second run, renamed into place by
the first, rc 0); a convert onto a full file system died with SIGSEGV after ~100 "Exception ignored"
tracebacks, leaving its `.tmp`; a full disk during a checkpoint was a raw RuntimeError.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from equipot.data import H5Dataset, HDF5Writer
from equipot.safe_write import output_lock

REPO = Path(__file__).resolve().parents[2]
RMD17 = (REPO / ".." / "shared" / "data" / "rmd17").resolve()
ASPIRIN = [RMD17 / "rmd17_aspirin_train_01.npz", RMD17 / "rmd17_aspirin_test_01.npz"]

needs_rmd17 = pytest.mark.skipif(not ASPIRIN[0].exists(), reason=f"real rMD17 files not found at {RMD17}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _convert(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "equipot.cli", "convert", *map(str, ASPIRIN), "-o", str(out),
                             "-q", *extra], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _complete(path: Path, frames: int) -> bool:
    ds = H5Dataset(path)
    return len(ds) == frames and ds[frames - 1].forces.shape == (21, 3)


def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp" in p.name or p.name.endswith(".lock")]


@needs_rmd17
def test_a_second_convert_of_the_same_output_fails_at_once_with_one_line(tmp_path):
    out = tmp_path / "aspirin.h5"
    with output_lock(out):  # another equipot process is writing it
        proc = _convert(out, "--overwrite")
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert err.strip().splitlines() == [f"equipot convert: error: {out}: another process is writing this file"]
    assert not out.exists() and _no_temporaries(tmp_path)


@needs_rmd17
@pytest.mark.parametrize("overwrite", [False, True])
def test_concurrent_converts_never_leave_a_corrupt_file(tmp_path, overwrite):
    """Real races, five times: whoever wins, the file is complete; a loser exits 1 with one line."""
    extra = ["--overwrite"] if overwrite else []
    for k in range(5):
        out = tmp_path / f"aspirin{k}.h5"
        procs = [_convert(out, *extra) for _ in range(2)]
        results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
        codes = sorted(r[2] for r in results)
        assert codes in ([0, 0], [0, 1]), results
        for _, err, rc in results:
            if rc:
                line, = err.strip().splitlines()
                assert "another process is writing this file" in line or "output file exists" in line, line
        assert _complete(out, 2000)
    assert _no_temporaries(tmp_path)


def test_a_writer_that_cannot_start_leaves_the_other_writer_alone(tmp_path):
    out = tmp_path / "x.h5"
    first = HDF5Writer(out)
    tmp = first.tmp_path
    with pytest.raises(FileExistsError, match="another process is writing this file"):
        HDF5Writer(out, overwrite=True)
    import gc

    gc.collect()  # the failed writer's __del__ must not touch the first writer's file
    assert tmp.exists()
    first.add(np.array([1, 8]), np.zeros((2, 3)) + [[0, 0, 0], [0, 0, 1]], energy=-1.0)
    first.close()
    assert len(H5Dataset(out)) == 1 and _no_temporaries(tmp_path)


# ----------------------------------------------------------------------------------- full disks
@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs (needs root and mount; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip() or 'mount failed'}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@needs_rmd17
def test_convert_onto_a_full_disk_is_one_clear_error(small_disk):
    first = _convert(small_disk / "a.h5")  # 2000 frames, ~2.8 MB: fits once
    first.communicate(timeout=300)
    assert first.returncode == 0
    good = (small_disk / "a.h5").read_bytes()
    for name, extra in (("b.h5", []), ("a.h5", ["--overwrite"])):
        proc = _convert(small_disk / name, *extra)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err
        line, = err.strip().splitlines()
        assert line.startswith("equipot convert: error: no space left on the device"), line
    assert not (small_disk / "b.h5").exists()
    assert (small_disk / "a.h5").read_bytes() == good  # the previous good file is untouched
    assert _no_temporaries(small_disk)


def test_hdf5_writer_meets_a_disk_filling_up_while_it_writes(small_disk):
    """Data flushed block by block, the disk full in the middle: OSError, nothing left behind."""
    out = small_disk / "big.h5"
    rng = np.random.default_rng(0)
    with pytest.raises(OSError, match="no space left on the device") as info:
        with HDF5Writer(out, compression=None, buffer_atoms=20_000) as w:
            for _ in range(2000):  # 100 atoms x 56 bytes a frame: 11 MB in all, flushed every 200 frames
                w.add(np.ones(100, dtype=int), rng.normal(size=(100, 3)), energy=0.0, forces=rng.normal(size=(100, 3)))
    assert info.value.errno == 28
    assert not out.exists() and _no_temporaries(small_disk)
    with h5py.File(small_disk / "ok.h5", "w") as f:  # the file system is usable again
        f["x"] = np.zeros(10)
