"""Property models end to end (issue 16): QM9-like targets of each readout kind trained, recorded in
the model file, evaluated in their unit, refused by EquiCalc as a potential; a dead network
detected; validation every N steps; old model files still energy models.

The data: rattled small molecules (H, C, N, O) labelled with made-up properties of QM9's kinds and
units: ``U0`` (eV; isolated-atom references stored as atomrefs, as the QM9 converters do), ``homo``
(eV, intensive), ``mu`` (Debye: the dipole of fixed neutral element charges) and ``r2`` (Bohr^2:
per-element constants plus 3 x the squared extent about the centre of nuclear charge).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError

from equipot import EquiCalc, build_potential, load_model, save_model
from equipot.cli.main import main
from equipot.data import H5Dataset, HDF5Writer
from equipot.training import evaluate, load_config, read_metrics, train
from equipot.training import trainer as trainer_module

from .conftest import TINY

ATOMREFS = {1: -13.6, 6: -1029.8, 7: -1485.3, 8: -2042.6}
CHARGES = {1: 0.15, 6: -0.1, 7: -0.35, 8: -0.45}
NAMES = ["CH4", "H2O", "NH3", "C2H6", "CH3OH", "HCOOH", "CH3CN", "C2H4", "H2CO", "CH3CHO"]


def _labels(atoms: Atoms) -> dict[str, float]:
    z, r = atoms.numbers, atoms.positions
    d = np.linalg.norm(r[:, None] - r[None], axis=-1)
    pair = np.exp(-d)[np.triu_indices(len(z), 1)]
    q = np.array([CHARGES[int(k)] for k in z])
    q -= q.mean()
    c = (z[:, None] * r).sum(0) / z.sum()
    return {"r2": float(sum(CHARGES[int(k)] + 1.0 for k in z)) + 3.0 * float(((r - c) ** 2).sum()),
            "U0": sum(ATOMREFS[int(k)] for k in z) - 2.0 * pair.sum(),
            "homo": -7.0 + 3.0 * pair.mean(),
            "mu": 4.8032 * float(np.linalg.norm((q[:, None] * r).sum(0)))}


@pytest.fixture(scope="module")
def qm9_like(tmp_path_factory):
    path = tmp_path_factory.mktemp("qm9like") / "mols.h5"
    rng = np.random.default_rng(0)
    with HDF5Writer(path, source="test") as w:
        for k in range(60):
            atoms = molecule(NAMES[k % len(NAMES)])
            atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
            w.add(atoms.numbers, atoms.positions, properties=_labels(atoms))
        for name, unit in (("U0", "eV"), ("homo", "eV"), ("mu", "Debye"), ("r2", "Bohr^2")):
            w.set_units(name, unit)
        w.add_atomref("U0", ATOMREFS, unit="eV")
        w.add_split("train", np.arange(0, 40))
        w.add_split("valid", np.arange(40, 50))
        w.add_split("test", np.arange(50, 60))
    return path


def _config(path, run, prop, *extra):
    return load_config(None, [f"data.train_file={path}", "data.train_split=train", "data.valid_split=valid",
                              "data.test_split=test", "data.batch_size=8", "train.max_steps=10",
                              "train.warmup_steps=2", f"train.property={prop}", f"train.run_dir={run}",
                              "model.r3_only=false", "model.grid_size=8", *TINY, *extra])


@pytest.mark.parametrize("prop, readout, unit", [("U0", "extensive", "meV"), ("homo", "intensive", "meV"),
                                                 ("mu", "dipole", "Debye"), ("r2", "spatial_extent", "Bohr^2")])
def test_property_model_trains_records_its_target_and_evaluates_in_its_unit(qm9_like, tmp_path, capsys, prop,
                                                                             readout, unit):
    run = tmp_path / "run"
    summary = train(_config(qm9_like, run, prop, "train.valid_every_steps=5"), log=lambda s: None)
    assert summary["steps"] == 10 and summary["dead_step"] is None
    model = load_model(run / "model.pt")
    cfg = model.config
    assert (cfg.target, cfg.target_readout, cfg.is_potential) == (prop, readout, False)
    assert cfg.target_unit == {"mu": "Debye", "r2": "Bohr^2"}.get(prop, "eV")
    if prop == "U0":  # the file's isolated-atom values are the references
        assert cfg.atomic_energies == [ATOMREFS[z] for z in cfg.elements]
    if prop == "homo":  # standardised by the training mean and spread
        values = H5Dataset(qm9_like, split="train").property_values("homo")
        assert cfg.shift == pytest.approx(values.mean()) and cfg.scale == pytest.approx(values.std())
    if prop == "r2":  # references and weight fitted by least squares: the made-up labels are exactly that form
        values = H5Dataset(qm9_like, split="train").property_values("r2")
        assert cfg.shift == pytest.approx(3.0, rel=1e-6)
        assert summary["test"]["r2_mae"] < 0.1 * np.mean(np.abs(values - values.mean()))
    capsys.readouterr()
    pred = tmp_path / "pred.h5"
    assert main(["eval", str(run / "model.pt"), str(qm9_like), "--split", "test", "-o", str(pred)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(prop))
    assert row.split()[-1] == unit, out
    assert H5Dataset(pred).units()[prop] == cfg.target_unit
    # another property than the model's: one line naming both
    assert main(["eval", str(run / "model.pt"), str(qm9_like), "--property", "gap"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"predicts '{prop}'" in err and "'gap'" in err


def test_validation_every_n_steps(qm9_like, tmp_path):
    run = tmp_path / "run"
    train(_config(qm9_like, run, "homo", "train.valid_every_steps=3", "train.max_steps=12", "train.epochs=100"),
          log=lambda s: None)
    steps = [int(s) for s in read_metrics(run / "metrics.csv")["step"]]
    assert {3, 6, 9, 12} <= set(steps)  # 40 frames / batch 8: epochs end at 5 and 10, validated too
    assert {5, 10} <= set(steps) and len(steps) == len(set(steps))  # each step validated once


def test_equicalc_gives_the_property_and_refuses_energy_of_a_property_model(tmp_path):
    torch.manual_seed(0)
    model = build_potential("ponita", elements=[1, 6, 8], cutoff=4.0, hidden=16, layers=2, grid_size=8,
                            target="mu", target_unit="Debye", target_readout="dipole", scale=4.8032)
    save_model(model, tmp_path / "mu.pt")
    atoms = molecule("CH3OH")
    atoms.calc = EquiCalc(tmp_path / "mu.pt")
    mu = atoms.calc.get_property("mu", atoms)
    assert mu > 0 and np.isfinite(mu)
    assert np.linalg.norm(atoms.get_dipole_moment()) * 4.8032 == pytest.approx(mu, rel=1e-6)
    with pytest.raises(PropertyNotImplementedError) as info:
        atoms.get_potential_energy()
    message = str(info.value)
    assert "\n" not in message and "predicts 'mu' (Debye)" in message and "not a potential" in message


def test_dead_network_is_detected_and_never_kept(qm9_like, tmp_path, monkeypatch):
    """A network with a constant output per element: evaluate reports zero spread; training whose every
    validation finds it dead writes no model.pt and says why in one line."""
    ds = H5Dataset(qm9_like, split="valid")
    torch.manual_seed(0)
    model = build_potential("ponita", elements=[1, 6, 7, 8], cutoff=4.0, hidden=16, layers=2, r3_only=True,
                            target="homo", target_unit="eV", target_readout="intensive").double()
    alive = evaluate(model, ds, 8, property_name="homo").output_std
    with torch.no_grad():
        for head in model.backbone.heads:  # the readout of every layer made constant: a dead network
            head.weight.zero_()
    dead = evaluate(model, ds, 8, property_name="homo").output_std
    assert alive > 1e-3 and dead < 1e-12

    monkeypatch.setattr(trainer_module, "DEAD_OUTPUT_STD", 1e9)  # every validation now sees a dead network
    lines = []
    run = tmp_path / "run"
    with pytest.raises(trainer_module.DeadNetworkError) as info:
        train(_config(qm9_like, run, "homo"), log=lines.append)
    assert "\n" not in str(info.value) and "died" in str(info.value) and "train.lr" in str(info.value)
    assert not (run / "model.pt").exists() and (run / "model_last.pt").exists()
    assert any("has died" in line for line in lines)
    # without validation frames the check runs on training frames: still never kept
    run = tmp_path / "run_novalid"
    with pytest.raises(trainer_module.DeadNetworkError):
        train(_config(qm9_like, run, "homo", "data.valid_split=null", "data.valid_size=0"), log=lambda s: None)
    assert not (run / "model.pt").exists()


def test_old_model_file_without_target_loads_as_a_potential(tmp_path):
    torch.manual_seed(0)
    model = build_potential("ponita", elements=[1, 8], cutoff=4.0, hidden=16, layers=2, grid_size=8)
    save_model(model, tmp_path / "new.pt")
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    payload["version"] = 2
    for key in ("target", "target_unit", "target_readout"):
        payload["config"].pop(key)
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert old.config.is_potential and old.config.target_readout == "extensive"
    from equipot import AtomicGraph

    graph = AtomicGraph.from_atoms(molecule("H2O"), 4.0, dtype=torch.float32)
    assert torch.allclose(old(graph)["energy"], model(graph)["energy"])


def test_parity_panels_show_a_property_in_its_unit():
    from equipot.training.plots import _parity_panels

    values = np.array([1.0, 2.0])
    (label, ref, pred, unit), = _parity_panels({"mu": values, "mu_ref": values + 0.1}, {"mu": "Debye"})
    assert (label, unit) == ("mu (Debye)", "Debye") and np.allclose(pred, values)
    (label, ref, pred, unit), = _parity_panels({"homo": values, "homo_ref": values}, {"homo": "eV"})
    assert (label, unit) == ("homo (meV)", "meV") and np.allclose(pred, 1000 * values)


@pytest.mark.parametrize("command", ["md", "optimize", "export"])
def test_commands_that_need_forces_refuse_a_property_model(tmp_path, capsys, command):
    torch.manual_seed(0)
    model = build_potential("ponita", elements=[1, 8], cutoff=4.0, hidden=16, layers=2, grid_size=8,
                            target="homo", target_unit="eV", target_readout="intensive")
    save_model(model, tmp_path / "homo.pt")
    molecule("H2O").write(tmp_path / "w.xyz")
    args = [str(tmp_path / "homo.pt")] + ([] if command == "export" else [str(tmp_path / "w.xyz")])
    assert main([command, *args]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "a property model (it predicts 'homo' in eV), not a potential" in err


def test_qm9_ponita_preset_loads_by_name_and_builds():
    from equipot.training.config import presets

    assert "qm9_ponita" in presets()
    config = load_config("qm9_ponita", ["data.train_file=x.h5", "train.property=homo"])
    opts = config.model.backbone_options
    assert (opts["grid_size"], opts["hidden"], config.data.batch_size, config.train.lr) == (16, 128, 96, 5e-4)
    assert (config.train.scheduler, config.train.loss, config.train.property) == ("cosine", "l1", "homo")
    model = build_potential("ponita", elements=[1, 6, 7, 8, 9], cutoff=config.model.cutoff, target="homo",
                            target_readout="intensive", **opts)
    assert model.backbone.grid.shape == (16, 3)


def test_export_and_lammps_refuse_a_property_model(tmp_path):
    from equipot.export import export_model
    from equipot.interfaces.lammps import LAMMPSInputError, MLIAPEquipot

    model = build_potential("ponita", elements=[1, 8], cutoff=4.0, hidden=16, layers=2, grid_size=8,
                            target="mu", target_unit="Debye", target_readout="dipole", scale=4.8032)
    save_model(model, tmp_path / "mu.pt")
    with pytest.raises(ValueError, match="property model .*'mu' in Debye"):
        export_model(model, tmp_path / "mu.pt2")
    with pytest.raises(LAMMPSInputError, match="a property model .*'mu' in Debye.*not a potential"):
        MLIAPEquipot(tmp_path / "mu.pt")
