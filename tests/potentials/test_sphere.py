"""Orientation grids: their construction and quadrature error (float64).

Exactness claims (5-designs) are checked at 1e-12: the error of an exact rule is float64
round-off of a mean of 144-400 cosines (~1e-15). Statistical checks state their own margin.
"""
import math

import numpy as np
import pytest
import torch

from equipot.potentials.sphere import (
    dodecahedron_grid,
    fibonacci_grid,
    geodesic_grid,
    icosahedron_grid,
    legendre,
    orientation_grid,
    quadrature_error,
    repulsion_grid,
)


@pytest.mark.parametrize("grid", [icosahedron_grid(), dodecahedron_grid()], ids=["icosahedron", "dodecahedron"])
def test_platonic_grids_are_5_designs(grid):
    assert torch.allclose(grid.norm(dim=-1), torch.ones(len(grid), dtype=grid.dtype), atol=1e-15)
    assert len(torch.unique(grid.round(decimals=8), dim=0)) == len(grid)
    for degree in range(1, 6):
        assert quadrature_error(grid, degree) < 1e-7, degree  # sqrt of a ~1e-15 mean
    assert quadrature_error(grid, 6) > 0.3  # both fail at degree 6 (icosahedral invariant)


def test_quadrature_error_is_the_rotation_averaged_error():
    """sqrt(mean P_l(o·o')) equals the RMS over random rotations of the grid's mean of a zonal
    degree-l function normalised to unit RMS (sqrt(2l+1) P_l(a·o)); 4000 rotations give ~2 %."""
    grid = fibonacci_grid(12)
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(4000, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    for degree in (3, 5):
        cos = torch.as_tensor(axes) @ grid.T
        means = legendre(cos, degree)[..., degree].mean(-1) * math.sqrt(2 * degree + 1)
        sampled = float(means.pow(2).mean().sqrt())
        assert abs(sampled - quadrature_error(grid, degree)) < 0.05 * quadrature_error(grid, degree), degree
    assert quadrature_error(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), 4) == pytest.approx(1.0)


def _rotation(axis: torch.Tensor, angle: float) -> torch.Tensor:
    k = axis / axis.norm()
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


@pytest.mark.parametrize("size", [12, 42, 92, 162])
def test_geodesic_grids_are_icosahedral_and_exact_where_the_icosahedron_is(size):
    grid = geodesic_grid(size)
    assert grid.shape == (size, 3) and torch.equal(grid[:12], icosahedron_grid())
    assert torch.allclose(grid.norm(dim=-1), torch.ones(size, dtype=grid.dtype), atol=1e-15)
    assert len(torch.unique(grid.round(decimals=8), dim=0)) == size
    # the 5-fold turn about a vertex maps the grid onto itself (to round-off)
    turned = grid @ _rotation(grid[0], 2 * math.pi / 5).T
    assert float((turned[:, None] - grid[None]).norm(dim=-1).min(dim=1).values.max()) < 1e-12
    # every degree without an icosahedrally invariant harmonic is averaged exactly
    for degree in (1, 2, 3, 4, 5, 7, 8, 9, 11, 13, 14):
        assert quadrature_error(grid, degree) < 1e-6, (size, degree)  # sqrt of a ~1e-13 mean


def test_geodesic_42_averages_degrees_6_and_10_better_than_the_icosahedron():
    """The values the default inference grid is chosen for (README, symmetry section)."""
    g42, ico = geodesic_grid(42), icosahedron_grid()
    assert quadrature_error(g42, 6) < 0.045 and quadrature_error(ico, 6) > 0.6
    assert quadrature_error(g42, 10) < 0.16 and quadrature_error(ico, 10) > 0.3
    with pytest.raises(ValueError, match="10 nu"):
        geodesic_grid(40)


def test_repulsion_grid_is_deterministic_and_beats_fibonacci():
    for n in (12, 20, 32):
        a, b = repulsion_grid(n), repulsion_grid(n)
        assert torch.equal(a, b) and a.shape == (n, 3)
        assert torch.allclose(a.norm(dim=-1), torch.ones(n, dtype=a.dtype), atol=1e-14)
        fib = fibonacci_grid(n)
        for degree in (1, 2, 3):
            assert quadrature_error(a, degree) < quadrature_error(fib, degree), (n, degree)

        def min_distance(g):
            d = torch.cdist(g, g) + 10 * torch.eye(len(g), dtype=g.dtype)
            return float(d.min())

        assert min_distance(a) > min_distance(fib)
    # 12 points relax to the icosahedron: exact to degree 5.
    assert max(quadrature_error(repulsion_grid(12), k) for k in range(1, 6)) < 1e-3


def test_orientation_grid_names_and_errors():
    assert torch.equal(orientation_grid("auto", 12), icosahedron_grid())
    assert torch.equal(orientation_grid("auto", 20), dodecahedron_grid())
    assert torch.equal(orientation_grid("auto", 32), repulsion_grid(32))
    assert torch.equal(orientation_grid("auto", 42), geodesic_grid(42))
    with pytest.raises(ValueError, match="not 40"):
        orientation_grid("geodesic", 40)
    assert orientation_grid("fibonacci", 7, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="icosahedron grid has 12 points"):
        orientation_grid("icosahedron", 8)
    with pytest.raises(ValueError, match="unknown orientation grid 'lebedev'"):
        orientation_grid("lebedev", 26)
    with pytest.raises(ValueError, match="at least one point"):
        orientation_grid("repulsion", 0)
