"""Numbers, files and runs a hostile or careless user hands equipot: each is one line naming the
option, file, frame or atoms, in well under a second, and nothing is lost.

Measured on the code before these tests (283e99e): ``model.hidden=-3`` was a torch traceback; a 60 kB
model file declaring hidden=20000 asked for > 3.4 GB before any shape check; a 345-byte YAML of
nested aliases expanded past 3 GB; a malicious checkpoint's error passed on torch's advice to load it
with ``weights_only=False``; ``--resume`` resumed a checkpoint copied from another run, and on a
replaced data file, and ignored ``train.run_dir=elsewhere``; a writer's clean-up deleted another
process's live temporary file; coincident atoms gave NaN metrics with exit code 0;
``plot --dpi 100000`` was a MemoryError.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from equipot import build_potential, save_model
from equipot.cli.main import main
from equipot.data import HDF5Writer
from equipot.demo import DEMO_DATA

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.cutoff=4.0", "model.hidden=8", "model.layers=1", "model.r3_only=true", "model.basis_size=6",
        "model.kernel_dim=6", "data.n_train=20", "data.valid_size=10", "data.batch_size=5", "train.progress=false",
        "train.device=cpu", "train.checkpoint_every=1"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture()
def data(tmp_path) -> Path:
    shutil.copy(DEMO_DATA, tmp_path / "data.h5")
    return tmp_path / "data.h5"


@pytest.mark.parametrize("option, named", [("model.hidden=-3", "model.hidden"), ("model.layers=0", "model.layers"),
                                           ("model.angular_degree=-1", "model.angular_degree"),
                                           ("model.edge_gain=.nan", "model.edge_gain")])
def test_out_of_range_model_options_are_one_line(data, tmp_path, capsys, option, named):
    assert main(["train", f"data.train_file={data}", f"train.run_dir={tmp_path / 'run'}", "train.max_steps=1",
                 "train.progress=false", option]) == 1
    assert named in _one_line(capsys)


def test_a_small_model_file_declaring_a_huge_model_is_refused_before_allocating(tmp_path):
    torch.manual_seed(0)
    save_model(build_potential("ponita", elements=(1, 6, 8), cutoff=4.0, hidden=8, layers=1), tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["config"]["backbone_options"]["hidden"] = 20000
    torch.save(payload, tmp_path / "huge.pt")
    assert (tmp_path / "huge.pt").stat().st_size < 200_000
    script = ("import resource, sys, time\nfrom equipot import load_model\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\nt = time.perf_counter()\n"
              "try:\n    load_model(sys.argv[1])\nexcept ValueError as exc:\n    print('refused', exc)\n"
              "print(time.perf_counter() - t, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "huge.pt")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120).stdout.splitlines()
    assert out[0].startswith("refused") and "huge.pt" in out[0], out
    seconds, megabytes = map(float, out[1].split())
    assert seconds < 1.0 and megabytes < 100, out


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 9)}]" for k in range(1, 9)]
    (tmp_path / "bomb.yaml").write_text("\n".join(levels) + "\n")
    assert (tmp_path / "bomb.yaml").stat().st_size < 700
    t0 = time.perf_counter()
    assert main(["train", str(tmp_path / "bomb.yaml")]) == 1
    assert time.perf_counter() - t0 < 1.0
    assert "YAML aliases" in _one_line(capsys)


def _run(data: Path, run: Path, *extra: str) -> int:
    return main(["train", f"data.train_file={data}", f"train.run_dir={run}", "train.max_steps=2", *TINY, *extra])


def test_resume_refuses_what_is_not_this_runs_checkpoint(data, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(data, a) == 0 and _run(data, b, "train.lr=1e-4") == 0
    capsys.readouterr()
    saved = (a / "checkpoint.pt").read_bytes()
    shutil.copy(b / "checkpoint.pt", a / "checkpoint.pt")  # another run's checkpoint
    assert main(["train", "--resume", str(a), "train.max_steps=4"]) == 1
    line = _one_line(capsys)
    assert "belongs to another run" in line and "train.lr" in line and str(a / "checkpoint.pt") in line
    (a / "checkpoint.pt").write_bytes(saved)
    assert main(["train", "--resume", str(a), f"train.run_dir={tmp_path / 'elsewhere'}"]) == 1
    assert "train.run_dir cannot be given" in _one_line(capsys)
    with h5py.File(data, "r+") as f:  # the data file changes under the stopped run
        f["energy"][0] += 1.0
    assert main(["train", "--resume", str(a), "train.max_steps=4"]) == 1
    assert "has changed since" in _one_line(capsys)


def test_a_malicious_checkpoint_is_not_advised_into_weights_only_false(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _run(data, run) == 0
    capsys.readouterr()
    torch.save({"format": "equipot.checkpoint", "payload": Atoms("H")}, run / "checkpoint.pt")  # a pickled object
    assert main(["train", "--resume", str(run), "train.max_steps=4"]) == 1
    line = _one_line(capsys)
    assert "weights_only" not in line and "not an equipot checkpoint" in line


def test_stale_temporaries_are_removed_only_when_their_owner_is_gone(tmp_path):
    out = tmp_path / "out.h5"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        live = tmp_path / f".out.h5.{sleeper.pid}-0123abcd.tmp"
        stale = tmp_path / f".out.h5.{dead.pid}-0123abcd.tmp"
        other = tmp_path / f".out.h5.x.h5.{dead.pid}-0123abcd.tmp"  # another output's, matched by the old glob
        for p in (live, stale, other):
            p.write_bytes(b"partial")
        with HDF5Writer(out, source="test") as w:
            w.add([1, 8], np.array([[0.0, 0, 0], [0.96, 0, 0]]), energy=-1.0)
        assert live.exists() and other.exists() and not stale.exists()
    finally:
        sleeper.kill()


def test_coincident_atoms_are_named_at_convert_and_eval(data, tmp_path, capsys):
    frames = []
    for k in range(3):
        atoms = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [0.96 if k == 1 else -0.24, 0, 0.93 * (k != 1)]])
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((3, 3)))
        frames.append(atoms)
    write(tmp_path / "water.xyz", frames)
    assert main(["convert", str(tmp_path / "water.xyz"), "-o", str(tmp_path / "water.h5"), "--format", "ase",
                 "-q"]) == 1
    line = _one_line(capsys)
    assert "frame 1" in line and "atoms 1 and 2" in line and "same position" in line
    assert not (tmp_path / "water.h5").exists()
    torch.manual_seed(0)
    save_model(build_potential("ponita", elements=(1, 6, 8), cutoff=4.0, hidden=8, layers=1, r3_only=True,
                               avg_num_neighbors=8.0, scale=0.5), tmp_path / "m.pt")
    with h5py.File(data, "r+") as f:  # a file written before the check: atom 3 of frame 4 onto atom 0
        start = int(f["offsets"][4]) if "offsets" in f else None
        assert start is not None, list(f)
        f["positions"][start + 3] = f["positions"][start]
    assert main(["eval", str(tmp_path / "m.pt"), str(data), "--limit", "10"]) == 1
    line = _one_line(capsys)
    assert "frame 4" in line and ("atoms 0 and 3" in line or "atoms 3 and 0" in line), line


def test_plot_with_an_absurd_dpi_is_one_line(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _run(data, run) == 0
    capsys.readouterr()
    assert main(["plot", str(run), "--dpi", "100000"]) == 1
    assert "--dpi" in _one_line(capsys)
