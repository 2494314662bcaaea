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
    finite_difference_force_error,
    finite_difference_stress_error,
    predict,
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
    ref = predict(model, ethanol)
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(ethanol))
    moved = Atoms(ethanol.numbers[perm], ethanol.positions[perm] + np.array([3.0, -1.0, 7.5]))
    out = predict(model, moved)
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
    e1 = predict(model, atoms, stress=True)
    e8 = predict(model, atoms * (2, 2, 2), stress=True)
    assert abs(e8["energy"][0] / 8 - e1["energy"][0]) < 1e-9 * len(atoms)
    np.testing.assert_allclose(e8["stress"][0], e1["stress"][0], atol=1e-10)
    np.testing.assert_allclose(e8["forces"][: len(atoms)], e1["forces"], atol=1e-10)


def test_periodic_images_across_boundary():
    """A dimer split across the cell boundary sees the same partner as the unwrapped one."""
    model = make(grid_size=8, elements=(6,))
    cell = np.diag([10.0, 10.0, 10.0])
    inside = Atoms("C2", positions=[[5.0, 5.0, 5.0], [6.3, 5.0, 5.0]], cell=cell, pbc=True)
    across = Atoms("C2", positions=[[0.2, 5.0, 5.0], [8.9, 5.0, 5.0]], cell=cell, pbc=True)
    e_in, e_across = predict(model, inside), predict(model, across)
    assert abs(e_in["energy"][0] - e_across["energy"][0]) < 1e-10
    # the pair across the boundary is 1.3 Å apart: forces pull them together through the wall
    assert np.abs(e_across["forces"]).max() > 1e-6
    np.testing.assert_allclose(e_across["forces"][0], -e_across["forces"][1], atol=1e-12)


# ----------------------------------------------------------------------------- the 0.2 block

VARIANTS = {
    "default": {},
    "mlp-kernel": {"kernel": "mlp"},
    "reference-block": {"norm": True, "readout": "every", "lowpass": 2},
    "plain-block": {"norm": False, "readout": "mlp", "lowpass": None},
}


def make_variant(options, grid_size=12, elements=(1, 6, 8), cutoff=4.0):
    torch.manual_seed(0)
    return build_potential("ponita", elements=elements, cutoff=cutoff, grid_size=grid_size,
                           **{**SMALL, **options}).double()


@pytest.mark.parametrize("name", VARIANTS)
def test_variants_forces_exact_symmetries_and_cutoff(name, ethanol):
    model = make_variant(VARIANTS[name])
    assert finite_difference_force_error(model, ethanol, h=1e-4, atoms_to_check=3) < 1e-6
    ref = predict(model, ethanol)
    perm = np.random.default_rng(3).permutation(len(ethanol))
    moved = Atoms(ethanol.numbers[perm], ethanol.positions[perm] + np.array([3.0, -1.0, 7.5]))
    out = predict(model, moved)
    assert abs(out["energy"][0] - ref["energy"][0]) < 1e-10 * max(1, abs(ref["energy"][0]))
    np.testing.assert_allclose(out["forces"], ref["forces"][perm], atol=1e-10)
    # A neighbour crossing the cutoff changes the energy continuously (envelope with 2 zero derivatives).
    dimer = [Atoms("CO", positions=[[0, 0, 0], [0, 0, d]]) for d in (4.0 - 1e-6, 4.0 + 1e-6)]
    energies = [predict(model, a)["energy"][0] for a in dimer]
    assert abs(energies[0] - energies[1]) < 1e-9


def test_radial_kernel_is_band_limited_in_orientation():
    """Each layer's edge kernel phi[e, o, k] is a combination of P_0..P_L(o·r̂) for the radial kernel
    (residual at round-off), and is not for the 0.1 MLP kernel (the test can fail)."""
    from equipot.potentials.sphere import fibonacci_grid, legendre

    grid = fibonacci_grid(200)
    vec = torch.tensor([[1.1, 0.2, -0.3], [0.1, -2.0, 1.5], [2.5, 1.0, 0.5]], dtype=torch.float64)
    residuals = {}
    for kernel in ("radial", "mlp"):
        backbone = make_variant({"kernel": kernel}).backbone
        edge = backbone.edge_features(vec, grid)
        envelope = torch.ones(len(vec), dtype=torch.float64)
        phi = backbone.layers[0].edge_kernel(edge, envelope).detach()  # [E, O, K]
        cos = (vec @ grid.T) / vec.norm(dim=-1, keepdim=True)
        worst = 0.0
        for e in range(len(vec)):
            basis = legendre(cos[e], backbone.config.angular_degree)  # [O, L+1]
            coef = torch.linalg.lstsq(basis, phi[e]).solution
            worst = max(worst, float((basis @ coef - phi[e]).norm() / phi[e].norm()))
        residuals[kernel] = worst
    assert residuals["radial"] < 1e-10, residuals
    assert residuals["mlp"] > 1e-3, residuals


def test_lowpass_is_a_projector_on_a_design():
    """On the icosahedron (exact to degree 5) the degree-2 filter is idempotent and keeps degree-2
    functions; the features a lowpassed layer adds lie in that subspace."""
    from equipot.potentials.ponita import SphereFactors, lowpass_matrix
    from equipot.potentials.sphere import icosahedron_grid, legendre, legendre_factors

    grid = icosahedron_grid()
    k = lowpass_matrix(SphereFactors(*legendre_factors(grid, 3)), 2)
    expected = legendre(grid @ grid.T, 2) @ torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64) / 12
    torch.testing.assert_close(k, expected, atol=1e-13, rtol=0)
    torch.testing.assert_close(k @ k, k, atol=1e-12, rtol=0)
    f = legendre(grid @ torch.tensor([0.3, -0.5, 0.81], dtype=torch.float64) / 1.0, 2)[:, 2]
    torch.testing.assert_close(k @ f, f, atol=1e-12, rtol=0)


def test_sphere_convolution_is_the_per_channel_legendre_kernel():
    """The sphere convolution (through the factored Legendre matrices, (L + 1)^2 coefficients per
    channel) is, for each channel c, the grid convolution with the kernel sum_l w_lc P_l(o·p), divided
    by O, to float64 round-off; on the 12-point grid too, where the factors have more columns than
    points, and with factors of a higher degree than the convolution's (lowpass > L)."""
    from equipot.potentials.ponita import SphereFactors, _SphereConv
    from equipot.potentials.sphere import legendre, legendre_factors, orientation_grid

    g = torch.Generator().manual_seed(3)
    for name, size, factor_degree in (("geodesic", 42, 3), ("icosahedron", 12, 3), ("repulsion", 32, 5)):
        grid = orientation_grid(name, size)
        conv = _SphereConv(3, 5).double()
        x = torch.randn(4, size, 5, dtype=torch.float64, generator=g)
        kernel = legendre(grid @ grid.T, 3) @ conv.weight  # [P, O, C]
        expected = torch.stack([x[:, :, c] @ kernel[:, :, c].T for c in range(5)], -1) / size
        got = conv(x, SphereFactors(*legendre_factors(grid, factor_degree)))
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_eval_grid_is_used_in_eval_mode_and_saved(tmp_path, ethanol):
    from equipot import load_model, save_model
    from equipot.potentials.ponita import set_inference_grid

    model = make_variant({"eval_grid": "repulsion", "eval_grid_size": 32})
    assert model.backbone.grid.shape == (12, 3) and model.backbone.eval_grid.shape == (32, 3)
    assert model.backbone.current_grid(torch.float64).shape == (32, 3)
    model.train()
    assert model.backbone.current_grid(torch.float64).shape == (12, 3)
    model.eval()
    e32 = predict(model, ethanol)["energy"][0]
    save_model(model, tmp_path / "m.pt")
    assert predict(load_model(tmp_path / "m.pt"), ethanol)["energy"][0] == e32
    set_inference_grid(model, None)  # back to the training grid
    e12 = predict(model, ethanol)["energy"][0]
    assert e12 != e32 and abs(e12 - e32) < 0.05 * max(1.0, abs(e32))
    set_inference_grid(model, "fibonacci", 40)
    save_model(model, tmp_path / "m40.pt")
    loaded = load_model(tmp_path / "m40.pt")
    assert loaded.backbone.eval_grid.shape == (40, 3)
    assert predict(loaded, ethanol)["energy"][0] == predict(model, ethanol)["energy"][0]


def test_model_file_of_format_1_loads_with_identical_energies():
    """A model saved by equipot 0.1 (format 1, options as given: hidden 16, layers 2, grid_size 8,
    with that version's defaults: Fibonacci grid, MLP kernel) gives the energy it gave then: to 1e-12
    eV until the sphere convolution went through the factored Legendre matrices, which are exact for
    unit grid vectors; this file's grid was stored in float32 (|o| - 1 up to 2.6e-8), and its energy
    now differs by 7e-10 eV (2e-9 relative, the grid's own rounding)."""
    from pathlib import Path

    from equipot import load_model

    model = load_model(Path(__file__).parent / "data" / "ponita_format1.pt")
    assert model.config.backbone_options["kernel"] == "mlp"
    energy = predict(model, molecule("CH3CH2OH"))["energy"][0]
    assert abs(energy - (-0.3019553139227258)) < 2e-9


def test_model_file_before_format_4_keeps_the_inference_grid_of_its_time(tmp_path, ethanol):
    """Files of format <= 3 that left eval_grid to "auto" were evaluated on the 32-point repulsion
    grid; they still are (identical energies), while a new file gets the 42-point geodesic grid."""
    from equipot import load_model, save_model
    from equipot.potentials.ponita import set_inference_grid

    model = make_variant({})
    assert model.config.backbone_options.get("eval_grid", "auto") == "auto"
    assert model.backbone.eval_grid.shape == (42, 3)
    save_model(model, tmp_path / "new.pt")
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    payload["version"] = 3
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert old.backbone.eval_grid.shape == (32, 3)
    set_inference_grid(model, "repulsion", 32)
    assert predict(old, ethanol)["energy"][0] == predict(model, ethanol)["energy"][0]
    assert load_model(tmp_path / "new.pt").backbone.eval_grid.shape == (42, 3)


def test_trained_model_rotation_error_falls_on_the_denser_icosahedral_grid():
    """Trained (not random) weights: 150 Adam steps on the forces of rattled ethanol with the grid
    rotated at random. Evaluated on the 12-point training icosahedron and on the 32-point
    icosahedral grid, which also integrates the degrees the icosahedron cannot (6, 10):
    the rotation error must fall at least twofold (measured here: ~28x)."""
    from equipot.graph import AtomicGraph
    from equipot.potentials.ponita import set_inference_grid
    from equipot.testing import random_rotation

    rng = np.random.default_rng(0)
    base = molecule("CH3CH2OH")
    frames = []
    for _ in range(8):
        a = base.copy()
        a.positions += rng.normal(scale=0.1, size=a.positions.shape)
        frames.append(a)
    torch.manual_seed(0)
    teacher = build_potential("ponita", elements=(1, 6, 8), cutoff=4.0, r3_only=True, hidden=16, layers=2).double()
    targets = [torch.as_tensor(predict(teacher, a)["forces"]) * 20 for a in frames]
    model = make_variant({"norm": True, "readout": "every", "lowpass": 2})
    graphs = [AtomicGraph.from_atoms(a, 4.0) for a in frames]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(150):
        k = step % len(graphs)
        out = model(graphs[k], compute_forces=True, create_graph=True)
        loss = ((out["forces"] - targets[k]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    def error(m):
        errs = []
        rot_rng = np.random.default_rng(5)
        for a in frames[:4]:
            f0 = predict(m, a)["forces"]
            for _ in range(3):
                rot = random_rotation(rot_rng)
                moved = a.copy()
                moved.positions = a.positions @ rot.T
                f1 = predict(m, moved)["forces"] @ rot
                errs.append(np.sqrt(np.mean((f1 - f0) ** 2) / np.mean(f0**2)))
        return float(np.mean(errs))

    set_inference_grid(model, "icosahedron", 12)  # the default would already predict on 42 points
    e12 = error(model)
    set_inference_grid(model, "repulsion", 32)
    e32 = error(model)
    assert e32 < e12 / 2, (e12, e32)


@pytest.fixture(scope="module")
def trained_ponita(tmp_path_factory):
    """A model file trained by ``equipot.training.train`` (R3×S2, 12-point grid, 42-point inference
    grid) for 30 steps on the rMD17 ethanol frames shipped with equipot."""
    from equipot.demo import DEMO_DATA
    from equipot.training import load_config, train

    run = tmp_path_factory.mktemp("factorised") / "run"
    train(load_config(None, [f"data.train_file={DEMO_DATA}", f"train.run_dir={run}", "model.hidden=16",
                             "model.layers=2", "data.n_train=60", "data.valid_size=10", "data.batch_size=4",
                             "train.max_steps=30", "train.progress=false", "train.device=cpu"]),
          log=lambda s: None)
    return run / "model.pt"


@pytest.mark.parametrize("weights", ["random", "trained"])
def test_factorised_message_gives_the_formed_kernels_energy_and_forces(monkeypatch, weights, trained_ponita):
    """The model's message never forms phi[e, o, (l, m)] = P_l(o·r̂) rho_lm(|r|); with the formed kernel
    put back (the reference: phi @ W, then the message), energies and forces of a molecule and of a
    periodic box must agree to float64 round-off, for random weights and for a trained model file."""
    from equipot import load_model
    from equipot.ops.message import spatial_message, spherical_kernel
    from equipot.potentials import ponita

    model = make() if weights == "random" else load_model(trained_ponita).double()
    model.eval()
    box = bulk("C", "diamond", a=3.6, cubic=True)
    box.rattle(0.05, seed=2)
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=3)
    factorised = [predict(model, atoms) for atoms in (mol, box)]

    calls = []

    def formed(vec, grid, radial, weight, h, edge_index, num_nodes):
        calls.append(grid.shape[0])
        return spatial_message(spherical_kernel(vec, grid, radial), weight, h, edge_index, num_nodes)

    monkeypatch.setattr(ponita, "spherical_message", formed)
    for got, atoms in zip(factorised, (mol, box)):
        ref = predict(model, atoms)
        scale = float(np.abs(ref["forces"]).max())
        assert scale > 1e-6
        np.testing.assert_allclose(got["energy"], ref["energy"], rtol=1e-12, atol=1e-12 * len(atoms))
        np.testing.assert_allclose(got["forces"], ref["forces"], rtol=0, atol=1e-11 * scale)
    assert calls and set(calls) == {len(model.backbone.eval_grid)}
