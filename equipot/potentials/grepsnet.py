"""G-RepsNet (after Basu et al., 2024) as an energy backbone for O(3).

G-RepsNet keeps every feature as a tensor of the group representation with a channel axis,
T0 (scalars), T1 (vectors) and T2 (rank-2 tensors), and makes the network equivariant by
construction: linear maps act on the channel axis only (they commute with any rotation or
reflection acting on the spatial indices), tensor products of features raise or lower the
order, non-linearities act on scalars only, and higher-order features pass through
scalar-valued gates.

Per atom i: s [N, C] (T0), v [N, K, 3] (T1), t [N, K, 3, 3] (T2).

* Seed: smooth radial sums over the neighbours j (u = r_ij / cutoff, f the envelope)
  s = embed(z_i) + Σ_j f φ(r) ⊙ W z_j,  v = Σ_j f φ'(r) ⊙ W' z_j u,
  t = Σ_j f φ''(r) ⊙ W'' z_j (u ⊗ u); sums divided by ``avg_num_neighbors``.
* Message passing (per layer): from each neighbour, channel-wise radial weights times
  scalars (s_j, v_j·u, u·t_j·u), vectors (s_j u, v_j, t_j u) and tensors
  (s_j u⊗u, sym(v_j⊗u), t_j).
* Update: the scalars see smooth invariants of v and t (sqrt(|x|^2 + eps^2) - eps per
  channel, which has no cone at x = 0, and the trace of t) through an MLP with SiLU; v and t
  are linear in channels plus the products t·v (T2×T1 -> T1) and sym(v⊗v') (T1×T1 -> T2), then
  gated by sigmoids of the new scalars.
* Normalisation: LayerNorm on the scalar MLP's input and a soft RMS norm
  x / sqrt(1 + mean_k |x_k|^2) over the channels of v and t (smooth at x = 0, equivariant:
  it divides by an invariant), both per atom, which is per structure and stricter: nothing mixes
  atoms of different structures (no batch statistics), so a structure's energy does not depend
  on what else is in the batch, and the model stays local (a periodic supercell has exactly the
  energy of its copies).
* Readout: an MLP of the final scalars and the invariants of v and t.

All features are built from polar vectors r_ij, so every invariant is also invariant under
reflections: the energy is E(3)-invariant. Everything is a polynomial of the bond vectors times
smooth radial functions, or a smooth function of such, so forces are continuous.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ops import scatter_sum
from .radial import RadialRange
from .registry import register_backbone


@dataclass
class GRepsNetConfig:
    """Hyper-parameters of the G-RepsNet backbone.

    Attributes:
        hidden: scalar (T0) channels C.
        tensor_channels: channels K of the vector (T1) and tensor (T2) features.
        layers: message-passing layers.
        basis_size: Bessel functions of the bond length.
        radial_hidden: width of the MLP that maps the radial basis to channel weights.
        eps: smoothing of the norms sqrt(|x|^2 + eps^2) - eps (dimensionless features).
    """

    hidden: int = 64
    tensor_channels: int = 16
    layers: int = 3
    basis_size: int = 8
    radial_hidden: int = 32
    eps: float = 1e-2


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))


class _ChannelLinear(nn.Module):
    """Linear map on the channel axis of x [N, K_in, ...] -> [N, K_out, ...] (no bias: equivariant)."""

    def __init__(self, k_in: int, k_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k_out, k_in) / k_in**0.5)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("ok,nk...->no...", self.weight, x)


def _sym(a: Tensor, b: Tensor) -> Tensor:
    """Symmetrised outer product of [..., 3] vectors -> [..., 3, 3]."""
    outer = a[..., :, None] * b[..., None, :]
    return 0.5 * (outer + outer.transpose(-1, -2))


def _mix(weight: Tensor, x: Tensor) -> Tensor:
    """Channel map weight [K_out, K_in] applied to x [E, K_in, ...] -> [E, K_out, ...]."""
    return torch.einsum("ok,ek...->eo...", weight, x)


def _smooth_norm(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    return torch.sqrt((x * x).sum(dims) + eps * eps) - eps


def _rms_norm(x: Tensor, dims: tuple[int, ...], scale: Tensor) -> Tensor:
    """x [N, K, ...] / sqrt(1 + mean_k |x_k|^2) * scale[k]; per atom, smooth at x = 0."""
    mean_sq = (x * x).sum(dims).mean(-1)  # [N]
    shape = (-1, scale.shape[0]) + (1,) * len(dims)
    return x * torch.rsqrt(1.0 + mean_sq).view(-1, *([1] * (x.dim() - 1))) * scale.view(shape)


class _Layer(nn.Module):
    def __init__(self, cfg: GRepsNetConfig):
        super().__init__()
        c, k = cfg.hidden, cfg.tensor_channels
        self.c, self.k, self.eps = c, k, cfg.eps
        # radial channel weights: scalar msg (C + 2K), vector msg (3K), tensor msg (3K)
        self.radial = _mlp(cfg.basis_size, cfg.radial_hidden, c + 8 * k)
        self.s_to_k = nn.Linear(c, 2 * k, bias=False)  # scalars that multiply u and u⊗u
        self.msg_scalar = nn.Linear(c + 2 * k, c)
        self.msg_vec = _ChannelLinear(3 * k, k)
        self.msg_ten = _ChannelLinear(3 * k, k)
        self.scalar_update = _mlp(2 * c + 3 * k, c, c)
        self.norm = nn.LayerNorm(2 * c + 3 * k)
        self.vec_self = _ChannelLinear(k, k)
        self.vec_prod = _ChannelLinear(k, k)
        self.ten_self = _ChannelLinear(k, k)
        self.ten_prod = nn.ModuleList([_ChannelLinear(k, k), _ChannelLinear(k, k)])
        self.gate = nn.Linear(c, 2 * k)
        self.v_scale = nn.Parameter(torch.ones(k))
        self.t_scale = nn.Parameter(torch.ones(k))

    def forward(self, s: Tensor, v: Tensor, t: Tensor, u: Tensor, rbf: Tensor, env: Tensor, edge_index: Tensor,
                norm: float) -> tuple[Tensor, Tensor, Tensor]:
        """s [N, C], v [N, K, 3], t [N, K, 3, 3]; u [E, 3], rbf [E, n], env [E] -> new (s, v, t)."""
        c, k = self.c, self.k
        n = s.shape[0]
        snd, rcv = edge_index[0], edge_index[1]
        w = self.radial(rbf) * env[:, None]  # [E, C + 8K]
        w_s, w_vs, w_ts, w_sv, w_vv, w_tv, w_st, w_vt, w_tt = torch.split(w, [c] + [k] * 8, dim=-1)
        s_j, v_j, t_j = s[snd], v[snd], t[snd]
        a_j, b_j = self.s_to_k(s_j).split(k, dim=-1)  # [E, K]
        tu = torch.einsum("ekab,eb->eka", t_j, u)  # t_j u, [E, K, 3]
        m_s = torch.cat([
            w_s * s_j,
            w_vs * torch.einsum("eka,ea->ek", v_j, u),
            w_ts * torch.einsum("eka,ea->ek", tu, u),
        ], dim=-1)
        m_s = self.msg_scalar(scatter_sum(m_s, rcv, n) / norm)
        # the channel maps act per edge, before the sum, so that one [E, K, 3] and one
        # [E, K, 3, 3] tensor are scattered instead of three of each
        wv, wt = self.msg_vec.weight.split(k, dim=1), self.msg_ten.weight.split(k, dim=1)
        uu = u[:, None, :]
        m_v = ((w_sv * a_j) @ wv[0].T)[..., None] * uu + _mix(wv[1], w_vv[..., None] * v_j) \
            + _mix(wv[2], w_tv[..., None] * tu)  # [E, K, 3]
        m_t = ((w_st * b_j) @ wt[0].T)[..., None, None] * (uu[..., :, None] * uu[..., None, :]) \
            + _sym(_mix(wt[1], w_vt[..., None] * v_j), uu) + _mix(wt[2], w_tt[..., None, None] * t_j)
        m_v = scatter_sum(m_v, rcv, n) / norm
        m_t = scatter_sum(m_t, rcv, n) / norm

        v_new = self.vec_self(v) + m_v + torch.einsum("nkab,nkb->nka", t, self.vec_prod(v))
        t_new = self.ten_self(t) + m_t + _sym(self.ten_prod[0](v), self.ten_prod[1](v))
        inv = torch.cat([
            _smooth_norm(v_new, (-1,), self.eps),
            _smooth_norm(t_new, (-2, -1), self.eps),
            torch.diagonal(t_new, dim1=-2, dim2=-1).sum(-1),
        ], dim=-1)  # [N, 3K], O(3) invariants
        s = s + self.scalar_update(self.norm(torch.cat([s, m_s, inv], dim=-1)))
        g_v, g_t = torch.sigmoid(self.gate(s)).split(k, dim=-1)
        v = _rms_norm(g_v[..., None] * v_new, (-1,), self.v_scale)
        t = _rms_norm(g_t[..., None, None] * t_new, (-2, -1), self.t_scale)
        return s, v, t


@register_backbone("grepsnet", GRepsNetConfig)
class GRepsNet(nn.Module):
    """G-RepsNet backbone: per-atom energies [N] from species and bond vectors."""

    supports_periodic = True

    def __init__(self, config: GRepsNetConfig, num_species: int, radial_range: RadialRange,
                 avg_num_neighbors: float):
        super().__init__()
        if min(config.hidden, config.tensor_channels, config.layers, config.basis_size, config.radial_hidden) < 1:
            raise ValueError(f"grepsnet: sizes must be positive, got {config}")
        if config.eps <= 0:
            raise ValueError(f"grepsnet: eps must be positive (it removes the cone of |x| at 0), got {config.eps}")
        self.config = config
        self.radial_range = radial_range
        self.avg_num_neighbors = float(avg_num_neighbors)
        c, k = config.hidden, config.tensor_channels
        self.embed = nn.Embedding(num_species, c)
        self.basis = radial_range.bessel(config.basis_size)
        self.seed_radial = _mlp(config.basis_size, config.radial_hidden, c + 2 * k)
        self.seed_species = nn.Linear(c, c + 2 * k, bias=False)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.layers))
        self.message_passing_hops = int(config.layers) + 1  # the seed (s, v, t) already sums over edges
        self.readout = _mlp(c + 3 * k, c, 1)

    def invariants(self, s: Tensor, v: Tensor, t: Tensor) -> Tensor:
        eps = self.config.eps
        return torch.cat([
            s,
            _smooth_norm(v, (-1,), eps),
            _smooth_norm(t, (-2, -1), eps),
            torch.diagonal(t, dim1=-2, dim2=-1).sum(-1),
        ], dim=-1)

    def forward(self, species: Tensor, positions: Tensor, edge_index: Tensor, edge_vec: Tensor, batch: Tensor,
                num_graphs: int) -> Tensor:
        """Per-atom energies [N] (before scale/shift). edge_vec [E, 3] in Å."""
        c, k = self.config.hidden, self.config.tensor_channels
        n = species.shape[0]
        norm = self.avg_num_neighbors
        snd, rcv = edge_index[0], edge_index[1]
        r = torch.sqrt((edge_vec * edge_vec).sum(-1))
        env = self.radial_range.envelope(r)
        rbf = self.basis(r) * env[:, None]
        u = self.radial_range.reduced(edge_vec)
        emb = self.embed(species)
        w = self.seed_radial(rbf) * env[:, None] * self.seed_species(emb)[snd]  # [E, C + 2K]
        w_s, w_v, w_t = torch.split(w, [c, k, k], dim=-1)
        s = emb + scatter_sum(w_s, rcv, n) / norm
        v = scatter_sum(w_v[..., None] * u[:, None, :], rcv, n) / norm
        t = scatter_sum(w_t[..., None, None] * (u[:, None, :, None] * u[:, None, None, :]), rcv, n) / norm
        for layer in self.layers:
            s, v, t = layer(s, v, t, u, rbf, env, edge_index, norm)
        return self.readout(self.invariants(s, v, t)).squeeze(-1)
