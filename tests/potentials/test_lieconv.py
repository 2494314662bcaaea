"""Physics of the LieConv backbone, in float64.

Exact by construction (checked at 1e-10 relative): translations, the inversion x -> -x (lifts
come in pairs R, -R), determinism at inference, batch independence. Approximate: rotations
and permutations (lifts are a fixed sample per atom slot); the errors are measured and bounded.
Models are small and untrained (hidden 16, 2 layers); ``avg_num_neighbors=1, scale=100`` give
forces of ~0.1-1 eV/Å so that relative errors are not dominated by tiny absolute values.
"""
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from equipot import AtomicGraph, build_potential, load_model, save_model
from equipot.potentials.lieconv import quaternion_to_matrix, random_quaternions, relative_log
from equipot.testing import (
    batch_independence_error,
    finite_difference_force_error,
    finite_difference_stress_error,
    nve_drift,
    predict,
    random_rotation,
    transform_errors,
)

SMALL = {"hidden": 16, "layers": 2, "basis_size": 6, "kernel_dim": 8, "avg_num_neighbors": 1.0, "scale": 100.0}


def make(seed=0, **options):
    torch.manual_seed(seed)
    kw = {**SMALL, **options}
    return build_potential("lieconv", elements=[1, 6, 8], cutoff=5.0, **kw).double().eval()


@pytest.fixture(scope="module")
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(1).normal(scale=0.05, size=atoms.positions.shape)
    return atoms


@pytest.fixture(scope="module")
def model():
    return make()


def rotation_force_error(model, atoms, rotations=6, seed=3):
    """RMS over rotations of |F(Rx) - R F(x)|, relative to the RMS force (pure rotations, same order)."""
    ref = predict(model, atoms)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(rotations):
        rot = random_rotation(rng)
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T
        diffs.append(predict(model, moved)["forces"] - ref["forces"] @ rot.T)
    return float(np.sqrt(np.mean(np.square(diffs))) / np.sqrt(np.mean(ref["forces"] ** 2)))


def test_log_map_matches_relative_rotation():
    g = torch.Generator().manual_seed(0)
    qa, qb = random_quaternions((50,), generator=g), random_quaternions((50,), generator=g)
    omega = relative_log(qa, qb)
    angle = omega.norm(dim=-1)
    assert float(angle.max()) <= math.pi + 1e-12
    axis = omega / angle[:, None]
    k = torch.zeros(50, 3, 3, dtype=torch.float64)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    rodrigues = torch.eye(3, dtype=torch.float64) + torch.sin(angle)[:, None, None] * k \
        + (1 - torch.cos(angle))[:, None, None] * k @ k
    expected = quaternion_to_matrix(qa).transpose(1, 2) @ quaternion_to_matrix(qb)
    torch.testing.assert_close(rodrigues, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(relative_log(qa, qa), torch.zeros(50, 3, dtype=torch.float64), atol=1e-12, rtol=0)


def test_translation_and_inversion_exact(model, ethanol):
    ref = predict(model, ethanol)
    shifted = Atoms(ethanol.numbers, ethanol.positions + np.array([3.0, -1.0, 7.5]))
    inverted = Atoms(ethanol.numbers, -ethanol.positions)
    for moved, sign in ((shifted, 1.0), (inverted, -1.0)):
        out = predict(model, moved)
        assert abs(out["energy"][0] - ref["energy"][0]) < 1e-10 * max(1, abs(ref["energy"][0]))
        np.testing.assert_allclose(out["forces"], sign * ref["forces"], atol=1e-10)


def test_transform_errors_default_lifts(model, ethanol):
    """transform_errors (rotation or improper rotation + translation + permutation), 4 lifts.

    Measured (this seed, 4 transforms): energy <= 3.7e-3 relative (|E| ~ 1.5 eV); forces
    <= 2.7e-3 eV/Å (transform_errors divides by max(1, max |F|) and max |F| ~ 0.08 eV/Å, so this
    is ~3 % of the largest force). Asserted with a ~4x margin.
    """
    rng = np.random.default_rng(0)
    errs = [transform_errors(model, ethanol, rng, reflect=r) for r in (False, True, False, True)]
    assert max(e["energy"] for e in errs) < 1.5e-2, errs
    assert max(e["forces"] for e in errs) < 1e-2, errs


def test_rotation_error_shrinks_with_lifts(ethanol):
    """RMS force rotation error relative to the RMS force, against the number of lifts.

    Measured (diagonal pairing): L=2 -> 0.16, L=4 -> 0.10, L=8 -> 0.09, L=32 -> 0.05,
    L=64 -> 0.034 (~1/sqrt(L)); without the R/-R pairing L=4 -> 0.15, L=32 -> 0.06.
    """
    errors = {n: rotation_force_error(make(num_lifts=n), ethanol) for n in (2, 32)}
    assert errors[32] < 0.6 * errors[2], errors
    assert errors[32] < 0.1, errors


def test_full_pairing(ethanol):
    """All same-parity lift pairs (cost E*L^2/2): inversion stays exact, rotations approximate."""
    model = make(num_lifts=4, pairing="full")
    ref = predict(model, ethanol)
    out = predict(model, Atoms(ethanol.numbers, -ethanol.positions))
    np.testing.assert_allclose(out["forces"], -ref["forces"], atol=1e-10)
    assert rotation_force_error(model, ethanol, rotations=3) < 0.3


def test_forces_match_finite_difference(model, ethanol):
    # central difference, h = 1e-4 Å: truncation ~h^2 E''' ~ 1e-8 eV/Å
    assert finite_difference_force_error(model, ethanol, h=1e-4, atoms_to_check=3) < 1e-6


def test_nve_energy_conservation():
    atoms = molecule("H2O")
    drift = nve_drift(make(), atoms, steps=100, dt_fs=0.5, temperature_k=300.0)
    # velocity Verlet on a smooth surface: drift ~1e-5 eV/atom/ps; a non-conservative force or a
    # surface that changes between calls (re-sampled lifts) gives >= 1e-2
    assert drift["drift"] < 1e-3 and drift["fluctuation"] < 1e-3, drift


def test_batch_independence(model, ethanol):
    water = molecule("H2O")
    changed = water.copy()
    changed.positions[0] += [0.3, -0.2, 0.1]
    bigger = molecule("CH3OH")
    assert batch_independence_error(model, ethanol, water, changed) < 1e-12
    assert batch_independence_error(model, ethanol, water, bigger) < 1e-12
    # a structure's lifts depend on its own atom slots only, not on its place in the batch
    e_first = predict(model, [ethanol, bigger])["energy"][0]
    e_second = predict(model, [bigger, ethanol])["energy"][1]
    assert abs(e_first - e_second) < 1e-12


def test_isolated_atom_reference_energy():
    model = make(atomic_energies=[-13.6, -1029.0, -2041.0], shift=0.5)
    atoms = Atoms("HCO", positions=[[0, 0, 0], [10, 0, 0], [0, 10, 0]])
    out = predict(model, atoms)
    assert np.isfinite(out["energy"]).all()
    assert abs(out["energy"][0] - (-13.6 - 1029.0 - 2041.0 + 1.5)) < 1e-9
    np.testing.assert_array_equal(out["forces"], 0.0)


def test_deterministic_at_inference_and_sampled_in_training(ethanol):
    model = make()
    e1 = predict(model, ethanol)["energy"][0]
    model.train()  # training mode draws fresh lifts every call
    graph = AtomicGraph.from_atoms(ethanol, model.cutoff)
    with torch.no_grad():
        t1 = model(graph, compute_forces=False)["energy"][0].item()
        t2 = model(graph, compute_forces=False)["energy"][0].item()
    assert t1 != t2
    model.eval()
    assert predict(model, ethanol)["energy"][0] == e1
    with torch.no_grad():
        assert make()(graph, compute_forces=False)["energy"][0].item() == e1  # same seed, fresh model
    backbone = model.backbone
    torch.testing.assert_close(backbone._fixed_lifts(3), make().backbone._fixed_lifts(600)[:3], atol=0, rtol=0)


def test_periodic_stress_and_save_load(tmp_path):
    """Only edge vectors enter, so periodic cells work; the lifts are rebuilt from the saved seed."""
    atoms = bulk("C", "diamond", a=3.57)
    atoms.rattle(0.05, seed=2)
    model = make(num_lifts=2)
    assert finite_difference_stress_error(model, atoms, h=1e-5) < 1e-7
    save_model(model, tmp_path / "lieconv.pt")
    loaded = load_model(tmp_path / "lieconv.pt").double().eval()
    np.testing.assert_array_equal(predict(loaded, atoms)["forces"], predict(model, atoms)["forces"])


def test_bad_options():
    with pytest.raises(ValueError, match="even"):
        make(num_lifts=3)
    with pytest.raises(ValueError, match="pairing"):
        make(pairing="some")
