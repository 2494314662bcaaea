"""Long molecular dynamics through EquiCalc: energy conservation, no NaN at 500 K, one extrapolation warning.

The model is a tiny R3 model fitted for a few seconds to 40 real revised-MD17 ethanol frames, so
the forces have the size of real molecular forces; its ``min_pair_distance`` is the shortest pair
in the 1000 training frames. Its well around ethanol is shallow: started from the first training
frame (not its own minimum) at 300 K, the molecule heats far above that and atoms pass through
each other, and energy conservation measured on such a trajectory passed or failed with the
rounding of the fit (thread count, order of tests). NVE therefore starts from the model's own
minimum (BFGS) with 300 K velocities, and each run checks that it stayed in the well (mean
temperature below 300 K). A second, hostile model (random weights scaled to 1 eV/Å forces) lets
atoms collapse onto each other: no NaN even then, and exactly one extrapolation warning.

The long runs (20 000 NVE steps, 20 000 Langevin steps at 500 K) are marked slow; the same checks
run in CI on short trajectories. Drifts are printed (pytest -s shows them).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.md.langevin import Langevin
from ase.optimize import BFGS

from equipot import AtomicGraph, build_potential
from equipot.calculators.ase import EquiCalc, ExtrapolationWarning
from equipot.data.units import KCAL_MOL
from equipot.testing import nve_drift, predict, thermalize

SHARED_RMD17 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "rmd17"


@pytest.fixture(scope="module")
def ethanol():
    """(model, first training frame as Atoms): the fitted tiny model, float64."""
    path = (SHARED_RMD17 / "rmd17_ethanol_train_01.npz").resolve()
    if not path.exists():
        pytest.skip(f"real rMD17 files not found at {path.parent} (shared/ must sit beside the repository)")
    with np.load(path) as d:
        numbers, coords = d["nuclear_charges"].astype(np.int64), d["coords"]
        energies, forces = d["energies"] * KCAL_MOL, d["forces"] * KCAL_MOL
    pairs = np.triu_indices(len(numbers), 1)
    shortest = float(min(np.linalg.norm(x[:, None] - x[None], axis=-1)[pairs].min() for x in coords))
    idx = np.arange(0, len(coords), 25)
    torch.manual_seed(0)
    model = build_potential("ponita", elements=[1, 6, 8], cutoff=4.0, r3_only=True, hidden=16, layers=2,
                            min_pair_distance=shortest).double()
    model.fit_atomic_energies([numbers] * len(idx), energies[idx])
    model.set_reference(scale=float(np.sqrt((forces[idx] ** 2).mean())))
    graph = AtomicGraph.from_atoms([Atoms(numbers=numbers, positions=x) for x in coords[idx]], 4.0)
    e_ref = torch.as_tensor(energies[idx])
    f_ref = torch.as_tensor(forces[idx].reshape(-1, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        out = model(graph, create_graph=True)
        loss = ((out["energy"] - e_ref) ** 2).mean() / len(numbers) ** 2 + 10 * ((out["forces"] - f_ref) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, Atoms(numbers=numbers, positions=coords[0])


def hostile_model(min_pair_distance: float):
    """Random weights scaled so ethanol's RMS force is 1 eV/Å: nothing holds atoms apart."""
    torch.manual_seed(1)
    model = build_potential("ponita", elements=[1, 6, 8], cutoff=4.0, hidden=16, layers=2, grid_size=6,
                            min_pair_distance=min_pair_distance).double()
    rms = float(np.sqrt((predict(model, molecule("CH3CH2OH"))["forces"] ** 2).mean()))
    model.set_reference(scale=1.0 / rms)
    return model


# --------------------------------------------------------------------------------------------- NVE
def _nve(ethanol, steps: int) -> dict:
    model, atoms = ethanol
    atoms = atoms.copy()
    atoms.calc = EquiCalc(model)
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    result = nve_drift(model, atoms, steps=steps, dt_fs=0.5, temperature_k=300.0)
    print(f"\nNVE ethanol float64, {steps} steps of 0.5 fs from the model's minimum: drift {result['drift']:.2e} "
          f"eV/atom/ps, fluctuation {result['fluctuation']:.2e} eV/atom, mean T {result['temperature_k']:.0f} K")
    # 300 K of kinetic energy at a minimum shares out to ~150 K; far more means the molecule fell apart
    assert result["temperature_k"] < 300.0, result
    return result


def test_nve_short_conserves_energy(ethanol):
    """500 steps (0.25 ps). The bounds (fluctuation 1e-3 eV/atom, ~4 % of kT at 300 K) leave room
    for velocity Verlet's own O(dt^2) error and are far below what forces that are not minus the
    energy's gradient, or that jump at the cutoff, give."""
    result = _nve(ethanol, 500)
    assert result["drift"] < 3e-3, result
    assert result["fluctuation"] < 1e-3, result


@pytest.mark.slow
def test_nve_20000_steps_conserves_energy(ethanol):
    """20 000 steps (10 ps) in float64."""
    result = _nve(ethanol, 20_000)
    assert result["drift"] < 1e-4, result
    assert result["fluctuation"] < 1e-3, result


# ---------------------------------------------------------------------------------------- Langevin
def _langevin(model, atoms: Atoms, steps: int, temperature_k: float = 500.0) -> tuple[list, float]:
    """Langevin at ``temperature_k``; fails at the first non-finite value.

    Returns the extrapolation warnings raised and the shortest pair distance seen (Å)."""
    atoms = atoms.copy()
    atoms.calc = EquiCalc(model)
    rng = np.random.default_rng(7)
    thermalize(atoms, temperature_k, rng)
    dyn = Langevin(atoms, timestep=0.5 * units.fs, temperature_K=temperature_k, friction=0.02 / units.fs, rng=rng,
                   fixcm=False)
    shortest = [np.inf]
    pairs = np.triu_indices(len(atoms), 1)

    def check():
        step = dyn.nsteps
        assert np.isfinite(atoms.positions).all(), f"non-finite positions at step {step}"
        assert np.isfinite(atoms.get_forces()).all(), f"non-finite forces at step {step}"
        assert np.isfinite(atoms.get_potential_energy()), f"non-finite energy at step {step}"
        shortest[0] = min(shortest[0], float(atoms.get_all_distances()[pairs].min()))

    dyn.attach(check, interval=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dyn.run(steps)
    extrapolation = [w for w in caught if issubclass(w.category, ExtrapolationWarning)]
    print(f"\nLangevin {temperature_k:.0f} K, {steps} steps: final T {atoms.get_temperature():.0f} K, shortest pair "
          f"{shortest[0]:.3f} Å, extrapolation warnings {len(extrapolation)}")
    return extrapolation, shortest[0]


def _check_warnings(extrapolation: list, shortest: float, limit: float) -> None:
    assert len(extrapolation) == (1 if shortest < limit else 0), (len(extrapolation), shortest, limit)
    for w in extrapolation:
        assert "closer than any pair in the training data" in str(w.message)


def test_langevin_500k_short_stays_finite(ethanol):
    model, atoms = ethanol
    extrapolation, shortest = _langevin(model, atoms, 300)
    _check_warnings(extrapolation, shortest, model.config.min_pair_distance)


def test_hostile_model_never_nan_and_warns_once():
    """Atoms of the hostile model come within a few hundredths of an Å: still finite, one warning."""
    extrapolation, shortest = _langevin(hostile_model(1.2), molecule("CH3CH2OH"), 300)
    assert shortest < 1.2
    _check_warnings(extrapolation, shortest, 1.2)


@pytest.mark.slow
def test_langevin_500k_20000_steps_never_nan(ethanol):
    model, atoms = ethanol
    extrapolation, shortest = _langevin(model, atoms, 20_000)
    _check_warnings(extrapolation, shortest, model.config.min_pair_distance)
