"""Physics of the Frame Averaging backbone, in float64.

Frame averaging is exactly invariant by construction, so every symmetry is checked at 1e-10
relative (float64 sums over ~100 edges round at ~1e-14). Degenerate second moments (benzene,
methane, diatomics, lone atoms) must give finite, continuous energies and conservative forces.
Models are small and untrained (hidden 16, 2 layers); ``avg_num_neighbors=1, scale=100`` give
forces of ~1 eV/Å.
"""
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from equipot import AtomicGraph, build_potential, load_model, save_model
from equipot.potentials.frame_averaging import FrameSet, SafeEigh
from equipot.testing import (
    batch_independence_error,
    finite_difference_force_error,
    finite_difference_stress_error,
    nve_drift,
    predict,
    transform_errors,
)

SMALL = {"hidden": 16, "layers": 2, "basis_size": 6, "kernel_dim": 8, "avg_num_neighbors": 1.0, "scale": 100.0}
VARIANTS = {
    "global-mlp": {},
    "local": {"frame": "local"},
    "global-ponita1": {"inner": "ponita", "inner_options": {"hidden": 16, "layers": 2, "grid_size": 1,
                                                             "basis_size": 6, "kernel_dim": 8}},
}


def make(seed=0, **options):
    torch.manual_seed(seed)
    kw = {**SMALL, **options}
    return build_potential("frame_averaging", elements=[1, 6, 8], cutoff=5.0, **kw).double().eval()


@pytest.fixture(scope="module")
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(1).normal(scale=0.05, size=atoms.positions.shape)
    return atoms


@pytest.mark.parametrize("variant", VARIANTS)
def test_exactly_invariant(variant, ethanol):
    """Rotation / improper rotation + translation + permutation, all exact."""
    model = make(**VARIANTS[variant])
    rng = np.random.default_rng(0)
    for reflect in (False, True):
        err = transform_errors(model, ethanol, rng, reflect=reflect)
        assert err["energy"] < 1e-10 and err["forces"] < 1e-10, (variant, err)


def test_se3_frames_rotation_invariant_but_chiral(ethanol):
    """group="SE3" (4 proper frames): rotations exact; mirror images differ (measured: energy 8e-7, forces 3e-5)."""
    model = make(group="SE3")
    rng = np.random.default_rng(0)
    err = transform_errors(model, ethanol, rng)
    assert err["energy"] < 1e-10 and err["forces"] < 1e-10, err
    mirror = transform_errors(model, ethanol, rng, reflect=True)
    assert mirror["energy"] > 1e-12, mirror


@pytest.mark.parametrize("variant", ["global-mlp", "local"])
def test_forces_match_finite_difference(variant, ethanol):
    # central difference, h = 1e-4 Å: truncation ~h^2 E''' ~ 1e-8 eV/Å at forces ~1 eV/Å
    model = make(**VARIANTS[variant])
    assert finite_difference_force_error(model, ethanol, h=1e-4, atoms_to_check=3) < 1e-6


def _path(atoms, direction, ts):
    return [Atoms(atoms.numbers, atoms.positions + t * direction) for t in ts]


@pytest.mark.parametrize("variant", ["global-mlp", "local"])
def test_benzene_path_through_symmetric_geometry(variant):
    """Stretch D6h benzene along x: x(t) = x0 + t * (x0 . e_x) e_x, t in [-0.08, 0.08].

    The relative in-plane eigen-gap is ~|t|, so the path crosses the degenerate point (t = 0,
    axis level only) and the fade-in band [0.01, 0.05] on both sides. Energies and forces must
    be finite, E(t) continuous, and dE/dt (central difference, h = 1e-6) must equal -F . dx/dt
    at points inside the band (measured agreement ~3e-8 eV, the difference's round-off).
    """
    model = make(**VARIANTS[variant])
    benzene = molecule("C6H6")
    direction = benzene.positions * np.array([1.0, 0.0, 0.0])
    ts = np.linspace(-0.08, 0.08, 17)
    outs = [predict(model, a) for a in _path(benzene, direction, ts)]
    energies = np.array([o["energy"][0] for o in outs])
    assert all(np.isfinite(o["forces"]).all() for o in outs) and np.isfinite(energies).all()
    slopes = np.array([-(o["forces"] * direction).sum() for o in outs])
    # continuity: consecutive energies differ by at most max|dE/dt| * dt (plus slack)
    step = ts[1] - ts[0]
    assert np.abs(np.diff(energies)).max() < 1.5 * np.abs(slopes).max() * step
    for t in (0.0, 0.012, 0.03):
        h = 1e-6
        e_p, e_m = (predict(model, a)["energy"][0] for a in _path(benzene, direction, [t + h, t - h]))
        out = predict(model, _path(benzene, direction, [t])[0])
        assert abs((e_p - e_m) / (2 * h) + (out["forces"] * direction).sum()) < 1e-6, t


def test_degenerate_levels_weights():
    """D6h benzene uses only the axis level; methane only the radial one; generic molecules full frames."""
    def weights(atoms):
        x = torch.tensor(atoms.positions - atoms.positions.mean(0))
        frames = FrameSet((x.T @ x / len(atoms))[None], "E3", 0.01, 0.05)
        w = frames.weights[0]
        return float(w[:8].sum()), float(w[8:10].sum()), float(w[10:12].sum()), float(w[12])

    assert weights(molecule("C6H6")) == pytest.approx((0.0, 1.0, 0.0, 0.0))
    assert weights(molecule("CH4")) == pytest.approx((0.0, 0.0, 0.0, 1.0))
    assert weights(molecule("CO"))[2] == pytest.approx(1.0)
    assert weights(molecule("CH3CH2OH"))[0] == pytest.approx(1.0)


@pytest.mark.parametrize("variant", ["global-mlp", "local"])
def test_degenerate_molecules_finite_and_conservative(variant):
    """Methane (triple degeneracy), CO and CO2 (linear), H2 at exact symmetric geometries."""
    model = make(**VARIANTS[variant])
    for name in ("CH4", "CO", "CO2", "H2"):
        atoms = molecule(name)
        out = predict(model, atoms)
        assert np.isfinite(out["energy"]).all() and np.isfinite(out["forces"]).all(), name
        np.testing.assert_allclose(out["forces"].sum(0), 0.0, atol=1e-10)
        assert finite_difference_force_error(model, atoms, h=1e-5, atoms_to_check=2) < 1e-6, name


def test_training_through_degenerate_eigh():
    """Force training (double backward) at D6h benzene and a lone atom: finite parameter gradients."""
    model = make()
    model.train()
    graph = AtomicGraph.from_atoms([molecule("C6H6"), molecule("CH3CH2OH"), Atoms("O")], 5.0)
    out = model(graph, create_graph=True)
    loss = (out["forces"] ** 2).sum() + (out["energy"] ** 2).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_safe_eigh_gradients():
    """Away from degeneracy SafeEigh's first and second derivatives equal torch.linalg.eigh's."""
    a = torch.randn(3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = (a + a.transpose(1, 2)).requires_grad_(True)
    tol = torch.full((3,), 1e-8, dtype=torch.float64)
    weights = torch.arange(3.0, dtype=torch.float64)

    def loss(eigh, m):
        lam, vec = eigh(0.5 * (m + m.transpose(1, 2)))
        return (lam**2).sum() + (vec[..., 0] ** 2 * weights).sum() + (vec[..., 1] * vec[..., 2]).pow(2).sum()

    results = []
    for eigh in (torch.linalg.eigh, lambda m: SafeEigh.apply(m, tol)):
        (g,) = torch.autograd.grad(loss(eigh, a), a, create_graph=True)
        (gg,) = torch.autograd.grad((g * g.detach().sin()).sum(), a)
        results.append((g.detach(), gg))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-10, rtol=0)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-8, rtol=0)
    # at exact degeneracy, with no gradient on the degenerate eigenvectors: finite
    iso = torch.eye(3, dtype=torch.float64).requires_grad_(True)
    lam, vec = SafeEigh.apply(iso, torch.tensor(0.1, dtype=torch.float64))
    (lam.sum() + 0.0 * vec.sum()).backward()
    assert torch.isfinite(iso.grad).all()


def test_nve_energy_conservation():
    drift = nve_drift(make(), molecule("H2O"), steps=100, dt_fs=0.5, temperature_k=300.0)
    # velocity Verlet on a smooth surface: ~1e-5 eV/atom/ps; non-conservative forces give >= 1e-2
    assert drift["drift"] < 1e-3 and drift["fluctuation"] < 1e-3, drift


@pytest.mark.parametrize("variant", ["global-mlp", "local"])
def test_batch_independence(variant, ethanol):
    model = make(**VARIANTS[variant])
    water = molecule("H2O")
    changed = water.copy()
    changed.positions[0] += [0.3, -0.2, 0.1]
    assert batch_independence_error(model, ethanol, water, changed) < 1e-12
    assert batch_independence_error(model, ethanol, water, molecule("CH4")) < 1e-12


@pytest.mark.parametrize("variant", VARIANTS)
def test_isolated_atom_reference_energy(variant):
    model = make(atomic_energies=[-13.6, -1029.0, -2041.0], shift=0.5, **VARIANTS[variant])
    atoms = Atoms("HCO", positions=[[0, 0, 0], [10, 0, 0], [0, 10, 0]])
    out = predict(model, atoms)
    assert abs(out["energy"][0] - (-13.6 - 1029.0 - 2041.0 + 1.5)) < 1e-9
    np.testing.assert_array_equal(out["forces"], 0.0)


def test_deterministic_and_save_load(ethanol, tmp_path):
    model = make(**VARIANTS["global-ponita1"])
    first = predict(model, ethanol)
    assert predict(model, ethanol)["energy"][0] == first["energy"][0]
    save_model(model, tmp_path / "fa.pt")
    loaded = load_model(tmp_path / "fa.pt").double()
    assert loaded.config.backbone_options["inner_options"]["grid_size"] == 1
    np.testing.assert_array_equal(predict(loaded, ethanol)["forces"], first["forces"])


def test_periodic_input():
    """Global frames refuse periodic input; local frames handle it (invariance, stress)."""
    atoms = bulk("C", "diamond", a=3.57) * (1, 1, 1)
    atoms.rattle(0.05, seed=2)
    with pytest.raises(ValueError, match="periodic"):
        predict(make(), atoms)
    model = make(frame="local")
    err = transform_errors(model, atoms, np.random.default_rng(0), reflect=True)
    assert err["energy"] < 1e-10 and err["forces"] < 1e-10, err
    assert finite_difference_stress_error(model, atoms, h=1e-5) < 1e-7


def test_bad_options():
    with pytest.raises(ValueError, match="frame"):
        make(frame="cell")
    with pytest.raises(ValueError, match="group"):
        make(group="O3")
    with pytest.raises(ValueError, match="own inner"):
        make(inner="frame_averaging")
