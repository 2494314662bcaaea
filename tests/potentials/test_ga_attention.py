"""Physics of the geometric-algebra attention backbone, in float64.

All symmetries are exact constructions (invariants of geometric products, attention over
neighbour tuples), so errors are float64 round-off: asserted < 1e-10 relative. The model is
built with ``scale=10`` so that untrained forces are O(0.01-0.1) eV/Å and the relative errors
mean something.
"""
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from equipot import AtomicGraph, build_potential, load_model, save_model
from equipot.testing import (
    batch_independence_error,
    evaluate,
    finite_difference_force_error,
    finite_difference_stress_error,
    nve_drift,
    transform_errors,
)

SMALL = {"hidden": 16, "layers": 2, "heads": 2, "references": 3, "basis_size": 6}


def make(parity="square", elements=(1, 6, 8), cutoff=5.0, seed=0, **kw):
    torch.manual_seed(seed)
    return build_potential("ga_attention", elements=list(elements), cutoff=cutoff, parity=parity, scale=10.0,
                           **{**SMALL, **kw}).double()


@pytest.fixture(scope="module")
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(1).normal(scale=0.05, size=atoms.positions.shape)
    return atoms


@pytest.mark.parametrize("parity", ["square", "drop"])
def test_e3_invariance_exact(ethanol, parity):
    model = make(parity)
    rng = np.random.default_rng(0)
    assert np.abs(evaluate(model, ethanol)["forces"]).max() > 0.01  # a non-trivial field to compare
    for reflect in (False, True, False, True):
        err = transform_errors(model, ethanol, rng, reflect=reflect)
        assert err["energy"] < 1e-10 and err["forces"] < 1e-10, (reflect, err)


def test_signed_trivector_is_rotation_invariant_but_chiral(ethanol):
    model = make("signed")
    rng = np.random.default_rng(1)
    for _ in range(3):
        err = transform_errors(model, ethanol, rng, reflect=False)
        assert err["energy"] < 1e-10 and err["forces"] < 1e-10, err
    mirror = transform_errors(model, ethanol, rng, reflect=True)
    # the signed trivector tells the mirror image apart: far above round-off (~1e-16)
    assert mirror["energy"] > 1e-12, mirror


def test_bad_parity_rejected():
    with pytest.raises(ValueError, match="parity"):
        make("odd")


def test_forces_match_finite_difference(ethanol):
    model = make()
    # central difference, h = 1e-4 Å: truncation ~h^2 E''' ~ 1e-8 eV/Å
    assert finite_difference_force_error(model, ethanol, h=1e-4, atoms_to_check=4) < 1e-6


def test_nve_energy_conserved(ethanol):
    # cutoff 3 Å: several pairs enter and leave the cutoff (and the attention) during the run
    model = make(cutoff=3.0)
    out = nve_drift(model, ethanol, steps=100, dt_fs=0.5, temperature_k=300.0)
    # measured ~5e-6 eV/atom/ps drift and ~2e-7 eV/atom fluctuation
    assert out["drift"] < 1e-4 and out["fluctuation"] < 1e-5, out


def test_softmax_smooth_when_neighbour_crosses_cutoff():
    model = make(cutoff=3.0)
    base = [[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, 1.2, 0.0]]
    energies, forces = [], []
    for d in (3.0 - 1e-7, 3.0 + 1e-7):
        out = evaluate(model, Atoms("COHH", positions=base + [[0.0, 0.0, d]]))
        energies.append(out["energy"][0])
        forces.append(out["forces"])
    assert abs(energies[0] - energies[1]) < 1e-9
    np.testing.assert_allclose(forces[0], forces[1], atol=1e-9)


def test_edges_beyond_cutoff_are_ignored(ethanol):
    """Verlet-skin neighbour lists carry pairs beyond the cutoff: they must not change anything."""
    model = make(cutoff=2.5)
    tight = AtomicGraph.from_atoms(ethanol, 2.5)
    loose = AtomicGraph.from_atoms(ethanol, 4.0)
    assert loose.num_edges > tight.num_edges
    a, b = model(tight), model(loose)
    assert abs(float(a["energy"][0].detach() - b["energy"][0].detach())) < 1e-12
    np.testing.assert_allclose(a["forces"].detach().numpy(), b["forces"].detach().numpy(), atol=1e-12, rtol=0)


def test_batch_independence(ethanol):
    model = make()
    other = molecule("H2O")
    changed = molecule("CH4")
    changed.rattle(0.1, seed=3)
    assert batch_independence_error(model, ethanol, other, changed) < 1e-10


def test_isolated_atoms_reference_energy_and_zero_force():
    model = make(atomic_energies=[-13.6, -1029.0, -2041.0], shift=0.25)
    atoms = Atoms("HCOO", positions=[[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    out = evaluate(model, atoms)
    assert abs(out["energy"][0] - (-13.6 - 1029.0 - 2 * 2041.0 + 4 * 0.25)) < 1e-9
    np.testing.assert_array_equal(out["forces"], 0.0)
    # the backbone itself on atoms without edges: finite
    species = torch.arange(3)
    raw = model.backbone(species, torch.zeros(3, 3, dtype=torch.float64), torch.zeros(2, 0, dtype=torch.long),
                         torch.zeros(0, 3, dtype=torch.float64), species, 3)
    assert torch.isfinite(raw).all()


def test_periodic_supercell_extensive():
    atoms = bulk("C", "diamond", a=3.57)  # fcc primitive cell: not orthogonal
    atoms.rattle(0.05, seed=4)
    model = make(elements=(6,), cutoff=3.0)
    e1 = evaluate(model, atoms)
    e8 = evaluate(model, atoms * (2, 2, 2))
    assert abs(e8["energy"][0] / 8 - e1["energy"][0]) < 1e-10 * max(1.0, abs(e1["energy"][0]))
    np.testing.assert_allclose(e8["forces"][: len(atoms)], e1["forces"], atol=1e-10)


def test_stress_matches_finite_difference():
    atoms = bulk("C", "diamond", a=3.6)
    atoms.rattle(0.05, seed=2)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.05, 0.0], [0.0, 1.02, 0.03], [0.0, 0.0, 0.97]]),
                   scale_atoms=True)
    model = make(elements=(6,), cutoff=3.0)
    assert finite_difference_stress_error(model, atoms, h=1e-5) < 1e-7


def test_save_load_round_trip(ethanol, tmp_path):
    model = make("drop")
    save_model(model, tmp_path / "ga.pt")
    loaded = load_model(tmp_path / "ga.pt")
    assert loaded.config.backbone_options["parity"] == "drop"
    assert abs(evaluate(loaded, ethanol)["energy"][0] - evaluate(model, ethanol)["energy"][0]) < 1e-12
