"""What every registered backbone must do behind the Potential interface (float64).

Tolerances: 1e-10 for identities that hold exactly in exact arithmetic (float64 round-off on
these sums is ~1e-14); 1e-6 eV/Å for finite differences with h = 1e-4 Å, whose truncation error
is ~h^2 E''' ~ 1e-8 eV/Å. Models are scaled so that untrained forces are O(0.01-1) eV/Å and
the comparisons mean something.
"""
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from equipot import AtomicGraph, available_backbones, build_potential, load_model, save_model
from equipot.testing import (
    batch_independence_error,
    finite_difference_force_error,
    finite_difference_stress_error,
    predict,
)

SMALL = {
    "ponita": {"hidden": 16, "layers": 2, "grid_size": 6, "basis_size": 6, "kernel_dim": 8, "scale": 1e3},
    "lieconv": {"hidden": 16, "layers": 2, "basis_size": 6, "kernel_dim": 8, "scale": 100.0},
    "frame_averaging": {"hidden": 16, "layers": 2, "basis_size": 6, "kernel_dim": 8, "scale": 100.0},
    "ga_attention": {"hidden": 16, "layers": 2, "heads": 2, "references": 3, "basis_size": 6, "scale": 10.0},
    "grepsnet": {"hidden": 16, "tensor_channels": 8, "layers": 2, "basis_size": 6, "radial_hidden": 16,
                 "scale": 10.0},
}
# Options that make a backbone accept periodic cells (a global PCA frame is undefined there).
PERIODIC = {"frame_averaging": {"frame": "local"}}
# LieConv draws its fixed inference lifts by an atom's slot in its structure, so a supercell's
# image atoms get other lifts than the cell's: extensivity (like rotation and permutation
# invariance) holds only up to the lift quadrature. Measured 1.0e-5 relative here.
EXTENSIVE_TOL = {"lieconv": 1e-4}


def test_every_builtin_backbone_is_registered():
    assert set(SMALL) <= set(available_backbones())


def test_every_backbone_meets_the_protocol(name):
    """The Backbone protocol: the constructor and forward take the documented arguments."""
    import inspect

    from equipot.potentials import Backbone, get_backbone

    cls, _ = get_backbone(name)
    assert isinstance(make(name).backbone, Backbone)
    for method in ("__init__", "forward"):
        want = list(inspect.signature(getattr(Backbone, method)).parameters)
        have = list(inspect.signature(getattr(cls, method)).parameters)
        assert have[:len(want)] == want, (method, have)
        assert all(p.default is not inspect.Parameter.empty
                   for p in list(inspect.signature(getattr(cls, method)).parameters.values())[len(want):])


def make(name, elements=(1, 6, 8), cutoff=4.0, **extra):
    torch.manual_seed(0)
    return build_potential(name, elements=list(elements), cutoff=cutoff, **{**SMALL[name], **extra}).double()


@pytest.fixture(scope="module")
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(1).normal(scale=0.05, size=atoms.positions.shape)
    return atoms


@pytest.fixture(params=sorted(SMALL))
def name(request):
    return request.param


def test_forces_match_finite_difference(name, ethanol):
    model = make(name)
    assert np.abs(predict(model, ethanol)["forces"]).max() > 1e-3
    assert finite_difference_force_error(model, ethanol, h=1e-4, atoms_to_check=3) < 1e-6


def test_edges_beyond_cutoff_change_nothing(name, ethanol):
    """Verlet-skin neighbour lists carry pairs beyond the cutoff; the envelope must zero them."""
    model = make(name, cutoff=2.5)
    tight, loose = AtomicGraph.from_atoms(ethanol, 2.5), AtomicGraph.from_atoms(ethanol, 4.0)
    assert loose.num_edges > tight.num_edges
    a, b = model(tight), model(loose)
    assert abs(float(a["energy"][0].detach() - b["energy"][0].detach())) < 1e-10
    np.testing.assert_allclose(a["forces"].detach().numpy(), b["forces"].detach().numpy(), atol=1e-10, rtol=0)


def test_continuous_when_a_neighbour_crosses_the_cutoff(name):
    model = make(name, cutoff=3.0)
    base = [[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, 1.2, 0.0]]
    out = [predict(model, Atoms("COHH", positions=base + [[0.3, 0.2, d]])) for d in (3.0 - 1e-7, 3.0 + 1e-7)]
    assert abs(out[0]["energy"][0] - out[1]["energy"][0]) < 1e-8
    np.testing.assert_allclose(out[0]["forces"], out[1]["forces"], atol=1e-7)


def test_isolated_atoms_give_reference_energy_and_zero_force(name):
    model = make(name, atomic_energies=[-13.6, -1029.0, -2041.0], shift=0.25)
    atoms = Atoms("HCOO", positions=[[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    out = predict(model, atoms)
    assert abs(out["energy"][0] - (-13.6 - 1029.0 - 2 * 2041.0 + 4 * 0.25)) < 1e-9
    np.testing.assert_array_equal(out["forces"], 0.0)


def test_batch_independence(name, ethanol):
    other, changed = molecule("H2O"), molecule("CH4")
    changed.rattle(0.1, seed=3)
    assert batch_independence_error(make(name), ethanol, other, changed) < 1e-10


def test_deterministic_and_save_load(name, ethanol, tmp_path):
    model = make(name)
    first = predict(model, ethanol)
    assert predict(model, ethanol)["energy"][0] == first["energy"][0]
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    np.testing.assert_allclose(predict(loaded, ethanol)["forces"], first["forces"], atol=1e-12, rtol=0)


def test_periodic_supercell_and_stress(name):
    atoms = bulk("C", "diamond", a=3.6)  # fcc primitive cell: not orthogonal
    atoms.rattle(0.05, seed=2)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.05, 0.0], [0.0, 1.02, 0.03], [0.0, 0.0, 0.97]]),
                   scale_atoms=True)
    model = make(name, elements=(6,), cutoff=3.0, **PERIODIC.get(name, {}))
    e1 = predict(model, atoms, stress=True)
    e8 = predict(model, atoms * (2, 2, 2), stress=True)
    tol = EXTENSIVE_TOL.get(name, 1e-10)
    assert abs(e8["energy"][0] / 8 - e1["energy"][0]) < tol * max(1.0, abs(e1["energy"][0]))
    scale = max(1.0, np.abs(e1["forces"]).max())
    np.testing.assert_allclose(e8["forces"][: len(atoms)], e1["forces"], atol=tol * scale)
    np.testing.assert_allclose(e8["stress"][0], e1["stress"][0], atol=tol * max(1.0, np.abs(e1["stress"]).max()))
    assert finite_difference_stress_error(model, atoms, h=1e-5) < 1e-7


def test_declared_message_passing_hops_are_exact(name):
    """A backbone that declares ``message_passing_hops`` = k (what the LAMMPS interface sizes the
    ghost atoms by): on a zig-zag chain whose only edges join neighbours in the chain, moving
    atom k changes atom 0's energy, moving atom k + 1 leaves it unchanged to the last bit."""
    model = make(name)
    hops = getattr(model.backbone, "message_passing_hops", None)
    if hops is None:
        pytest.skip(f"{name} does not declare message_passing_hops (it is not run in LAMMPS)")
    n = hops + 4
    # 0.7 cutoff between neighbours, next-nearest 1.3 cutoff apart: hop distance = index distance
    base = np.array([[0.65 * k, 0.26 * (k % 2), 0.0] for k in range(n)]) * model.cutoff

    def node_energy(moved: int) -> np.ndarray:
        positions = base.copy()
        positions[moved] += [0.0, 0.05, 0.07]
        atoms = Atoms(numbers=[(6, 8, 1)[k % 3] for k in range(n)], positions=positions)
        graph = AtomicGraph.from_atoms(atoms, model.cutoff, dtype=torch.float64)
        return model(graph, compute_forces=False)["node_energy"].detach().numpy()

    reference = node_energy(n - 1)
    assert node_energy(hops)[0] != reference[0]  # grepsnet's reach at k hops is small (~1e-11 eV) but real
    assert node_energy(hops + 1)[0] == reference[0]
