"""Physics of the G-RepsNet backbone, in float64.

All symmetries are exact constructions (channel-only linear maps on T0/T1/T2 features built
from polar bond vectors; O(3) invariants by smooth norms and traces), so errors are float64
round-off: asserted < 1e-10 relative. The model is built with ``scale=10`` so that untrained
forces are O(0.1) eV/Å and the relative errors mean something.
"""
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from equipot import build_potential
from equipot.testing import (
    nve_drift,
    predict,
    transform_errors,
)

SMALL = {"hidden": 16, "tensor_channels": 8, "layers": 2, "basis_size": 6, "radial_hidden": 16}


def make(elements=(1, 6, 8), cutoff=5.0, seed=0, **kw):
    torch.manual_seed(seed)
    return build_potential("grepsnet", elements=list(elements), cutoff=cutoff, scale=10.0,
                           **{**SMALL, **kw}).double()


@pytest.fixture(scope="module")
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(1).normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def test_e3_invariance_exact(ethanol):
    model = make()
    rng = np.random.default_rng(0)
    assert np.abs(predict(model, ethanol)["forces"]).max() > 0.01  # a non-trivial field to compare
    for reflect in (False, True, False, True):
        err = transform_errors(model, ethanol, rng, reflect=reflect)
        assert err["energy"] < 1e-10 and err["forces"] < 1e-10, (reflect, err)


def test_bad_options_rejected():
    with pytest.raises(ValueError, match="eps"):
        make(eps=0.0)
    with pytest.raises(ValueError, match="tensor_channels"):
        make(tensor_channels=0)


def test_nve_energy_conserved(ethanol):
    # cutoff 3 Å: several pairs enter and leave the cutoff (and the attention) during the run
    model = make(cutoff=3.0)
    out = nve_drift(model, ethanol, steps=100, dt_fs=0.5, temperature_k=300.0)
    # measured ~5e-6 eV/atom/ps drift and ~2e-7 eV/atom fluctuation
    assert out["drift"] < 1e-4 and out["fluctuation"] < 1e-5, out


def test_smooth_when_neighbour_crosses_cutoff():
    model = make(cutoff=3.0)
    base = [[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, 1.2, 0.0]]
    energies, forces = [], []
    for d in (3.0 - 1e-7, 3.0 + 1e-7):
        out = predict(model, Atoms("COHH", positions=base + [[0.0, 0.0, d]]))
        energies.append(out["energy"][0])
        forces.append(out["forces"])
    assert abs(energies[0] - energies[1]) < 1e-9
    np.testing.assert_allclose(forces[0], forces[1], atol=1e-9)


