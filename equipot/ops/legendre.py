"""Legendre polynomials and their derivatives (the angular functions of the R3×S2 kernels)."""
from __future__ import annotations

import torch
from torch import Tensor


def legendre(x: Tensor, degree: int) -> Tensor:
    """Legendre polynomials P_0..P_L of x in [-1, 1], [..., L + 1] (Bonnet's recursion)."""
    out = [torch.ones_like(x), x]
    for n in range(1, degree):
        out.append(((2 * n + 1) * x * out[n] - n * out[n - 1]) / (n + 1))
    return torch.stack(out[: degree + 1], dim=-1)


def legendre_and_derivative(x: Tensor, degree: int) -> tuple[Tensor, Tensor]:
    """(P_l(x), P_l'(x)) for l = 0..L, each [..., L + 1]; P'_{l+1} = (l + 1) P_l + x P'_l, exact at x = ±1."""
    p, dp = [torch.ones_like(x), x], [torch.zeros_like(x), torch.ones_like(x)]
    for n in range(1, degree):
        p.append(((2 * n + 1) * x * p[n] - n * p[n - 1]) / (n + 1))
        dp.append((n + 1) * p[n] + x * dp[n])
    return torch.stack(p[: degree + 1], dim=-1), torch.stack(dp[: degree + 1], dim=-1)
