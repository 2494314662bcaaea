"""The workflow a chemist expects from the command line, run for real: the demo, HDF5 -> xyz frame ->
md -> optimize, eval to and from extended XYZ, outputs checked before the work, files of the wrong
kind named for what they are, progress and logs, --version and python -m equipot."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest

from equipot.cli.main import main

from .conftest import cli_env


def _run(args: list[str], cwd: Path, timeout: float = 300, module: str = "equipot.cli") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)


def _one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], proc.stderr
    return lines[0]


def test_version_and_python_m_equipot(tmp_path):
    from equipot import __version__

    for module in ("equipot", "equipot.cli"):
        proc = _run(["--version"], tmp_path, module=module)
        assert proc.returncode == 0 and proc.stdout.strip() == f"equipot {__version__}"


@pytest.mark.parametrize("command", ["demo", "train", "eval", "md", "optimize", "export", "convert", "plot"])
def test_help_texts_show_no_empty_defaults(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text


def test_demo_runs_the_main_job_on_shipped_data(tmp_path):
    proc = _run(["demo", "-o", "demo", "--time", "12", "--md-steps", "30", "--threads", "1"], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "demo"
    for name in ("ethanol.h5", "run/model.pt", "run/train.log", "ethanol.xyz", "md.extxyz", "ethanol_relaxed.xyz",
                 "run/plots/learning_curves.png", "run/plots/parity_test.png"):
        assert (out / name).is_file(), name
    for step in ("[1/5]", "[2/5] test set (100 frames)", "[3/5]", "[4/5] NVE", "[5/5] relaxed", "done."):
        assert step in proc.stdout
    assert _one_error(_run(["demo", "-o", "demo"], tmp_path)).endswith("is not an empty folder; choose another "
                                                                        "with -o DIR")


def test_hdf5_frame_to_md_and_optimize_without_python(ethanol_h5_cli, tiny_model, tmp_path):
    """The README's shell quick start: a frame out of the HDF5 file, then md and optimize from it."""
    proc = _run(["convert", str(ethanol_h5_cli), "-o", "ethanol.xyz", "--frames", "0"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    atoms = ase.io.read(tmp_path / "ethanol.xyz")
    assert len(atoms) == 9 and atoms.get_potential_energy() < 0 and atoms.get_forces().shape == (9, 3)
    frames = _run(["convert", str(ethanol_h5_cli), "-o", "some.extxyz", "--frames", "2:8:2"], tmp_path)
    assert frames.returncode == 0 and len(ase.io.read(tmp_path / "some.extxyz", ":")) == 3
    md = _run(["md", str(tiny_model), "ethanol.xyz", "--steps", "20", "--thermostat", "nve", "--log-interval", "10",
               "--quiet", "--threads", "1"], tmp_path)
    assert md.returncode == 0, md.stderr
    log = [line for line in md.stdout.splitlines() if line.startswith("step ")]
    assert len(log) == 3 and all("E_pot" in line and "T " in line and "drift" in line for line in log)
    assert "drift" in md.stdout.splitlines()[-2]
    nvt = _run(["md", str(tiny_model), "ethanol.xyz", "--steps", "10", "--quiet", "-o", "nvt.xyz"], tmp_path)
    assert nvt.returncode == 0 and "drift" not in nvt.stdout  # a thermostat changes the energy on purpose
    opt = _run(["optimize", str(tiny_model), "ethanol.xyz", "-o", "relaxed.xyz", "--steps", "20"], tmp_path)
    assert opt.returncode in (0, 2), opt.stderr  # 2: not converged in 20 steps, the file is still written
    assert len(ase.io.read(tmp_path / "relaxed.xyz")) == 9


@pytest.mark.parametrize("argv, message", [
    (["optimize", "{model}", "{xyz}", "-o", "nodir/x.xyz"], "the folder nodir does not exist"),
    (["optimize", "{model}", "{xyz}", "-o", "x.foo"], "ASE cannot write a file of this name"),
    (["optimize", "{model}", "{xyz}", "--trajectory", "t.xyz"], "unknown file type '.xyz'; use one of .traj"),
    (["md", "{model}", "{xyz}", "-o", "x.unknownext"], "unknown file type '.unknownext'"),
    (["export", "{model}", "-o", "nodir/m.pt2"], "the folder nodir does not exist"),
    (["eval", "{model}", "{h5}", "-o", "nodir/p.h5"], "the folder nodir does not exist"),
    (["eval", "{model}", "{h5}", "-o", "p.csv"], "unknown file type '.csv'"),
    (["md", "{model}", "{tmp}"], "is a folder, not a file"),
    (["optimize", "{model}", "{tmp}"], "is a folder, not a file"),
    (["eval", "{model}", "{tmp}"], "is a folder, not a file"),
    (["md", "{tmp}", "{xyz}"], "is a folder without model.pt"),
    (["md", "{h5}", "{xyz}"], "is an HDF5 dataset, not a model file"),
    (["md", "{xyz}", "{xyz}"], "is a text file (a structure or config?), not a model file"),
    (["train", "data.train_file={tmp}"], "is a folder, not a file"),
])
def test_wrong_paths_fail_before_the_work_with_one_line(argv, message, ethanol_h5_cli, tiny_model, tmp_path):
    xyz = tmp_path / "ethanol.xyz"
    assert _run(["convert", str(ethanol_h5_cli), "-o", str(xyz), "--frames", "0"], tmp_path).returncode == 0
    args = [a.format(model=tiny_model, xyz=xyz, h5=ethanol_h5_cli, tmp=tmp_path) for a in argv]
    t0 = time.monotonic()
    line = _one_error(_run([*args, "--steps", "100000"] if argv[0] == "md" else args, tmp_path))
    assert message in line, line
    assert "weights_only" not in line and "file an issue" not in line
    assert time.monotonic() - t0 < 60  # the error comes before 100000 MD steps, not after


def test_an_exported_program_is_not_taken_for_a_model(tiny_model, tmp_path):
    assert _run(["export", str(tiny_model), "-o", "m.pt2", "--no-check"], tmp_path).returncode == 0
    line = _one_error(_run(["md", str(tmp_path / "m.pt2"), "x.xyz"], tmp_path))
    assert "is an exported program (equipot export), not a model file" in line


def test_eval_writes_and_reads_extended_xyz(ethanol_h5_cli, tiny_model, tmp_path):
    h5 = _run(["eval", str(tiny_model), str(ethanol_h5_cli), "--split", "test", "-o", "pred.xyz"], tmp_path)
    assert h5.returncode == 0, h5.stderr
    frames = ase.io.read(tmp_path / "pred.xyz", ":")
    assert len(frames) == 30
    first = frames[0]
    assert {"REF_energy", "equipot_energy"} <= set(first.info)
    assert first.arrays["REF_forces"].shape == first.arrays["equipot_forces"].shape == (9, 3)
    # the same frames as labelled extended XYZ input give the same errors
    assert _run(["convert", str(ethanol_h5_cli), "-o", "test.xyz", "--frames", "30:60"], tmp_path).returncode == 0
    xyz = _run(["eval", str(tiny_model), "test.xyz"], tmp_path)
    assert xyz.returncode == 0, xyz.stderr
    table = lambda text: [line for line in text.splitlines() if line.startswith(("energy", "forces"))]  # noqa: E731
    assert table(xyz.stdout) == table(h5.stdout)
    mae = np.mean([abs(f.info["equipot_energy"] - f.info["REF_energy"]) for f in frames]) * 1e3
    assert f"{mae:.4f}" in h5.stdout


def test_plot_of_a_folder_that_is_no_run_leaves_nothing_behind(tmp_path):
    line = _one_error(_run(["plot", str(tmp_path)], tmp_path))
    assert "is not a training run directory" in line
    assert not (tmp_path / "plots").exists()
