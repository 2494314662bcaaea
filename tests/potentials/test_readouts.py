"""The readouts of property models (potentials/readouts.py): symmetry, extensivity, neutrality, files.

Everything in float64. Two kinds of tolerance:

- 1e-10 (relative): exact in exact arithmetic, so only float64 rounding remains (sums of ~30
  terms of order 1 round at ~1e-15; 1e-10 leaves room for the message passing's summation order);
- the orientation grid's quadrature error: the R3×S2 backbone with orientations is invariant
  (and its vector readout equivariant) only as exactly as its grid averages functions on the
  sphere, so those checks use the measured size of that error with a margin (stated below).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from equipot import AtomicGraph, build_potential, load_model, save_model
from equipot.potentials.readouts import DIPOLE_UNITS, READOUTS
from equipot.testing import random_rotation

ELEMENTS = [1, 6, 7, 8]
EXACT = 1e-10


def model(readout: str, r3_only: bool = True, **kw):
    """An untrained float64 property model with the given readout (r3_only: exactly invariant scalars)."""
    torch.manual_seed(0)
    scale = DIPOLE_UNITS["Debye"] if readout == "dipole" else 0.7
    options = dict(hidden=16, layers=2, grid_size=12, r3_only=r3_only, scale=scale, shift=0.3 if readout != "dipole"
                   else 0.0, atomic_energies=None if readout in ("intensive", "dipole") else [-0.5, -2.0, -3.0, -4.0])
    options.update(kw)
    return build_potential("ponita", elements=ELEMENTS, cutoff=4.0, target="x", target_unit="Debye",
                           target_readout=readout, **options).double()


def run(m, atoms: Atoms | list[Atoms]) -> dict[str, np.ndarray]:
    graph = AtomicGraph.from_atoms(atoms, m.cutoff, dtype=torch.float64)
    return {k: v.detach().numpy() for k, v in m(graph).items()}


def glycine() -> Atoms:
    return molecule("H2NCH2COOH") if "H2NCH2COOH" in _names() else molecule("CH3CONH2")


def _names() -> set[str]:
    from ase.collections import g2

    return set(g2.names)


def turned(atoms: Atoms, rot: np.ndarray, shift: np.ndarray | None = None) -> Atoms:
    out = atoms.copy()
    out.positions = atoms.positions @ rot.T + (0 if shift is None else shift)
    return out


@pytest.mark.parametrize("readout", READOUTS)
def test_scalar_readouts_are_invariant_under_rotation_and_translation(readout):
    """Distances-only backbone: the value is a function of invariants only: exact to rounding."""
    m = model(readout)
    atoms = glycine()
    rng = np.random.default_rng(1)
    ref = run(m, atoms)["property"][0]
    for _ in range(3):
        got = run(m, turned(atoms, random_rotation(rng, reflect=True), rng.normal(size=3) * 5))["property"][0]
        assert abs(got - ref) <= EXACT * max(1.0, abs(ref))


def test_dipole_vector_is_equivariant_and_charges_neutral():
    """sum_i q_i r_i with neutral charges: turns with the molecule (and flips sign under inversion),
    is unchanged by a translation; |vector| is the value (Debye: 4.8032 D per e·Å)."""
    m = model("dipole")
    atoms = glycine()
    rng = np.random.default_rng(2)
    ref = run(m, atoms)
    assert abs(ref["charges"].sum()) < EXACT
    assert ref["property"][0] == pytest.approx(np.linalg.norm(ref["dipole"][0]), rel=1e-14)
    for reflect in (False, True):
        rot = random_rotation(rng, reflect=reflect)
        got = run(m, turned(atoms, rot, rng.normal(size=3) * 5))["dipole"][0]
        np.testing.assert_allclose(got, rot @ ref["dipole"][0], rtol=0, atol=EXACT * np.abs(ref["dipole"]).max())


def test_dipole_with_orientation_vectors_is_equivariant_to_the_grid_quadrature():
    """With orientations the backbone adds a vector per atom read out of the sphere, (3/O) sum_o f(o) o.
    Its equivariance is limited by the eval grid (the 42-point geodesic grid): measured ~1e-5 relative
    for this untrained model, with 1e-2 as the bound (a broken readout, e.g. a vector not turned with
    the grid, is off by order one)."""
    m = model("dipole", r3_only=False)
    assert m.vector_outputs and m.backbone.vector_heads is not None
    atoms = glycine()
    rng = np.random.default_rng(3)
    ref = run(m, atoms)["dipole"][0]
    worst = 0.0
    for _ in range(4):
        rot = random_rotation(rng)
        got = run(m, turned(atoms, rot))["dipole"][0]
        worst = max(worst, float(np.abs(got - rot @ ref).max() / np.abs(ref).max()))
    assert worst < 1e-2
    # the sphere part is there: silencing its heads changes the vector
    with torch.no_grad():
        for head in m.backbone.vector_heads:
            head.weight.zero_()
            head.bias.zero_()
    assert np.abs(run(m, atoms)["dipole"][0] - ref).max() > 1e-6


@pytest.mark.parametrize("readout", ["extensive", "intensive", "dipole"])
def test_molecule_and_far_copy(readout):
    """A molecule and a copy 50 Å away (beyond the cutoff): the extensive value doubles exactly, the
    intensive one is unchanged and the dipole vector doubles (each copy is neutral on its own)."""
    m = model(readout)
    one = glycine()
    two = one.copy() + turned(one, np.eye(3), np.array([50.0, 0, 0]))
    a, b = run(m, one), run(m, two)
    factor = {"extensive": 2.0, "intensive": 1.0, "dipole": 2.0}[readout]
    assert abs(b["property"][0] - factor * a["property"][0]) <= EXACT * max(1.0, abs(a["property"][0]))


def test_extensive_property_of_isolated_atoms_is_its_references():
    m = model("extensive")
    atoms = Atoms("HCNO", positions=[[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    assert run(m, atoms)["property"][0] == pytest.approx(-0.5 - 2.0 - 3.0 - 4.0 + 4 * 0.3, abs=1e-12)


def test_batch_gives_each_structure_its_own_value():
    m = model("intensive")
    mols = [glycine(), molecule("CH4"), molecule("H2O")]
    together = run(m, mols)["property"]
    alone = [run(m, a)["property"][0] for a in mols]
    np.testing.assert_allclose(together, alone, rtol=EXACT)


@pytest.mark.parametrize("readout", READOUTS)
def test_property_model_file_records_its_target(tmp_path, readout):
    m = model(readout, r3_only=False)
    path = tmp_path / "p.pt"
    save_model(m, path)
    back = load_model(path).double()
    assert (back.config.target, back.config.target_unit, back.config.target_readout) == ("x", "Debye", readout)
    atoms = glycine()
    assert run(back, atoms)["property"][0] == run(m, atoms)["property"][0]


def test_property_model_refuses_forces():
    m = model("intensive")
    graph = AtomicGraph.from_atoms(glycine(), m.cutoff, dtype=torch.float64)
    with pytest.raises(ValueError, match="predicts the property 'x' \\(Debye\\), not an energy"):
        m(graph, compute_forces=True)


def test_readout_names_are_checked():
    with pytest.raises(ValueError, match="target_readout: 'sum' is not one of auto, extensive"):
        build_potential("ponita", elements=[1], target="x", target_readout="sum")
    with pytest.raises(ValueError, match="an energy model .* reads out the sum over atoms"):
        build_potential("ponita", elements=[1], target_readout="intensive")
