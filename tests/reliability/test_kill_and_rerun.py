"""SIGKILL at random moments of HDF5 conversion and of training, then rerun or resume.

After every kill: no file under its final name is half-written (the HDF5 output is absent or
complete; every checkpoint, model, config and summary in the run directory loads). After the
rerun (conversion) or resume (training; a fresh rerun when no checkpoint existed yet) the
results equal those of an uninterrupted run. The trainer's own test kills once after the first
checkpoint (tests/training/test_training_loop.py); the variant here kills at random moments,
repeatedly, and is marked slow.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED_RMD17 = REPO / ".." / "shared" / "data" / "rmd17"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "equipot.cli", *args], cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _run(args: list[str], cwd: Path, timeout: float = 300) -> float:
    """Run to completion; return its wall time (s)."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "equipot.cli", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"equipot {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return time.monotonic() - t0


def _kill_at(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL ``proc`` after ``seconds`` unless it ended first; True if it was really killed."""
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        if rc == 0:  # it finished between the timeout and the kill: a complete run, not a kill
            return False
        assert rc == -signal.SIGKILL, proc.stderr.read()
        return True
    assert proc.returncode == 0, proc.stderr.read()
    return False


def _kill_after(args: list[str], cwd: Path, seconds: float) -> bool:
    """Start the command, SIGKILL it after ``seconds``; True if it was still running (really killed)."""
    proc = _start(args, cwd)
    return _kill_at(proc, seconds)


# ------------------------------------------------------------------------------------ conversion
def _h5_content(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file (the attributes hold a creation stamp, so they are left out)."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _same_h5(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def big_npz(tmp_path_factory) -> Path:
    """A revised-MD17-format file of 20 000 random ethanol-like frames, so that writing takes ~0.5 s."""
    rng = np.random.default_rng(0)
    m = 20_000
    path = tmp_path_factory.mktemp("npz") / "rmd17_fake.npz"
    np.savez(path, nuclear_charges=np.array([6, 6, 8, 1, 1, 1, 1, 1, 1], dtype=np.uint8),
             coords=rng.normal(size=(m, 9, 3)) * 1.5, energies=rng.normal(size=m) - 97_000.0,
             forces=rng.normal(size=(m, 9, 3)), old_indices=np.arange(m), old_energies=rng.normal(size=m),
             old_forces=rng.normal(size=(m, 9, 3)))
    return path


def _temporaries(out: Path) -> list[Path]:
    """The writer's temporary files of ``out`` (``.out.h5.<random>.tmp``)."""
    return sorted(out.parent.glob(f".{out.name}.*.tmp"))


def _timed_write(args: list[str], cwd: Path, out: Path) -> float:
    """Run a conversion to completion; return how long its temporary output existed (s)."""
    proc = _start(args, cwd)
    while not _temporaries(out) and proc.poll() is None:
        time.sleep(0.002)
    t0 = time.monotonic()
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    return time.monotonic() - t0


def _kill_while_writing(args: list[str], cwd: Path, out: Path, delay: float) -> bool:
    """Start a conversion, SIGKILL it ``delay`` s after its temporary output appeared; True if killed."""
    proc = _start(args, cwd)
    while not _temporaries(out) and proc.poll() is None:
        time.sleep(0.002)
    return _kill_at(proc, delay)


def _convert_with_kills(big_npz: Path, tmp_path: Path, n_kills: int, seed: int) -> None:
    args = ["convert", str(big_npz), "--format", "rmd17", "-q"]
    reference = tmp_path / "reference.h5"
    write_time = _timed_write([*args, "-o", str(reference)], tmp_path, reference)
    expected = _h5_content(reference)
    rng = np.random.default_rng(seed)
    out = tmp_path / "out.h5"
    killed = 0
    for k in range(n_kills):
        # a moment while the file is written (and, on odd k, now and then just after it was
        # renamed); even k kill in the first half, so that at least one kill lands mid-write
        delay = rng.uniform(0.0, 1.1 if k % 2 else 0.5) * write_time
        for stale in _temporaries(out):  # so the wait above sees this run's own temporary file appear
            stale.unlink()
        killed += _kill_while_writing([*args, "-o", str(out), "--overwrite"], tmp_path, out, delay)
        if out.exists():  # killed after the rename: it must be the whole file
            assert _same_h5(_h5_content(out), expected), "a killed conversion left a partial output file"
        allowed = {"reference.h5", "out.h5", ".out.h5.lock", *(p.name for p in _temporaries(out))}
        leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in allowed)
        assert leftovers == [], leftovers
    assert _temporaries(out) or out.exists()
    _run([*args, "-o", str(out), "--overwrite"], tmp_path)  # the rerun, over a killed run's temporary file if any
    assert _same_h5(_h5_content(out), expected)
    assert not _temporaries(out) and not (tmp_path / ".out.h5.lock").exists()
    assert killed >= 1, "no conversion was still running when killed: the test measured nothing"


def test_sigkill_during_conversion_then_rerun(big_npz, tmp_path):
    _convert_with_kills(big_npz, tmp_path, n_kills=2, seed=1)


@pytest.mark.slow
def test_sigkill_during_conversion_many_random_points(big_npz, tmp_path):
    _convert_with_kills(big_npz, tmp_path, n_kills=12, seed=2)


# -------------------------------------------------------------------------------------- training
def _check_run_dir(run: Path) -> None:
    """Every file under its final name loads; only *.tmp files may be partial."""
    from equipot import load_model

    if not run.exists():  # killed before the run directory was made
        return
    for path in run.iterdir():
        if path.name.endswith(".tmp"):
            continue
        if path.name == "checkpoint.pt":
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".pt":
            load_model(path)
        elif path.suffix == ".yaml":
            assert isinstance(yaml.safe_load(path.read_text()), dict), path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npz":
            with np.load(path) as data:
                [data[k] for k in data.files]


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_sigkill_at_random_points_during_training_then_resume(tmp_path):
    src = SHARED_RMD17.resolve()
    if not (src / "rmd17_ethanol_train_01.npz").exists():
        pytest.skip(f"real rMD17 files not found at {src} (shared/ must sit beside the repository)")
    from equipot.data import convert_rmd17

    h5 = tmp_path / "ethanol.h5"
    convert_rmd17([src / "rmd17_ethanol_train_01.npz", src / "rmd17_ethanol_test_01.npz"], h5, limit=80,
                  keep_old=False)
    common = [f"data.train_file={h5}", "data.train_split=train", "data.valid_size=16", "data.n_train=48",
              "data.batch_size=4", "train.epochs=12", "train.checkpoint_every=5", "model.cutoff=4.0",
              "model.hidden=16", "model.layers=2", "model.r3_only=true", "model.basis_size=8", "model.kernel_dim=8",
              "model.widening=2", "train.device=cpu", "train.progress=false"]
    # Reference run: how long start-up (until config.yaml appears) and training take.
    t0 = time.monotonic()
    ref = _start(["train", *common, f"train.run_dir={tmp_path / 'a'}"], tmp_path)
    while not (tmp_path / "a" / "config.yaml").exists() and ref.poll() is None:
        time.sleep(0.005)
    startup = time.monotonic() - t0
    assert ref.wait(timeout=600) == 0, ref.stderr.read()
    training = time.monotonic() - t0 - startup
    run = tmp_path / "b"
    rng = np.random.default_rng(3)
    killed, resumed_from = 0, []
    for _ in range(5):
        if (run / "checkpoint.pt").exists():
            args = ["train", "--resume", str(run)]
            resumed_from.append(torch.load(run / "checkpoint.pt", weights_only=True)["step"])
        else:
            args = ["train", *common, f"train.run_dir={run}"]
        if not _kill_after(args, tmp_path, startup + rng.uniform(0.0, 0.8) * training):
            break
        killed += 1
        _check_run_dir(run)
    print(f"\nstart-up {startup:.1f} s, training {training:.1f} s; {killed} kills; resumed from steps {resumed_from}")
    if (run / "checkpoint.pt").exists():
        _run(["train", "--resume", str(run)], tmp_path)
    else:
        _run(["train", *common, f"train.run_dir={run}"], tmp_path)
    _check_run_dir(run)
    assert killed >= 1
    for name in ("model_last.pt", "model.pt"):
        a, b = _weights(tmp_path / "a" / name), _weights(run / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    strip_time = lambda rows: [",".join(c for k, c in enumerate(r.split(",")) if k != 2) for r in rows]  # noqa: E731
    rows = [(d / "metrics.csv").read_text().splitlines() for d in (tmp_path / "a", run)]
    assert strip_time(rows[0]) == strip_time(rows[1])
