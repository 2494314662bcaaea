"""Radial bases and the smooth cutoff envelope shared by every backbone, and the
:class:`RadialRange` through which a backbone receives them."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def polynomial_envelope(r: Tensor, cutoff: float, p: int = 6) -> Tensor:
    """Smooth envelope f(r) [E]: 1 at r=0, 0 with p-1 vanishing derivatives... at r >= cutoff.

    The polynomial of Klicpera et al. (DimeNet): f(u) = 1 - (p+1)(p+2)/2 u^p + p(p+2) u^(p+1)
    - p(p+1)/2 u^(p+2), u = r/cutoff. Its value, first and second derivatives vanish at u = 1,
    so energies and forces are continuous when a neighbour crosses the cutoff.
    """
    u = (r / cutoff).clamp(max=1.0)
    f = 1.0 - 0.5 * (p + 1) * (p + 2) * u**p + p * (p + 2) * u ** (p + 1) - 0.5 * p * (p + 1) * u ** (p + 2)
    return torch.where(r < cutoff, f, torch.zeros_like(f))


class GaussianBasis(nn.Module):
    """Gaussians exp(-((x - mu_k) / width)^2), k = 1..n, centres evenly spaced in [start, stop]."""

    def __init__(self, n: int, start: float, stop: float):
        super().__init__()
        self.register_buffer("centres", torch.linspace(start, stop, n))
        self.width = (stop - start) / max(n - 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x [...] -> [..., n]."""
        return torch.exp(-(((x.unsqueeze(-1) - self.centres) / self.width) ** 2))


class BesselBasis(nn.Module):
    """sqrt(2/c) sin(k pi r / c) / r, k = 1..n (r in Å, c the cutoff); smooth for r > 0."""

    def __init__(self, n: int, cutoff: float):
        super().__init__()
        self.register_buffer("freqs", torch.arange(1, n + 1) * math.pi / cutoff)
        self.prefactor = math.sqrt(2.0 / cutoff)
        self.cutoff = cutoff

    def forward(self, r: Tensor) -> Tensor:
        """r [...] (Å) -> [..., n]. At r = 0 the limit k pi / c is used."""
        r = r.unsqueeze(-1)
        safe = torch.where(r > 1e-9, r, torch.ones_like(r))
        val = torch.sin(self.freqs * safe) / safe
        return self.prefactor * torch.where(r > 1e-9, val, self.freqs.expand_as(val))


class RadialRange(float):
    """The interaction range a :class:`~equipot.potentials.Potential` gives its backbone.

    It is the cutoff (a float, Å), and it makes the radial functions on it, so a backbone asks
    for its bases and envelope here instead of handling the number: every backbone's messages
    then vanish at the same distance, in the same smooth way, as the neighbour list's edges end.
    """

    def envelope(self, r: Tensor) -> Tensor:
        """:func:`polynomial_envelope` [E] of distances r [E] (Å): 1 at 0, smoothly 0 at the cutoff."""
        return polynomial_envelope(r, float(self))

    def bessel(self, n: int) -> BesselBasis:
        """:class:`BesselBasis` of n functions vanishing at the cutoff."""
        return BesselBasis(n, float(self))

    def gaussian(self, n: int, signed: bool = False) -> GaussianBasis:
        """n Gaussians evenly spaced on [0, cutoff], or with ``signed`` on [-cutoff, cutoff] (for
        a component of a bond vector)."""
        return GaussianBasis(n, -float(self) if signed else 0.0, float(self))

    def reduced(self, edge_vec: Tensor) -> Tensor:
        """Bond vectors [E, 3] in units of the cutoff (dimensionless, length <= 1 for an edge)."""
        return edge_vec / float(self)
