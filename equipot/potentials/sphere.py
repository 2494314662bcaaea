"""Orientation grids on S2, their quadrature error, and Legendre polynomials (PΘNITA's fibres).

Every grid is a set of unit vectors [O, 3] with equal weights 1/O. How well a grid integrates
functions of a given spherical-harmonic degree decides how close to rotation-invariant the R3×S2
model is (its readout is a mean over the grid): :func:`quadrature_error` measures it.

Grids (by name, see :func:`orientation_grid`):

- ``icosahedron`` (12 points) and ``dodecahedron`` (20): vertices of the Platonic solids,
  spherical 5-designs (every polynomial of degree <= 5 is averaged exactly).
- ``geodesic``: the icosahedron's faces cut into nu^2 triangles and projected onto the sphere,
  10 nu^2 + 2 points (12, 42, 92, 162, ...). With the icosahedron's symmetry it averages exactly
  every degree that has no icosahedrally invariant part (all but 0, 6, 10, 12, 15, 16, 18, ...),
  like every icosahedral grid.
- ``repulsion``: any number of points spread by minimising the Riesz energy sum 1/|x_i - x_j|
  from a Fibonacci start: deterministic (fixed start and steps, float64) and cached.
- ``auto``: the icosahedron for 12 points, the dodecahedron for 20, the geodesic grid for
  42, 92, 162, ... points, repulsion otherwise.
- ``fibonacci``: the golden-angle lattice; cheap and uniform in area, but not symmetric, so it
  integrates low degrees worse than the others at small sizes.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ..ops.legendre import legendre

GRIDS = ("auto", "fibonacci", "icosahedron", "dodecahedron", "geodesic", "repulsion")
FIXED_SIZES = {"icosahedron": 12, "dodecahedron": 20}


def fibonacci_grid(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """n nearly uniform unit vectors on S2 (Fibonacci lattice), [n, 3]."""
    if n < 1:
        raise ValueError(f"orientation grid needs at least one point, got {n}")
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * k / n
    rho = torch.sqrt((1.0 - z * z).clamp(min=0.0))
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), z], dim=-1).to(dtype)


def _unit(points: list[tuple[float, float, float]]) -> Tensor:
    x = torch.tensor(points, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def icosahedron_grid() -> Tensor:
    """The 12 vertices of the regular icosahedron, [12, 3] (a spherical 5-design)."""
    g = (1.0 + math.sqrt(5.0)) / 2.0
    pts = []
    for a in (-1.0, 1.0):
        for b in (-g, g):
            pts += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    return _unit(pts)


def dodecahedron_grid() -> Tensor:
    """The 20 vertices of the regular dodecahedron, [20, 3] (a spherical 5-design)."""
    g = (1.0 + math.sqrt(5.0)) / 2.0
    pts = [(a, b, c) for a in (-1.0, 1.0) for b in (-1.0, 1.0) for c in (-1.0, 1.0)]
    for a in (-1.0 / g, 1.0 / g):
        for b in (-g, g):
            pts += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    return _unit(pts)


def geodesic_frequency(size: int) -> int | None:
    """nu of the geodesic grid with ``size`` = 10 nu^2 + 2 points, None if no such grid."""
    nu = round(math.sqrt(max(size - 2, 0) / 10.0))
    return nu if nu >= 1 and 10 * nu * nu + 2 == size else None


def geodesic_grid(size: int) -> Tensor:
    """The geodesic grid of ``size`` = 10 nu^2 + 2 points, [size, 3] (icosahedron vertices first)."""
    nu = geodesic_frequency(size)
    if nu is None:
        raise ValueError(f"a geodesic grid has 10 nu^2 + 2 points (12, 42, 92, 162, ...), not {size}")
    vertices = icosahedron_grid()
    edge = float((vertices[0] - vertices[1:]).norm(dim=-1).min())
    points = [v for v in vertices]
    seen = {tuple(round(float(c), 9) for c in v) for v in vertices}
    for i in range(12):
        for j in range(i + 1, 12):
            for k in range(j + 1, 12):
                a, b, c = vertices[i], vertices[j], vertices[k]
                if max(float((a - b).norm()), float((a - c).norm()), float((b - c).norm())) > edge * 1.001:
                    continue  # not a face
                for p in range(nu + 1):
                    for q in range(nu + 1 - p):
                        x = (p * a + q * b + (nu - p - q) * c) / nu
                        x = x / x.norm()
                        key = tuple(round(float(t), 9) for t in x)
                        if key not in seen:
                            seen.add(key)
                            points.append(x)
    return torch.stack(points)


@functools.lru_cache(maxsize=32)
def _repulsion(n: int, steps: int) -> Tensor:
    x = fibonacci_grid(n)
    if n < 3:
        return x
    step = 0.5 / n
    for _ in range(steps):
        diff = x[:, None, :] - x[None, :, :]
        dist2 = (diff * diff).sum(-1) + torch.eye(n, dtype=x.dtype)
        force = (diff / dist2.pow(1.5)[..., None]).sum(1)  # -grad of sum 1/|x_i - x_j|
        force = force - (force * x).sum(-1, keepdim=True) * x  # tangent part
        x = x + step * force / force.norm(dim=-1).max().clamp(min=1e-300) * (2.0 / math.sqrt(n))
        x = x / x.norm(dim=-1, keepdim=True)
        step *= 0.995
    return x


def repulsion_grid(n: int, steps: int = 1000) -> Tensor:
    """n points spread by Riesz (Coulomb) repulsion on S2, [n, 3]; deterministic and cached."""
    if n < 1:
        raise ValueError(f"orientation grid needs at least one point, got {n}")
    return _repulsion(int(n), int(steps)).clone()


def orientation_grid(name: str, size: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The named grid (see the module docstring) with ``size`` points, [size, 3].

    ``icosahedron`` and ``dodecahedron`` have a fixed size (12, 20), ``geodesic`` one of
    10 nu^2 + 2; asking for another raises.
    """
    if name not in GRIDS:
        raise ValueError(f"unknown orientation grid {name!r}; choose one of {', '.join(GRIDS)}")
    if name == "auto":
        name = {12: "icosahedron", 20: "dodecahedron"}.get(
            size, "geodesic" if geodesic_frequency(size) else "repulsion")
    if name in FIXED_SIZES and size != FIXED_SIZES[name]:
        raise ValueError(f"the {name} grid has {FIXED_SIZES[name]} points, not {size}")
    if name == "icosahedron":
        grid = icosahedron_grid()
    elif name == "dodecahedron":
        grid = dodecahedron_grid()
    elif name == "geodesic":
        grid = geodesic_grid(size)
    elif name == "repulsion":
        grid = repulsion_grid(size)
    else:
        grid = fibonacci_grid(size)
    return grid.to(dtype)


def quadrature_error(grid: Tensor, degree: int) -> float:
    """RMS error of the grid's mean of a degree-``degree`` spherical function, relative to its RMS.

    Averaged over all rotations of the function (equivalently of the grid): by the addition
    theorem it is sqrt(mean_{o, o'} P_l(o·o')) (0 for a design exact at that degree, 1 for a
    single point).
    """
    cos = (grid @ grid.T).double().clamp(-1.0, 1.0)
    value = float(legendre(cos, degree)[..., degree].mean())
    return math.sqrt(max(value, 0.0))


def sphere_invariants(grid: Tensor) -> Tensor:
    """Cosines between orientations o_k · o_l, [O, O]."""
    return grid @ grid.T


def legendre_factors(grid: Tensor, degree: int) -> tuple[Tensor, Tensor]:
    """An exact low-rank form of the grid's Legendre matrices: (basis [O, K], degree of each column [K]).

    For every l <= ``degree``, P_l(o·p) over the grid [O, 3] is a Gram matrix of the 2l + 1
    spherical harmonics of degree l (addition theorem), so P_l(o·p) = sum of b b^T over the basis
    columns b of degree l (min(2l + 1, O) of them, eigenvectors times sqrt(eigenvalue), float64).
    Columns are sorted by degree. Only cosines between grid points enter, so a rotated grid has the
    same factors; products with these [O, K] factors replace [O, O] products (K = (L + 1)^2 << O).
    The grid's rows are normalised first: the rank is 2l + 1 only for unit vectors, and a grid
    stored in float32 (every model built in the default dtype) is off by ~3e-8.
    """
    grid = grid.double()
    cos = sphere_invariants(grid / grid.norm(dim=-1, keepdim=True)).clamp(-1.0, 1.0)
    p = legendre(cos, degree)  # [O, O, degree + 1]
    columns, degrees = [], []
    for ell in range(degree + 1):
        rank = min(2 * ell + 1, grid.shape[0])
        values, vectors = torch.linalg.eigh(p[..., ell])  # ascending
        columns.append(vectors[:, -rank:] * values[-rank:].clamp(min=0.0).sqrt())
        degrees += [ell] * rank
    return torch.cat(columns, dim=1), torch.tensor(degrees, dtype=torch.long)
