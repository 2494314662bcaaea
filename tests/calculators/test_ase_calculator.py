"""EquiCalc in ASE: MD, optimisation, cell relaxation, bad input."""
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE

from equipot import AtomicGraph, EquiCalc, build_potential, save_model
from equipot.calculators.ase import ExtrapolationWarning
from equipot.testing import nve_drift, predict


def tiny(elements=(1, 6, 8), **kw):
    torch.manual_seed(0)
    return build_potential("ponita", elements=elements, cutoff=4.0, hidden=16, layers=2, grid_size=6, **kw).double()


@pytest.fixture(scope="module")
def copper_model():
    """An R3 model fitted in a few seconds to EMT copper (energies, forces, stress), so that
    optimisation has a physical minimum to find."""
    rng = np.random.default_rng(0)
    frames = []
    for k in range(12):
        a = bulk("Cu", "fcc", a=3.61 * (1 + rng.uniform(-0.04, 0.04)), cubic=True)
        a.rattle(0.08, seed=k)
        a.calc = EMT()
        frames.append((a, a.get_potential_energy(), a.get_forces(), a.get_stress(voigt=False)))
    torch.manual_seed(0)
    model = build_potential("ponita", elements=[29], cutoff=4.0, r3_only=True, hidden=16, layers=2).double()
    model.fit_atomic_energies([f[0].numbers for f in frames], [f[1] for f in frames])
    graph = AtomicGraph.from_atoms([f[0] for f in frames], 4.0)
    e_ref = torch.tensor([f[1] for f in frames])
    f_ref = torch.tensor(np.concatenate([f[2] for f in frames]))
    s_ref = torch.tensor(np.stack([f[3] for f in frames]))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(120):
        out = model(graph, compute_stress=True, create_graph=True)
        loss = ((out["energy"] - e_ref) ** 2).mean() / 16 + 10 * ((out["forces"] - f_ref) ** 2).mean() \
            + 1e3 * ((out["stress"] - s_ref) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_nve_molecule_conserves_energy():
    """800 steps of 0.125 fs (100 fs) on ethanol at 300 K with the model scaled so the largest force is
    2 eV/Å (untrained weights give ~1e-4 eV/Å, which would make any integrator look perfect).
    The scaled random surface is stiff: measured drift 1.3e-3 / 8.7e-4 / 2.5e-5 eV/atom/ps at
    0.5 / 0.25 / 0.125 fs, i.e. integrator error that vanishes with the step, not a model error.
    Asserted: below 2e-4 eV/atom/ps."""
    model, atoms = tiny(), molecule("CH3CH2OH")
    model.set_reference(scale=2.0 / np.abs(predict(model, atoms)["forces"]).max())
    assert np.abs(predict(model, atoms)["forces"]).max() == pytest.approx(2.0)
    result = nve_drift(model, atoms, steps=800, dt_fs=0.125)
    print("NVE drift, ethanol, 0.125 fs:", result)
    assert result["drift"] < 2e-4, result


def test_nve_periodic_box_conserves_energy(copper_model):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 1, 1)
    result = nve_drift(copper_model, atoms, steps=200, dt_fs=1.0, temperature_k=300)
    print("NVE drift, 8-atom Cu box, 1 fs:", result)
    assert result["drift"] < 1e-3, result


@pytest.mark.parametrize("optimizer", [BFGS, FIRE])
def test_optimizers_reach_fmax(copper_model, optimizer):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.1, seed=3)
    atoms.calc = EquiCalc(copper_model)
    assert optimizer(atoms, logfile=None).run(fmax=0.01, steps=300)
    assert np.abs(atoms.get_forces()).max() < 0.01 * np.sqrt(3)


def test_cell_filter_relaxes_strained_cell(copper_model):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.set_cell(atoms.cell.array * 1.04, scale_atoms=True)
    atoms.calc = EquiCalc(copper_model)
    stress_before = np.abs(atoms.get_stress()).max()
    assert FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=0.005, steps=500)
    assert np.abs(atoms.get_stress()).max() < 0.1 * stress_before
    # EMT's lattice constant is 3.59 Å; the fit should relax to within ~2 %
    assert abs(atoms.cell.lengths()[0] - 3.59) < 0.08


def test_calculator_matches_model_and_skin_changes_nothing(tmp_path):
    model = tiny()
    path = tmp_path / "m.pt"
    save_model(model, path)
    atoms = molecule("CH3CH2OH")
    with_skin = EquiCalc(path, skin=1.0)
    no_skin = EquiCalc(model, skin=0.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        e1, f1 = with_skin.get_potential_energy(atoms), with_skin.get_forces(atoms)
        e2, f2 = no_skin.get_potential_energy(atoms), no_skin.get_forces(atoms)
        assert abs(e1 - e2) < 1e-10
        np.testing.assert_allclose(f1, f2, atol=1e-10)
    assert with_skin.neighbors.rebuilds < no_skin.neighbors.rebuilds


def test_device_neighbour_path_matches_matscipy():
    model = tiny()
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(5).normal(scale=0.05, size=atoms.positions.shape)
    ref = EquiCalc(model, neighbors="matscipy")
    dev = EquiCalc(model, neighbors="torch")
    assert abs(ref.get_potential_energy(atoms) - dev.get_potential_energy(atoms)) < 1e-10
    np.testing.assert_allclose(ref.get_forces(atoms), dev.get_forces(atoms), atol=1e-10)
    with pytest.raises(ValueError, match="neighbors must be"):
        EquiCalc(model, neighbors="kdtree")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = tiny(elements=(6,))
    atoms = bulk("C", "diamond", a=3.57) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    cpu, gpu = EquiCalc(model), EquiCalc(model, device="cuda")
    assert abs(cpu.get_potential_energy(atoms) - gpu.get_potential_energy(atoms)) < 1e-8
    np.testing.assert_allclose(cpu.get_forces(atoms), gpu.get_forces(atoms), atol=1e-8)
    np.testing.assert_allclose(cpu.get_stress(atoms), gpu.get_stress(atoms), atol=1e-8)


def test_dtype_device_and_model_untouched():
    model = tiny()
    before = torch.get_default_dtype()
    calc = EquiCalc(model, dtype=torch.float32)
    atoms = molecule("H2O")
    atoms.calc = calc
    f = atoms.get_forces()
    assert f.dtype == np.float64 and np.isfinite(f).all()
    assert torch.get_default_dtype() == before
    assert next(model.parameters()).dtype == torch.float64  # the user's model is not changed


def test_stress_only_for_periodic():
    atoms = molecule("H2O")
    atoms.calc = EquiCalc(tiny())
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


@pytest.mark.parametrize(
    "atoms, message",
    [
        (Atoms("CN", positions=[[0, 0, 0], [1.2, 0, 0]]), "atom 1 has atomic number 7"),
        (Atoms("CO", positions=[[0, 0, 0], [np.nan, 0, 0]]), "atom 1 has a non-finite position"),
        (Atoms("CO", positions=[[0, 0, 0], [np.inf, 0, 0]]), "atom 1 has a non-finite position"),
        (Atoms("CO", positions=[[0, 0, 0], [1, 0, 0]], cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True),
         "zero volume"),
    ],
)
def test_bad_input_is_a_clear_value_error(atoms, message):
    atoms.calc = EquiCalc(tiny())
    with pytest.raises(ValueError, match=message):
        atoms.get_potential_energy()


def test_isolated_atom_and_empty_neighbourhood():
    model = tiny(atomic_energies=[-13.6, -1029.0, -2041.0])
    atoms = Atoms("CO", positions=[[0, 0, 0], [30, 0, 0]])
    atoms.calc = EquiCalc(model)
    assert atoms.get_potential_energy() == pytest.approx(-1029.0 - 2041.0, abs=1e-9)
    np.testing.assert_array_equal(atoms.get_forces(), 0.0)
    single = Atoms("H")
    single.calc = EquiCalc(model)
    assert single.get_potential_energy() == pytest.approx(-13.6, abs=1e-9)


def test_extrapolation_warns_once():
    model = tiny(min_pair_distance=0.9)
    atoms = Atoms("CO", positions=[[0, 0, 0], [0.5, 0, 0]])
    atoms.calc = EquiCalc(model)
    with pytest.warns(ExtrapolationWarning, match="closer than any pair"):
        atoms.get_potential_energy()
    atoms.positions[1, 0] = 0.45
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atoms.get_potential_energy()
