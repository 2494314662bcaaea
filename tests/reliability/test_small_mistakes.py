"""Small mistakes that gave a wrong number, a NaN or a traceback with exit code 0 (measured on
283e99e): ``md`` of one atom printed T = nan; ``md --dt 1e6`` ran to T = inf and exit 0;
``eval --limit -5`` exited 0; train and eval ignored ``OMP_NUM_THREADS`` (a 1-thread request used
every core); float32 EquiCalc 1e6 Å from the origin lost 0.18 eV/Å."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.io import write

from equipot import EquiCalc, build_potential, save_model
from equipot.cli.main import main
from equipot.demo import DEMO_DATA
from equipot.threads import set_threads


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("small") / "model.pt"
    save_model(build_potential("ponita", elements=(1, 6, 8), cutoff=4.0, hidden=8, layers=1, r3_only=True,
                               avg_num_neighbors=8.0, scale=0.5), path)
    return path


def test_md_of_one_atom_reports_no_temperature_rather_than_nan(model_file, tmp_path, capsys):
    write(tmp_path / "h.xyz", Atoms("H", positions=[[0.0, 0.0, 0.0]]))
    assert main(["md", str(model_file), str(tmp_path / "h.xyz"), "-o", str(tmp_path / "h.traj"), "--steps", "3",
                 "--quiet", "--log-interval", "1"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower() and "no degrees of freedom" in out


def test_md_that_blows_up_fails_and_writes_nothing(model_file, tmp_path, capsys):
    write(tmp_path / "e.xyz", molecule("CH3CH2OH"))
    assert main(["md", str(model_file), str(tmp_path / "e.xyz"), "-o", str(tmp_path / "e.traj"), "--steps", "50",
                 "--dt", "1e6", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "blew up" in err[0] and "--dt" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.xyz"]


def test_eval_with_a_negative_limit_is_refused(model_file, capsys):
    assert main(["eval", str(model_file), str(DEMO_DATA), "--limit", "-5"]) == 1
    assert "--limit" in capsys.readouterr().err


def test_omp_num_threads_is_honoured_unless_threads_are_given(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads() == 1 and torch.get_num_threads() == 1
        assert set_threads(2) == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_threads() >= 1
    finally:
        torch.set_num_threads(before)


def test_float32_far_from_the_origin_gives_the_forces_at_the_origin():
    torch.manual_seed(0)
    model = build_potential("ponita", elements=(1, 6, 8), cutoff=5.0, hidden=16, layers=2)
    near = molecule("CH3CH2OH")
    near.calc = EquiCalc(model, dtype=torch.float64)
    far = molecule("CH3CH2OH")
    far.positions += 1e6
    far.calc = EquiCalc(model, dtype=torch.float32)
    reference = near.get_forces()
    # float32 round-off of an O(1) edge vector, relative to the largest force component
    assert np.abs(far.get_forces() - reference).max() < 1e-4 * np.abs(reference).max()


def test_info_on_string_valued_forces_is_one_line(tmp_path, capsys):
    import shutil

    import h5py

    path = tmp_path / "strings.h5"
    shutil.copy(DEMO_DATA, path)
    with h5py.File(path, "r+") as f:
        n = f["forces"].shape[0]
        del f["forces"]
        f.create_dataset("forces", data=np.array([["x", "y", "z"]] * n, dtype=h5py.string_dtype()))
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'/forces'" in err[0] and "not numbers" in err[0], err


@pytest.mark.parametrize("signals", [("SIGINT",), ("SIGTERM",), ("SIGINT", "SIGINT")])
def test_md_stopped_by_signals_says_so_in_one_line_and_leaves_nothing(model_file, tmp_path, signals):
    """Before: SIGINT's message was empty ("equipot md: "), a second SIGINT during the clean-up was a
    traceback, and SIGTERM left the hidden temporary trajectory behind."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    write(tmp_path / "e.xyz", molecule("CH3CH2OH"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "equipot.cli", "md", str(model_file), str(tmp_path / "e.xyz"),
                             "-o", str(tmp_path / "e.traj"), "--steps", "1000000", "--log-interval", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.time() + 60
    while proc.stdout.readline().startswith("step") is False and time.time() < deadline:
        pass  # wait until MD runs
    for name in signals:
        proc.send_signal(getattr(signal, name))
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"interrupted by {signals[0]}" in lines[0], err
    if len(signals) == 1:
        assert proc.returncode == 128 + getattr(signal, signals[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.xyz"]
