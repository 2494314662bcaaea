"""Orientation grids on S2 and the pair invariants of position-orientation space (PΘNITA)."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def fibonacci_grid(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """n nearly uniform unit vectors on S2 (Fibonacci lattice), [n, 3]."""
    if n < 1:
        raise ValueError(f"orientation grid needs at least one point, got {n}")
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * k / n
    rho = torch.sqrt((1.0 - z * z).clamp(min=0.0))
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), z], dim=-1).to(dtype)


def spatial_invariants(vec: Tensor, grid: Tensor, eps: float = 1e-2) -> tuple[Tensor, Tensor]:
    """Invariants of an edge vector r [E, 3] at each orientation o [O, 3].

    Returns (a, b), both [E, O], with a = o·r (Å) and
    b = sqrt(|r - (o·r) o|^2 + eps^2) - eps (Å). The eps smoothing removes the cone of
    |r_perp| at r ∥ o, where the plain norm has no derivative (forces would jump).
    """
    a = vec @ grid.T
    perp2 = ((vec * vec).sum(-1, keepdim=True) - a * a).clamp(min=0.0)
    b = torch.sqrt(perp2 + eps * eps) - eps
    return a, b


def sphere_invariants(grid: Tensor) -> Tensor:
    """Cosines between orientations o_k · o_l, [O, O]."""
    return grid @ grid.T


def legendre(x: Tensor, degree: int) -> Tensor:
    """Legendre polynomials P_0..P_L of x in [-1, 1], [..., L + 1] (Bonnet's recursion)."""
    out = [torch.ones_like(x), x]
    for n in range(1, degree):
        out.append(((2 * n + 1) * x * out[n] - n * out[n - 1]) / (n + 1))
    return torch.stack(out[: degree + 1], dim=-1)
