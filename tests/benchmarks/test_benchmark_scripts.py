"""The benchmark scripts run end to end on tiny inputs, so a GPU session spends its time measuring.

The GPU-only parts (the Triton rows of the kernel table, the block-size sweep, the largest water
box) run here on the CPU where they can: Triton under its interpreter, the search for the largest
box with a stand-in for "fits in GPU memory". The training harness and its front-ends run on a
synthetic revised-MD17 molecule (random labels) for a couple of optimiser steps.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ase.build import molecule

from benchmarks import accuracy, harness, kernels, speed, symmetry, train_md17
from benchmarks.common import rmd17_h5, sample, systems, water_box
from equipot.data import H5Dataset
from equipot.ops import backend_available

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = ["model.hidden=8", "model.layers=1"]


def test_kernel_table_runs_and_appends_markdown(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\nearlier text\n")
    assert kernels.main(["--device", "cpu", "--edges", "300", "--orientations", "8", "--channels", "16",
                         "--repeat", "1", "--markdown", str(md), "--backends", "torch"]) == 0
    text = md.read_text()
    assert text.startswith("# Benchmark results\n\nearlier text\n\n## Kernel benchmark: CPU")
    rows = [line for line in text.splitlines() if line.startswith("| message") or line.startswith("| segment")]
    assert len(rows) == 2 and all(" torch " in r for r in rows)
    assert "%" in rows[0] and not (tmp_path / "RESULTS.md.tmp").exists()


@pytest.mark.skipif(not backend_available("triton", "cpu"), reason="needs triton (interpreted on the CPU)")
def test_kernel_cases_and_sweep_run_the_triton_backend():
    args = SimpleNamespace(degree=4.0, senders="random", basis=8, repeat=1, sweep_edges=64,
                           orientations=[4], channels=[16])
    for op in ("message", "scatter", "segment"):
        n, fwd, fb, _, _ = kernels.bench_case(op, "triton", 64, 4, 16, args, torch.device("cpu"), torch.float32)
        assert n == 16 and fwd > 0 and fb > 0
    rows = kernels.sweep(args, torch.device("cpu"), torch.float32,
                         variants=[(True, "message", 16, 64, 4), (False, "edge_backward", 16, 64, 4)])
    assert [r[:2] for r in rows] == [("message", True), ("edge_backward", False)]
    from equipot.ops import triton_kernels
    assert triton_kernels.TUNING["message"]["BLOCK_C"] == 64  # restored


@pytest.mark.parametrize("limit", [0, 3, 8, 9, 11, 40])
def test_largest_water_box_search(limit):
    tried = []

    def fits(n):
        tried.append(n)
        return n <= limit

    assert speed.largest_fitting(fits, start=8) == limit
    assert len(tried) <= 12


def test_systems_are_the_documented_sizes():
    box = water_box(2)
    assert len(box) == 24 and box.pbc.all() and np.allclose(box.cell.lengths(), 6.2)
    assert [(name, len(atoms)) for name, atoms in systems((2,))] == [("biphenyl-22", 22), ("C60-60", 60),
                                                                      ("water-24", 24)]


@pytest.fixture(scope="module")
def rmd17_dir(tmp_path_factory) -> Path:
    """``rmd17_ethanol_{train,test}_01.npz`` with 16 / 8 rattled ethanol frames and random labels."""
    folder = tmp_path_factory.mktemp("rmd17")
    rng = np.random.default_rng(0)
    base = molecule("CH3CH2OH")
    for split, m in (("train", 16), ("test", 8)):
        coords = base.positions + rng.normal(scale=0.05, size=(m, len(base), 3))
        np.savez(folder / f"rmd17_ethanol_{split}_01.npz", nuclear_charges=base.numbers.astype(np.uint8),
                 coords=coords, energies=-97000.0 + rng.normal(size=m), forces=rng.normal(size=(m, len(base), 3)))
    return folder


def test_rmd17_data_goes_through_equipot_data(rmd17_dir, tmp_path):
    h5 = rmd17_h5("ethanol", rmd17_dir, tmp_path)
    assert h5 == tmp_path / "rmd17_ethanol.h5" and rmd17_h5("ethanol", rmd17_dir, tmp_path) == h5
    train, test = H5Dataset(h5, split="train"), H5Dataset(h5, split="test")
    assert (len(train), len(test)) == (16, 8)
    with np.load(rmd17_dir / "rmd17_ethanol_test_01.npz") as raw:
        assert np.allclose(test[0].positions, raw["coords"][0])  # Å stay Å
        assert np.isclose(test[0].energy, raw["energies"][0] * 0.0433641, rtol=1e-5)  # kcal/mol -> eV
    small = sample(test, 3, seed=0)
    assert len(small) == 3 and set(small.indices) <= set(sample(test, 5, seed=0).indices)
    assert sample(test, None, seed=0) is test and sample(test, 100, seed=0) is test
    with pytest.raises(FileNotFoundError, match="rmd17_aspirin_train_01.npz"):
        rmd17_h5("aspirin", rmd17_dir, tmp_path)


def test_harness_settings_are_the_parser_defaults():
    assert harness.settings(n_train=7).n_train == 7 and harness.settings().budget == 600.0
    with pytest.raises(TypeError, match="n_trian"):
        harness.settings(n_trian=7)
    assert harness.model_overrides({"backbone": "ponita", "hidden": 8}) == ['model.backbone="ponita"',
                                                                           "model.hidden=8"]


def test_train_md17_then_symmetry_on_its_model(rmd17_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--no-mace", "--threads", "1", "--budget", "30", "--max-steps", "2", "--n-train", "6",
            "--n-valid", "2", "--n-test", "3", "--data-dir", str(rmd17_dir), "--out", str(out), *TINY_MODEL,
            f"train.run_dir={tmp_path / 'run'}"]
    assert train_md17.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert (results["n_train"], results["n_valid"], results["n_test"]) == (6, 2, 3)
    assert results["equipot"]["steps"] == 2 and "mace" not in results
    assert "MACE: skipped (--no-mace)" in capsys.readouterr().out
    rows = symmetry.measure(tmp_path / "run" / "model.pt", "ethanol", ["train", "icosahedron:12"], frames=2,
                            rotations=1, data_dir=rmd17_dir, out=out)
    assert [r["points"] for r in rows] == [42, 12] and all(r["force_rel_mean"] >= 0 for r in rows)


def test_accuracy_is_a_front_end_of_the_harness(rmd17_dir, tmp_path, capsys):
    data = ["--valid-frames", "2", "--data", str(rmd17_dir), "--out", str(tmp_path)]
    assert accuracy.main(["--models", "equipot", "--sizes", "4", "6", "--seconds", "1", "--test-frames", "3",
                          "--threads", "1", "--equipot-options", '{"hidden": 8, "layers": 1}', *data]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| equipot-ponita")]
    assert [line.split(" | ")[1] for line in table] == ["4", "6"]
    with pytest.raises(SystemExit):
        accuracy.main(["--models", "equipot", "--sizes", "15", *data])


@pytest.mark.skipif(not harness.mace_available(), reason="needs mace-torch (the peers' environment)")
def test_mace_is_trained_by_the_harness_loop(rmd17_dir, tmp_path):
    args = harness.settings(budget=30.0, max_steps=2, n_train=6, n_valid=2, n_test=3, data_dir=str(rmd17_dir),
                            out=str(tmp_path), mace_hidden="8x0e")
    result = harness.run_model("mace", args, harness.prepare(args))
    assert result["steps"] == 2 and np.isfinite(result["forces_mae_meV_A"])


@pytest.mark.parametrize("command", [["benchmarks/symmetry.py", "--quadrature-table"],
                                     ["-m", "benchmarks.symmetry", "--quadrature-table"]])
def test_entry_points_run_as_files_and_as_modules(command, tmp_path):
    cwd = tmp_path if command[0].endswith(".py") else REPO  # a file runs from anywhere, a module from the root
    path = [str(REPO / command[0])] if command[0].endswith(".py") else command[:2]
    done = subprocess.run([sys.executable, *path, *command[len(path):]], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| icosahedron | 12 | 0 | 0 | 0 | 0 | 0 | 66.3 |" in done.stdout


def test_qm9_benchmark_trains_equipot_and_writes_the_table(tmp_path, monkeypatch):
    """benchmarks/qm9.py on a tiny QM9-like file (small molecules, made-up U0 and mu, splits
    train/valid/test): equipot for a few seconds per target (SchNet needs the peers' environment)."""
    from benchmarks import qm9
    from equipot.data import HDF5Writer

    path = tmp_path / "q.h5"
    rng = np.random.default_rng(0)
    with HDF5Writer(path, source="test") as w:
        for k in range(30):
            atoms = molecule(["CH4", "H2O", "NH3", "CH3OH"][k % 4])
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
            w.add(atoms.numbers, atoms.positions, properties={"U0": -10.0 * len(atoms) + rng.normal(),
                                                               "mu": abs(rng.normal()) + 1.0})
        w.set_units("U0", "eV")
        w.set_units("mu", "Debye")
        for name, idx in (("train", range(20)), ("valid", range(20, 25)), ("test", range(25, 30))):
            w.add_split(name, np.array(list(idx)))
    out = tmp_path / "out"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert qm9.main(["--data", str(path), "--targets", "U0,mu", "--models", "equipot", "--budget", "2",
                     "--n-train", "20", "--n-valid", "5", "--n-test", "5", "--equipot-valid-steps", "1",
                     "--equipot-options", "hidden=8,layers=1,grid_size=8,cutoff=4.0", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    for target, readout in (("U0", "extensive"), ("mu", "dipole")):
        row = results["targets"][target]
        assert row["equipot"]["readout"] == readout and np.isfinite(row["equipot"]["test_mae"])
        assert row["mean_baseline"] > 0
    table = (out / "results.md").read_text()
    assert "| U0 | meV |" in table and "| mu | Debye |" in table
