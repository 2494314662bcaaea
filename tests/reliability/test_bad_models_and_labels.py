"""Nothing silently wrong: NaN labels, empty frames, NaN weights, a model that breaks down, malformed
model files, a system too large for the memory: each one clear error naming the file, field, frame
or size (measured before: `valid loss nan` and rc 0; NaN energies blamed on the structure;
state_dict tracebacks; cryptic one-liners such as "error: config")."""
from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from ase.build import molecule

from equipot import EquiCalc, build_potential, load_model, save_model
from equipot.calculators import ase as calculator_module
from equipot.data import H5Dataset
from equipot.training import load_config, train

REPO = Path(__file__).resolve().parents[2]
RMD17 = (REPO / ".." / "shared" / "data" / "rmd17").resolve()
TINY = ["model.cutoff=4.0", "model.hidden=8", "model.layers=1", "model.r3_only=true", "model.basis_size=6",
        "model.kernel_dim=6", "train.device=cpu", "train.progress=false", "train.epochs=1", "data.batch_size=4"]


@pytest.fixture
def ethanol(tmp_path) -> Path:
    if not (RMD17 / "rmd17_ethanol_train_01.npz").exists():
        pytest.skip(f"real rMD17 files not found at {RMD17}")
    from equipot.data import convert_rmd17

    out = tmp_path / "ethanol.h5"
    convert_rmd17([RMD17 / "rmd17_ethanol_train_01.npz"], out, limit=40, keep_old=False)
    return out


@pytest.mark.parametrize("field, row, value, message", [
    ("energy", 7, np.nan, "field 'energy' is NaN or inf in frame 7"),
    ("energy", 3, np.inf, "field 'energy' is NaN or inf in frame 3"),
    ("forces", 9 * 12 + 4, np.nan, "field 'forces' is NaN or inf in frame 12"),
    ("positions", 9 * 30, np.inf, "field 'positions' is NaN or inf in frame 30"),
])
def test_non_finite_labels_are_refused_before_training_and_evaluation(ethanol, tmp_path, field, row, value,
                                                                      message):
    with h5py.File(ethanol, "r+") as f:
        data = f[field][()]
        data[row] = value
        f[field][...] = data
    with pytest.raises(ValueError, match=message) as info:
        train(load_config(None, [f"data.train_file={ethanol}", "data.valid_size=8",
                                 f"train.run_dir={tmp_path / 'run'}", *TINY]), log=lambda s: None)
    assert str(ethanol) in str(info.value)
    from equipot.training.evaluate import evaluate

    model = build_potential("ponita", [1, 6, 8], 4.0, hidden=8, layers=1, r3_only=True)
    with pytest.raises(ValueError, match=message):
        evaluate(model, H5Dataset(ethanol))


def test_a_frame_without_atoms_is_refused(tmp_path):
    from equipot.data import HDF5Writer

    path = tmp_path / "empty_frame.h5"
    with HDF5Writer(path) as w:  # the writer refuses empty frames: this one is made by hand below
        for _ in range(3):
            w.add(np.array([1, 1]), np.array([[0.0, 0, 0], [0, 0, 0.74]]), energy=-1.0, forces=np.zeros((2, 3)))
    with h5py.File(path, "r+") as f:
        f["offsets"][...] = [0, 2, 2, 6]
    with pytest.raises(ValueError, match=f"{path}: frame 1 has no atoms"):
        H5Dataset(path).check_labels()


def _saved(tmp_path: Path) -> tuple[Path, dict]:
    model = build_potential("ponita", [1, 6, 8], 4.0, hidden=8, layers=1, grid_size=12)
    path = tmp_path / "good.pt"
    save_model(model, path)
    return path, torch.load(path, weights_only=True)


def _corrupt(tmp_path: Path, payload: dict, name: str) -> Path:
    path = tmp_path / f"{name}.pt"
    torch.save(payload, path)
    return path


def test_malformed_model_files_say_what_is_wrong_with_which_file(tmp_path):
    good, payload = _saved(tmp_path)
    key = next(k for k in payload["state_dict"] if k.startswith("backbone."))
    cases = {}
    p = copy.deepcopy(payload)
    p["state_dict"][key] = torch.zeros(3, 3)
    cases["shape"] = (p, "the weights do not fit the model its config describes")
    p = copy.deepcopy(payload)
    p["state_dict"]["extra.weight"] = torch.zeros(1)
    cases["extra"] = (p, "Unexpected key")
    p = copy.deepcopy(payload)
    p["config"] = [1, 2]
    cases["config_list"] = (p, "no config mapping")
    p = copy.deepcopy(payload)
    del p["config"]
    cases["no_config"] = (p, "no config mapping")
    p = copy.deepcopy(payload)
    p["version"] = "2"
    cases["version"] = (p, "version must be an integer")
    p = copy.deepcopy(payload)
    p["state_dict"][key] = p["state_dict"][key] * float("nan")
    cases["nan_weight"] = (p, f"weight '{key}' holds NaN or inf")
    p = copy.deepcopy(payload)
    p["config"]["scale"] = float("inf")
    cases["inf_scale"] = (p, "NaN or inf")
    for name, (p, message) in cases.items():
        path = _corrupt(tmp_path, p, name)
        with pytest.raises(ValueError, match=message) as info:
            load_model(path)
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value), name
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_model(tmp_path / "truncated.pt")


def test_a_model_file_still_being_written_is_not_called_corrupt(tmp_path):
    good, _ = _saved(tmp_path)
    path = tmp_path / "writing.pt"
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    holder = subprocess.Popen([sys.executable, "-c", f"import time; f = open({str(path)!r}, 'ab'); time.sleep(60)"])
    try:
        time.sleep(1.0)
        with pytest.raises(ValueError, match=r"process \d+ has it open") as info:
            load_model(path)
        assert "corrupt" not in str(info.value)
    finally:
        holder.kill()
        holder.wait()


def test_a_model_that_breaks_down_is_blamed_not_the_structure(tmp_path, monkeypatch):
    model = build_potential("ponita", [1, 6, 8], 4.0, hidden=8, layers=1, grid_size=12).double()
    atoms = molecule("CH3CH2OH")
    atoms.calc = EquiCalc(model)
    backbone = atoms.calc.model.backbone
    original = type(backbone).forward
    monkeypatch.setattr(type(backbone), "forward", lambda self, *a: original(self, *a) * float("nan"))
    with pytest.raises(ValueError, match="the model gave a non-finite energy for this structure of 9 atoms"):
        atoms.get_potential_energy()


def test_a_system_too_large_for_the_memory_is_refused_before_allocating(monkeypatch):
    from benchmarks.common import untrained_model, water_box

    monkeypatch.setattr(calculator_module, "available_memory", lambda: 50 << 20)  # 50 MiB free
    atoms = water_box(4)
    atoms.calc = EquiCalc(untrained_model("ponita"))
    with pytest.raises(ValueError, match=r"192 atoms \(\d+ pairs within the cutoff\) need about .* GiB .* "
                                         r"about \d+ atoms of this density fit"):
        atoms.get_potential_energy()
