"""The equipot command line: help texts, errors as one line, eval, plot, md, optimize, export."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from equipot import build_potential, load_model, save_model
from equipot.cli.main import SUBCOMMANDS, main
from equipot.data import H5Dataset
from equipot.graph import AtomicGraph

from .conftest import cli_env

MINE = ("train", "eval", "plot", "md", "optimize", "export")


@pytest.mark.parametrize("command", MINE)
def test_help_shows_defaults_and_units(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "default" in text
    units = {"train": "Å", "eval": "meV", "md": "fs", "optimize": "eV/Å", "export": "eV", "plot": "PNG"}
    assert units[command] in text


def test_all_commands_registered():
    assert set(MINE) <= set(SUBCOMMANDS)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("argv, message", [
    (["train", "missing.yaml"], "config file missing.yaml does not exist"),
    (["train", "data.train_file=x.h5", "train.lrr=1"], "unknown config key 'train.lrr'"),
    (["train", "data.train_file=missing.h5"], "missing.h5 does not exist"),
    (["train", "--resume", "no_such_run"], "no_such_run is not a training run directory"),
    (["eval", "missing.pt", "missing.h5"], "does not exist"),
    (["md", "missing.pt", "x.xyz"], "missing.pt does not exist"),
    (["plot", "no_such_run"], "no_such_run does not exist"),
    (["export", "missing.pt"], "missing.pt does not exist"),
])
def test_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    assert message in _error_line(capsys)


def test_unknown_element_is_one_line(tiny_model, tmp_path, capsys):
    ase.io.write(tmp_path / "nacl.xyz", bulk("NaCl", "rocksalt", a=5.6))
    assert main(["optimize", str(tiny_model), str(tmp_path / "nacl.xyz"), "-o", str(tmp_path / "o.xyz")]) == 1
    line = _error_line(capsys)
    assert "atom 0 is Na (Z=11)" in line
    assert main(["--debug", "md", str(tiny_model), str(tmp_path / "nacl.xyz")]) == 1
    assert "Traceback" in capsys.readouterr().err  # --debug shows it


def test_eval_prints_errors_and_writes_predictions(tiny_model, ethanol_h5_cli, tmp_path, capsys):
    out = tmp_path / "pred.h5"
    assert main(["eval", str(tiny_model), str(ethanol_h5_cli), "--split", "test", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    for word in ("energy", "energy_per_atom", "forces", "meV/atom", "meV/Å", "MAE", "RMSE"):
        assert word in text
    pred = H5Dataset(out)
    ref = H5Dataset(ethanol_h5_cli, split="test")
    assert len(pred) == len(ref) == 30
    model = load_model(tiny_model)
    frame = ref[3]
    graph = AtomicGraph.from_structures([(frame.numbers, frame.positions, None, None)], model.cutoff)
    direct = {k: v.detach() for k, v in model(graph).items()}
    np.testing.assert_allclose(pred[3].energy, float(direct["energy"][0]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(pred[3].forces, direct["forces"].numpy(), atol=1e-9)
    f_mae = float(np.mean([np.abs(pred[k].forces - ref[k].forces).mean() for k in range(len(ref))]))
    line = next(x for x in text.splitlines() if x.startswith("forces"))
    assert float(line.split()[1]) == pytest.approx(f_mae * 1000, rel=1e-6)


def test_md_nve_and_langevin(tiny_model, tmp_path, capsys):
    ase.io.write(tmp_path / "ethanol.xyz", molecule("CH3CH2OH"))
    traj = tmp_path / "md.traj"
    assert main(["md", str(tiny_model), str(tmp_path / "ethanol.xyz"), "--steps", "20", "--dt", "0.25",
                 "--thermostat", "nve", "--interval", "5", "-o", str(traj)]) == 0
    text = capsys.readouterr().out
    assert "steps/s" in text and "drift" in text and "meV/atom/ps" in text
    frames = ase.io.read(traj, index=":")
    assert len(frames) == 5  # steps 0, 5, 10, 15, 20
    assert main(["md", str(tiny_model), str(tmp_path / "ethanol.xyz"), "--steps", "10", "--temperature", "500",
                 "--thermostat", "langevin", "-o", str(tmp_path / "md.extxyz"), "--interval", "5"]) == 0
    assert len(ase.io.read(tmp_path / "md.extxyz", index=":")) == 3


def test_optimize_positions_and_cell(tiny_model, tmp_path, capsys):
    ase.io.write(tmp_path / "ethanol.xyz", molecule("CH3CH2OH"))
    out = tmp_path / "relaxed.xyz"
    code = main(["optimize", str(tiny_model), str(tmp_path / "ethanol.xyz"), "--fmax", "0.05", "--steps", "300",
                 "--optimizer", "BFGS", "-o", str(out)])
    assert code == 0, capsys.readouterr()
    assert "converged" in capsys.readouterr().out
    relaxed = ase.io.read(out)
    from equipot import EquiCalc

    relaxed.calc = EquiCalc(load_model(tiny_model))
    assert np.abs(relaxed.get_forces()).max() < 0.05
    # cell relaxation of a periodic carbon cell with the same model
    ase.io.write(tmp_path / "diamond.xyz", bulk("C", "diamond", a=3.7))
    assert main(["optimize", str(tiny_model), str(tmp_path / "diamond.xyz"), "--cell", "--fmax", "0.05",
                 "--steps", "50", "-o", str(tmp_path / "d.xyz")]) in (0, 2)
    text = capsys.readouterr().out
    assert "cell lengths" in text
    assert main(["optimize", str(tiny_model), str(tmp_path / "ethanol.xyz"), "--cell"]) == 1
    assert "periodic" in capsys.readouterr().err


def test_train_then_plot(ethanol_h5_cli, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", f"data.train_file={ethanol_h5_cli}", "data.train_split=train", "data.valid_size=6",
            "data.batch_size=6", "train.epochs=2", f"train.run_dir={run}", "train.device=cpu", "model.cutoff=4.0",
            "model.hidden=8", "model.layers=1", "model.r3_only=true", f"data.test_file={ethanol_h5_cli}",
            "data.test_split=test", "train.progress=false"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "meV/atom" in text and "meV/Å" in text and "test (30 frames)" in text
    assert main(["plot", str(run)]) == 0
    written = capsys.readouterr().out.split()
    names = sorted(Path(p).name for p in written)
    assert names == ["learning_curves.png", "parity_test.png", "parity_valid.png"]
    for p in written:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = (run / "config.yaml").read_text()
    assert "hidden: 8" in config and "grid_size:" in config
    assert main(["train", "--print-config", f"data.train_file={ethanol_h5_cli}", "model.hidden=8"]) == 0
    assert "hidden: 8" in capsys.readouterr().out


LOADER = """
import json, sys, torch
extra = {"equipot.json": ""}
program = torch.export.load(sys.argv[1], extra_files=extra)
meta = json.loads(extra["equipot.json"])
inputs = torch.load(sys.argv[2])
energy, forces = program.module()(*inputs)
torch.save({"energy": energy, "forces": forces, "cutoff": meta["cutoff"],
            "equipot_imported": any(m.split(".")[0] == "equipot" for m in sys.modules)}, sys.argv[3])
"""


def test_export_runs_without_equipot(tmp_path, capsys):
    """The .pt2 program gives the Potential's energy and forces, loaded in a process that never imports equipot."""
    torch.manual_seed(0)
    model = build_potential("ponita", elements=(1, 6, 8), cutoff=3.5, hidden=8, layers=1, r3_only=True,
                            basis_size=6, kernel_dim=6, widening=2, avg_num_neighbors=6.0, scale=0.7,
                            atomic_energies=[-13.6, -1029.0, -2042.0]).double()
    save_model(model, tmp_path / "model.pt")
    assert main(["export", str(tmp_path / "model.pt")]) == 0
    assert "checked against the model" in capsys.readouterr().out
    artifact = tmp_path / "model.pt2"
    structures = [molecule("CH3CH2OH"), molecule("H2O"), molecule("CH4")]
    for a in structures:
        a.rattle(0.05, seed=1)
    graph = AtomicGraph.from_atoms(structures, model.cutoff)
    ref = model(graph)
    torch.save([graph.positions, graph.numbers, graph.edge_index, graph.edge_shift, graph.cell, graph.batch],
               tmp_path / "inputs.pt")
    (tmp_path / "load.py").write_text(LOADER)
    env = cli_env()
    env.pop("PYTHONPATH")  # the loading process must not even be able to import equipot from here
    subprocess.run([sys.executable, str(tmp_path / "load.py"), str(artifact), str(tmp_path / "inputs.pt"),
                    str(tmp_path / "out.pt")], cwd=tmp_path, env=env, check=True, timeout=120)
    out = torch.load(tmp_path / "out.pt")
    assert not out["equipot_imported"] and out["cutoff"] == 3.5
    torch.testing.assert_close(out["energy"], ref["energy"].detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out["forces"], ref["forces"].detach(), rtol=0, atol=1e-10)
    meta = {"equipot.json": ""}
    torch.export.load(str(artifact), extra_files=meta)
    assert json.loads(meta["equipot.json"])["elements"] == [1, 6, 8]


def test_help_starts_without_torch_and_info_without_backbones(tmp_path):
    """`equipot --help` imports no torch; `equipot info FILE.h5` imports no backbone (cold start)."""
    from equipot.data import HDF5Writer

    h5 = tmp_path / "one.h5"
    with HDF5Writer(h5) as w:
        w.add(numbers=[1, 8, 1], positions=np.eye(3), energy=-1.0)
    probe = ("import sys\nfrom equipot.cli.main import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch'}),"
             " [m for m in sys.modules if m.startswith('equipot.potentials')])")
    env = cli_env()
    out = subprocess.run([sys.executable, "-c", probe, "--help"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[] []", out.stdout[-300:]
    out = subprocess.run([sys.executable, "-c", probe, "info", str(h5)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip().splitlines()[-1].endswith(" []"), out.stdout[-300:] + out.stderr[-300:]
