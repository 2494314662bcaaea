"""RadialRange: the cutoff a Potential hands its backbone, with the radial functions on it."""
import copy
import math

import torch

from equipot import build_potential
from equipot.potentials import RadialRange


def test_radial_range_is_the_cutoff_and_its_functions_end_there():
    radial = RadialRange(4.0)
    assert radial == 4.0 and isinstance(radial, float)
    assert type(copy.deepcopy(radial)) is RadialRange
    # float64: the envelope and its first two derivatives vanish at the cutoff (polynomial p = 6),
    # so values within 1e-12 of 0 and 1 are the exact ones up to rounding.
    r = torch.tensor([0.0, 2.0, 4.0, 4.5], dtype=torch.float64, requires_grad=True)
    env = radial.envelope(r)
    (grad,) = torch.autograd.grad(env.sum(), r)
    env = env.detach()
    assert abs(float(env[0]) - 1.0) < 1e-12 and 0.0 < float(env[1]) < 1.0
    assert float(env[2]) == float(env[3]) == 0.0
    assert abs(float(grad[2])) < 1e-12
    assert torch.allclose(radial.bessel(3).freqs, torch.arange(1, 4) * math.pi / 4.0)
    assert radial.gaussian(5).centres.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert radial.gaussian(3, signed=True).centres.tolist() == [-4.0, 0.0, 4.0]
    assert torch.equal(radial.reduced(torch.tensor([[4.0, -2.0, 0.0]])), torch.tensor([[1.0, -0.5, 0.0]]))


def test_a_model_hands_its_cutoff_to_its_backbone_and_its_graphs():
    model = build_potential("ponita", elements=[1, 8], cutoff=3.5, hidden=8, layers=1, grid_size=4)
    assert model.backbone.radial_range == 3.5 and isinstance(model.backbone.radial_range, RadialRange)
    assert model.graph_builder().cutoff == model.config.graph_builder().cutoff == 3.5


def test_a_backbone_written_for_a_float_cutoff_still_runs():
    """RadialRange is a float, so a backbone registered against the earlier contract
    (``cutoff: float`` as the third argument) builds and runs unchanged."""
    from dataclasses import dataclass

    from torch import nn

    from equipot import AtomicGraph
    from equipot.potentials import register_backbone
    from equipot.potentials.radial import BesselBasis, polynomial_envelope
    from equipot.potentials.registry import _BACKBONES

    @dataclass
    class OldConfig:
        basis_size: int = 4

    class OldStyle(nn.Module):
        def __init__(self, config: OldConfig, num_species: int, cutoff: float, avg_num_neighbors: float):
            super().__init__()
            self.cutoff = cutoff
            self.basis = BesselBasis(config.basis_size, cutoff)
            self.out = nn.Linear(config.basis_size, 1)

        def forward(self, species, positions, edge_index, edge_vec, batch, num_graphs):
            r = edge_vec.norm(dim=-1)
            e = self.out(self.basis(r)).squeeze(-1) * polynomial_envelope(r, self.cutoff)
            return torch.zeros(len(species), dtype=e.dtype).index_add(0, edge_index[1], e)

    register_backbone("old_style_test", OldConfig)(OldStyle)
    try:
        model = build_potential("old_style_test", elements=[1, 8], cutoff=3.0).double()
        graph = AtomicGraph.from_structures([([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], None, None)],
                                            model.cutoff)
        out = model(graph, compute_forces=True)
        assert torch.isfinite(out["energy"]).all() and out["forces"].shape == (3, 3)
    finally:
        _BACKBONES.pop("old_style_test")
