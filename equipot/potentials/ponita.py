"""R3×S2 message passing (PΘNITA, Bekkers et al., ICLR 2024) as an energy backbone.

Each atom carries features h [O, C] on a grid of O orientations. For an edge
r = x_j - x_i and an orientation o the pair invariants are |r| and o·r̂ (equivalently
PΘNITA's o·r and |r - (o·r) o|); they are embedded as Gaussians in |r| times Legendre
polynomials P_0..P_L of o·r̂, then a linear layer and SiLU, into phi [E, O, K], times the
smooth cutoff envelope. The embedding's input is multiplied by ``edge_gain * sqrt(fan_in)``, so
that the first layer starts with pre-activations of order ``edge_gain`` rather than ~0.2 (the
default nn.Linear init on Gaussians of height 1): its SiLU then acts as a nonlinearity and the
kernel resolves bond lengths sharply. With the plain init the kernel was ~0.06 in size and a
smooth, nearly linear function of the basis, the messages were ~2 % of the node features, and
the model was close to a sum of smooth pair terms: it could not fit even 5 rMD17 ethanol
frames below ~250 meV/Å (now ~28 with hidden 32, 2 layers, grid 8). The readout's last layer
starts at a tenth of its default size, so the untrained surface stays gentle. Keeping the
angular degree low keeps features smooth on the sphere, so the grid's quadrature (readout,
sphere convolution) stays accurate under rotations. A layer is a separable convolution:

1. spatial: m_i[o] = sum_j (phi_ij[o] @ W) * h_j[o] / avg_num_neighbors**p  (the hot path,
   :func:`equipot.ops.spatial_message`); p = ``neighbor_norm_power``, 0 by default: dividing by
   the neighbour count left the messages far smaller than h, and trained worse (rMD17 ethanol,
   200 frames, 200 steps: 222 meV/Å test force MAE with p = 0.5, 190 with p = 0);
2. sphere:  m'_i[p] = (1/O) sum_o K(o·p) * m_i[o], K_c(x) = sum_l w_lc P_l(x) per channel;
3. ConvNeXt-style block: h <- h + γ ⊙ MLP(h + m'), channel mixing per orientation. There is
   no LayerNorm: normalising a message that fades to zero at the cutoff has a gain of
   1/sqrt(eps) there, which makes forces steep for weakly bound atoms (and it trained no
   better on rMD17 ethanol).

The readout is an MLP per orientation averaged over the grid: invariant up to the
grid's resolution (the error shrinks as O grows; see tests). ``r3_only=True`` uses
distances only (O = 1): exactly invariant and cheaper.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ops.message import spatial_message
from .radial import BesselBasis, GaussianBasis, polynomial_envelope
from .registry import register_backbone
from .sphere import fibonacci_grid, legendre, sphere_invariants


@dataclass
class PonitaConfig:
    """Hyper-parameters of the R3×S2 backbone.

    Attributes:
        hidden: channels C per orientation.
        layers: number of convolution layers.
        grid_size: orientations O on the sphere (Fibonacci grid); ignored when r3_only.
        basis_size: radial functions of the distance |r|.
        radial_basis: "gaussian" (evenly spaced Gaussians on [0, cutoff]) or "bessel"
            (sin(k pi r / c) / r, as in NequIP/MACE).
        angular_degree: highest Legendre degree L in o·r̂ (edges) and o·p (sphere kernel).
            Low degrees keep features smooth on the sphere, so that a small grid integrates
            them accurately: with Gaussian bases of o·r instead, a trained model's rotation
            error was 10-15 % of the force at grids of 4-12 points.
        kernel_dim: width K of the edge embedding phi (the fused kernel's inner size).
        widening: ConvNeXt MLP expansion factor.
        r3_only: use only the distance |r| (exactly invariant R3 variant).
        rotate_grid_in_training: in training mode, turn the orientation grid by a fresh random
            rotation at every call (one per batch). The loss then sees every orientation of the
            grid relative to the molecules, which teaches the network functions that the grid
            integrates well; inference (eval mode) uses the fixed grid, so MD sees one surface.
        edge_gain: the edge embedding's first layer sees its input times edge_gain * sqrt(fan_in),
            i.e. acts like a layer with weights of std ~edge_gain / sqrt(3) (default init): sharp,
            nonlinear radial features and a kernel of order one at initialisation.
        neighbor_norm_power: spatial messages are divided by avg_num_neighbors ** power
            (1: mean over neighbours, 0: plain sum).
    """

    hidden: int = 64
    layers: int = 3
    grid_size: int = 12
    basis_size: int = 16
    radial_basis: str = "gaussian"
    angular_degree: int = 3
    kernel_dim: int = 16
    widening: int = 4
    r3_only: bool = False
    rotate_grid_in_training: bool = True
    edge_gain: float = 5.0
    neighbor_norm_power: float = 0.0


class _SphereConv(nn.Module):
    """Per-channel convolution over the orientation grid, kernel sum_l w_lc P_l(o·p) (Funk-Hecke:
    a band-limited filter of degree L)."""

    def __init__(self, degree: int, channels: int):
        super().__init__()
        self.degree = degree
        self.weight = nn.Parameter(torch.randn(degree + 1, channels) / (degree + 1) ** 0.5)

    def forward(self, x: Tensor, cosines: Tensor) -> Tensor:
        """x [N, O, C], cosines [O, O] -> [N, O, C]."""
        kernel = legendre(cosines, self.degree) @ self.weight  # [O, O, C]
        return torch.einsum("noc,poc->npc", x, kernel) / cosines.shape[0]


class _Layer(nn.Module):
    def __init__(self, cfg: PonitaConfig, use_sphere: bool):
        super().__init__()
        c, k = cfg.hidden, cfg.kernel_dim
        self.edge = nn.Sequential(nn.Linear(k, k), nn.SiLU())
        self.weight = nn.Parameter(torch.randn(k, c) / k**0.5)
        self.sphere = _SphereConv(cfg.angular_degree, c) if use_sphere else None
        self.mlp = nn.Sequential(nn.Linear(c, cfg.widening * c), nn.SiLU(), nn.Linear(cfg.widening * c, c))
        self.layer_scale = nn.Parameter(torch.ones(c))

    def forward(self, h: Tensor, phi0: Tensor, envelope: Tensor, edge_index: Tensor, cosines: Tensor | None,
                norm: float) -> Tensor:
        phi = self.edge(phi0) * envelope[:, None, None]
        m = spatial_message(phi, self.weight, h, edge_index, h.shape[0]) / norm
        if self.sphere is not None:
            m = self.sphere(m, cosines)
        return h + self.layer_scale * self.mlp(h + m)


@register_backbone("ponita", PonitaConfig)
class Ponita(nn.Module):
    """R3×S2 backbone: per-atom energies [N] from species, edges and edge vectors."""

    def __init__(self, config: PonitaConfig, num_species: int, cutoff: float, avg_num_neighbors: float):
        super().__init__()
        self.config = config
        self.cutoff = float(cutoff)
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.message_norm = self.avg_num_neighbors ** float(config.neighbor_norm_power)
        c, n = config.hidden, config.basis_size
        grid = fibonacci_grid(1 if config.r3_only else config.grid_size)
        self.register_buffer("grid", grid.to(torch.get_default_dtype()))
        self.embed = nn.Embedding(num_species, c)
        if config.radial_basis == "bessel":
            self.basis = BesselBasis(n, cutoff)
        elif config.radial_basis == "gaussian":
            self.basis = GaussianBasis(n, 0.0, cutoff)
        else:
            raise ValueError(f"radial_basis must be 'bessel' or 'gaussian', got {config.radial_basis!r}")
        n_angular = 1 if config.r3_only else config.angular_degree + 1
        self.edge_embed = nn.Sequential(nn.Linear(n * n_angular, config.kernel_dim), nn.SiLU())
        self.edge_input_gain = float(config.edge_gain) * (n * n_angular) ** 0.5
        use_sphere = not config.r3_only and config.grid_size > 1
        self.layers = nn.ModuleList(_Layer(config, use_sphere) for _ in range(config.layers))
        self.readout = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, 1))
        with torch.no_grad():  # start near a flat surface: the messages are large (see edge_gain)
            self.readout[-1].weight.mul_(0.1)

    def edge_features(self, edge_vec: Tensor, grid: Tensor) -> Tensor:
        """Embedded pair invariants phi0 [E, O, K] (before the envelope); grid [O, 3]."""
        r = torch.sqrt((edge_vec * edge_vec).sum(-1, keepdim=True))  # [E, 1]
        radial = self.basis(r) * self.edge_input_gain  # [E, 1, n]
        if self.config.r3_only:
            return self.edge_embed(radial)
        cos = (edge_vec @ grid.T) / r.clamp(min=1e-9)  # o·r̂ [E, O]
        angular = legendre(cos, self.config.angular_degree)  # [E, O, L+1]
        feats = (radial.unsqueeze(-1) * angular.unsqueeze(-2)).flatten(-2)  # [E, O, n (L+1)]
        return self.edge_embed(feats)

    def forward(self, species: Tensor, positions: Tensor, edge_index: Tensor, edge_vec: Tensor, batch: Tensor,
                num_graphs: int) -> Tensor:
        """Per-atom energies [N] (before scale/shift)."""
        grid = self.grid.to(edge_vec.dtype)
        if self.training and self.config.rotate_grid_in_training and not self.config.r3_only:
            q, rr = torch.linalg.qr(torch.randn(3, 3, dtype=grid.dtype, device=grid.device))
            grid = grid @ (q * torch.sign(torch.diagonal(rr))).T
        r = torch.sqrt((edge_vec * edge_vec).sum(-1))
        envelope = polynomial_envelope(r, self.cutoff)
        phi0 = self.edge_features(edge_vec, grid)
        cosines = sphere_invariants(grid)
        h = self.embed(species)[:, None, :].expand(-1, grid.shape[0], -1).contiguous()
        for layer in self.layers:
            h = layer(h, phi0, envelope, edge_index, cosines, self.message_norm)
        return self.readout(h).squeeze(-1).mean(-1)
