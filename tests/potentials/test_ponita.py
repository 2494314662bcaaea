"""Physics of the R3×S2 (PΘNITA) backbone, in float64.

Tolerances: exact symmetries (translation, permutation, and everything for the R3 variant)
are checked at 1e-10 relative: float64 sums over ~100 edges round at ~1e-14, so 1e-10 leaves
a wide margin while any real symmetry breaking (>= 1e-6) fails. Rotations of the R3×S2 model
are exact only up to the orientation grid's resolution; the error is measured per grid size.
"""
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from equipot import build_potential
from equipot.testing import (
    evaluate,
    finite_difference_force_error,
    finite_difference_stress_error,
    transform_errors,
)

SMALL = dict(hidden=16, layers=2, basis_size=8, kernel_dim=8)


def make(grid_size=8, r3_only=False, elements=(1, 6, 8), seed=0, cutoff=4.0):
    torch.manual_seed(seed)
    return build_potential("ponita", elements=elements, cutoff=cutoff, grid_size=grid_size, r3_only=r3_only,
                           **SMALL).double()


@pytest.fixture(scope="module")
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(1).normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def test_r3_variant_exactly_invariant(ethanol):
    rng = np.random.default_rng(0)
    model = make(r3_only=True)
    for reflect in (False, True):
        err = transform_errors(model, ethanol, rng, reflect=reflect)
        assert err["energy"] < 1e-10 and err["forces"] < 1e-10, err


def test_translation_and_permutation_exact(ethanol):
    model = make(grid_size=12)
    ref = evaluate(model, ethanol)
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(ethanol))
    moved = Atoms(ethanol.numbers[perm], ethanol.positions[perm] + np.array([3.0, -1.0, 7.5]))
    out = evaluate(model, moved)
    assert abs(out["energy"][0] - ref["energy"][0]) < 1e-10 * max(1, abs(ref["energy"][0]))
    np.testing.assert_allclose(out["forces"], ref["forces"][perm], atol=1e-10)


def test_rotation_error_shrinks_with_grid(ethanol):
    """Relative rotation/reflection error of energy and forces against grid size (6 draws each).

    Measured here (hidden 16, 2 layers, random weights): grid 4 -> ~1e-2, 12 -> ~1e-3,
    48 -> ~1e-4 in force error (README table). The test asserts the trend and a loose bound.
    """
    errors = {}
    for n in (4, 12, 48):
        model = make(grid_size=n)
        rng = np.random.default_rng(7)
        errs = [transform_errors(model, ethanol, rng, reflect=k % 2 == 1) for k in range(6)]
        errors[n] = max(e["forces"] for e in errs)
    assert errors[48] < errors[12] < errors[4], errors
    assert errors[48] < 1e-2, errors


def test_forces_match_finite_difference(ethanol):
    model = make(grid_size=8)
    # Central difference with h = 1e-4 Å has truncation error ~h^2 * E''' ~ 1e-8 eV/Å.
    assert finite_difference_force_error(model, ethanol, h=1e-4, atoms_to_check=4) < 1e-6


def test_stress_matches_finite_difference():
    atoms = bulk("C", "diamond", a=3.6) * (1, 1, 1)
    atoms.rattle(0.05, seed=2)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.05, 0.0], [0.0, 1.02, 0.03], [0.0, 0.0, 0.97]]),
                   scale_atoms=True)
    model = make(grid_size=8, elements=(6,))
    assert finite_difference_stress_error(model, atoms, h=1e-5) < 1e-7


@pytest.mark.parametrize("r3_only", [True, False])
def test_supercell_energy_is_extensive(r3_only):
    atoms = bulk("C", "diamond", a=3.57, cubic=False)
    atoms.rattle(0.03, seed=4)
    model = make(grid_size=8, r3_only=r3_only, elements=(6,))
    e1 = evaluate(model, atoms, stress=True)
    e8 = evaluate(model, atoms * (2, 2, 2), stress=True)
    assert abs(e8["energy"][0] / 8 - e1["energy"][0]) < 1e-9 * len(atoms)
    np.testing.assert_allclose(e8["stress"][0], e1["stress"][0], atol=1e-10)
    np.testing.assert_allclose(e8["forces"][: len(atoms)], e1["forces"], atol=1e-10)


def test_periodic_images_across_boundary():
    """A dimer split across the cell boundary sees the same partner as the unwrapped one."""
    model = make(grid_size=8, elements=(6,))
    cell = np.diag([10.0, 10.0, 10.0])
    inside = Atoms("C2", positions=[[5.0, 5.0, 5.0], [6.3, 5.0, 5.0]], cell=cell, pbc=True)
    across = Atoms("C2", positions=[[0.2, 5.0, 5.0], [8.9, 5.0, 5.0]], cell=cell, pbc=True)
    e_in, e_across = evaluate(model, inside), evaluate(model, across)
    assert abs(e_in["energy"][0] - e_across["energy"][0]) < 1e-10
    # the pair across the boundary is 1.3 Å apart: forces pull them together through the wall
    assert np.abs(e_across["forces"]).max() > 1e-6
    np.testing.assert_allclose(e_across["forces"][0], -e_across["forces"][1], atol=1e-12)
