"""Frame Averaging (Puny et al., ICLR 2022) around a non-equivariant network, as an energy backbone.

Frames. For each structure (``frame="global"``) the centred second moment
C = (1/n) sum_a (x_a - c)(x_a - c)^T, c the centroid, is diagonalised, C = U diag(l1 <= l2 <= l3) U^T.
The frames are F_s = U diag(s) for the 8 sign vectors s (group "E3") or the 4 with det F = +1
(group "SE3"). Rotating (or, for E3, reflecting) the structure by Q maps the set {F_s} onto
{Q F_s}, and translating it leaves C unchanged, so averaging the inner network over the frames,

    E(x) = (1/|F|) sum_s f((x - c) F_s),

is exactly invariant for ANY inner network f: the plain message-passing network on
frame-rotated edge vectors written here (``inner="mlp"``, not equivariant on its own) or
any registered backbone (``inner="ponita"`` with ``inner_options={"grid_size": 1}``, ...).
Forces are autograd through the eigendecomposition, so they are exactly conservative.
Frames are per structure (``batch``), never across the batch.

Degeneracy. When two eigenvalues coincide (benzene: the two in-plane ones; methane,
isolated atoms: all three; diatomics: the two perpendicular ones) the eigenvectors of the
degenerate pair are arbitrary, the frame average jumps, and the gradient of ``eigh``
contains 1/(l_i - l_j). Strategy: a smooth weighted mixture of *levels* of frames, each
exactly invariant and used only where its frame is well defined. With the relative gaps
a = (l2 - l1)/tr C and b = (l3 - l2)/tr C and w(g) a C^3 smooth step from 0 (g <= gap_low)
to 1 (g >= gap_high):

    E = w(a) w(b)       E_full                (all three axes; 8 or 4 frames)
      + w(a) (1 - w(b)) E_axis(u1)            (only u1 defined)
      + (1 - w(a)) w(b) E_axis(u3)            (only u3 defined)
      + (1 - w(a)) (1 - w(b)) E_radial,

where E_axis(u) averages over +-u the inner network fed with vectors in cylindrical form
(+-u.r, rho(r - (u.r) u), 0), invariant to any rotation about u, and E_radial feeds
(rho(r), 0, 0); rho(v) = sqrt(|v|^2 + eps^2) - eps removes the cone of |v| at v = 0.
Every level is exactly invariant, each weight is a smooth function of the eigenvalues, and
a level's weight is exactly zero wherever its eigenvectors are ill defined, so the energy
is continuous and smooth through symmetric geometries (tested on a benzene path through
D6h). The gradient of ``eigh`` is computed by :class:`SafeEigh`, which drops the
1/(l_i - l_j) terms for gaps below gap_low/2: those terms always multiply an exactly zero
upstream gradient (the weights of every level using those eigenvectors vanish), so the
result is the exact gradient, finite at degeneracy, also for double backward (force
training). Cost: the inner network runs once per frame with non-zero weight: 8 (E3) or 4
(SE3) for generic molecules, up to 13 in a transition band. The defaults gap_low = 0.01,
gap_high = 0.05 were chosen from revised MD17: aspirin and toluene have gaps >= 0.2, so they
always use full frames; ethanol and malonaldehyde dip into the band in a few % of frames;
benzene (median b = 0.018) and uracil (0.04) are mostly in the band or in the axis level,
where the model is less expressive (no azimuthal information about the axis).

Periodic cells. A global PCA frame is not defined for a periodic system (the centroid and
second moment depend on how atoms are wrapped). ``frame="global"`` raises ValueError for
input with an edge through a cell boundary (a backbone sees edge vectors, not the cell, so a
periodic cell none of whose edges crosses a boundary is treated as a molecule). ``frame="local"`` is for periodic
(and molecular)
input: every atom i has a frame from the envelope-weighted second moment of its
neighbour vectors, C_i = sum_j f_cut(r_ij) r_ij r_ij^T (smooth in positions and cell), with
the same levels and mixture, and an invariant message-passing network in which the update
of atom i is averaged over atom i's frames:

    h_i <- h_i + sum_v omega_iv MLP(LN(h_i + sum_j K(view_v(r_ij)) * h_j)),

exactly invariant, local, and independent of the cell and of wrapping.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..ops.message import spatial_message
from ..ops.scatter import scatter_sum
from .radial import RadialRange
from .registry import get_backbone, register_backbone

_RHO_EPS = 1e-2  # Å, smoothing of cylindrical / radial norms
_TRACE_EPS = 1e-6  # Å^2, keeps relative gaps finite for a single atom (C = 0)


@dataclass
class FrameAveragingConfig:
    """Hyper-parameters of the Frame Averaging backbone.

    Attributes:
        frame: "global" (per-structure PCA frame around ``inner``; molecules only) or "local"
            (per-atom frames, own invariant network; works for periodic cells).
        group: "E3" (8 sign frames, reflection invariant) or "SE3" (4 proper frames).
        inner: "mlp" (message passing on frame-rotated edge vectors, written here) or the
            name of a registered backbone (global frames only).
        inner_options: options of the inner registered backbone.
        hidden, layers, basis_size, kernel_dim, widening: size of the "mlp"/local network.
        gap_low, gap_high: relative eigenvalue gaps between which a frame level is faded in.
    """

    frame: str = "global"
    group: str = "E3"
    inner: str = "mlp"
    inner_options: dict[str, Any] = field(default_factory=dict)
    hidden: int = 64
    layers: int = 3
    basis_size: int = 8
    kernel_dim: int = 32
    widening: int = 2
    gap_low: float = 0.01
    gap_high: float = 0.05

    def __post_init__(self) -> None:
        if self.frame not in ("global", "local"):
            raise ValueError(f"frame must be 'global' or 'local', got {self.frame!r}")
        if self.group not in ("E3", "SE3"):
            raise ValueError(f"group must be 'E3' or 'SE3', got {self.group!r}")
        if self.inner == "frame_averaging":
            raise ValueError("frame_averaging cannot be its own inner backbone")
        if self.frame == "local" and self.inner != "mlp":
            raise ValueError("frame='local' uses its own network; inner must be 'mlp'")
        if not 0.0 < self.gap_low < self.gap_high:
            raise ValueError(f"need 0 < gap_low < gap_high, got {self.gap_low}, {self.gap_high}")


# --- eigendecomposition with a gradient that is finite at degeneracy ------------------------------


class SafeEigh(torch.autograd.Function):
    """``torch.linalg.eigh`` of symmetric [..., 3, 3] whose backward drops 1/(l_j - l_i) for |l_j - l_i| <= tol.

    Exact whenever the gradient with respect to eigenvectors of such near-degenerate pairs
    is zero (the caller's contract; see the module docstring); twice differentiable.
    """

    @staticmethod
    def forward(ctx, a: Tensor, tol: Tensor) -> tuple[Tensor, Tensor]:
        lam, vec = torch.linalg.eigh(a)
        ctx.save_for_backward(lam, vec, tol)
        return lam, vec

    @staticmethod
    def backward(ctx, g_lam: Tensor | None, g_vec: Tensor | None) -> tuple[Tensor, None]:
        lam, vec, tol = ctx.saved_tensors
        inner = torch.zeros_like(vec)
        if g_vec is not None:
            diff = lam.unsqueeze(-2) - lam.unsqueeze(-1)  # [i, j] = l_j - l_i
            keep = diff.abs() > tol[..., None, None]
            inv = torch.where(keep, 1.0 / torch.where(keep, diff, torch.ones_like(diff)), torch.zeros_like(diff))
            inner = inv * (vec.transpose(-1, -2) @ g_vec)
        if g_lam is not None:
            inner = inner + torch.diag_embed(g_lam)
        g_a = vec @ inner @ vec.transpose(-1, -2)
        return 0.5 * (g_a + g_a.transpose(-1, -2)), None


def smooth_step(x: Tensor, low: float, high: float) -> Tensor:
    """0 for x <= low, 1 for x >= high, C^3 in between (degree-7 smoothstep)."""
    t = ((x - low) / (high - low)).clamp(0.0, 1.0)
    return t**4 * (35.0 - 84.0 * t + 70.0 * t**2 - 20.0 * t**3)


def _rho(v: Tensor) -> Tensor:
    return torch.sqrt((v * v).sum(-1) + _RHO_EPS**2) - _RHO_EPS


_SIGNS = torch.tensor([[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)], dtype=torch.float64)


class FrameSet:
    """Equivariant weighted views from second-moment matrices C [G, 3, 3] (G groups: structures or atoms).

    ``weights`` [G, V]: weight of each view (sums to 1 per group). ``canonical(vec [M, 3], group [M])``
    -> [V, M, 3]: the vectors as seen in each view. Views: the full frames, then +-u1, +-u3, radial.
    """

    def __init__(self, moment: Tensor, group: str, gap_low: float, gap_high: float):
        trace = moment.diagonal(dim1=-2, dim2=-1).sum(-1) + _TRACE_EPS
        tol = (0.5 * gap_low * trace).detach()
        lam, vec = SafeEigh.apply(moment, tol)
        a = (lam[:, 1] - lam[:, 0]) / trace
        b = (lam[:, 2] - lam[:, 1]) / trace
        wa, wb = smooth_step(a, gap_low, gap_high), smooth_step(b, gap_low, gap_high)
        signs = _SIGNS.to(moment)
        if group == "SE3":
            signs = signs[signs.prod(-1) > 0]  # then flip the third axis where det(U) = -1
            det = torch.linalg.det(vec.detach()).sign()
            signs = signs[None, :, :] * torch.stack([torch.ones_like(det), torch.ones_like(det), det], -1)[:, None]
        else:
            signs = signs[None].expand(moment.shape[0], -1, -1)
        self.frames = vec[:, None, :, :] * signs[:, :, None, :]  # [G, F, 3, 3], columns = axes
        self.u1, self.u3 = vec[..., 0], vec[..., 2]
        nf = self.frames.shape[1]
        self.weights = torch.cat([
            (wa * wb / nf)[:, None].expand(-1, nf),
            (0.5 * wa * (1 - wb))[:, None].expand(-1, 2),
            (0.5 * (1 - wa) * wb)[:, None].expand(-1, 2),
            ((1 - wa) * (1 - wb))[:, None],
        ], dim=-1)
        self.num_frames = nf

    @property
    def num_views(self) -> int:
        return self.num_frames + 5

    def canonical(self, vec: Tensor, group: Tensor, views: list[int]) -> Tensor:
        """The vectors [M, 3] (belonging to groups ``group`` [M]) in the listed views -> [len(views), M, 3]."""
        out = []
        zero = vec.new_zeros(vec.shape[0])
        for v in views:
            if v < self.num_frames:
                out.append(torch.einsum("ma,mab->mb", vec, self.frames[group, v]))
            elif v < self.num_frames + 4:
                axis = (self.u1 if v < self.num_frames + 2 else self.u3)[group]
                sign = 1.0 if (v - self.num_frames) % 2 == 0 else -1.0
                along = (vec * axis).sum(-1)
                perp = _rho(vec - along[:, None] * axis)
                out.append(torch.stack([sign * along, perp, zero], dim=-1))
            else:
                out.append(torch.stack([_rho(vec), zero, zero], dim=-1))
        return torch.stack(out) if out else vec.new_zeros(0, vec.shape[0], 3)

    def active_views(self) -> list[int]:
        """Views with a non-zero weight somewhere (the others contribute exactly zero)."""
        return [int(v) for v in torch.nonzero((self.weights != 0).any(0)).flatten()]


# --- the networks -----------------------------------------------------------------------------------


class _EdgeEmbedding(nn.Module):
    """Gaussian expansion of the three components of a (frame-rotated) edge vector and of its length."""

    def __init__(self, basis_size: int, kernel_dim: int, radial_range: RadialRange):
        super().__init__()
        self.component = radial_range.gaussian(basis_size, signed=True)
        self.length = radial_range.gaussian(basis_size)
        self.net = nn.Sequential(nn.Linear(4 * basis_size, kernel_dim), nn.SiLU(),
                                 nn.Linear(kernel_dim, kernel_dim), nn.SiLU())

    def forward(self, vec: Tensor, length: Tensor) -> Tensor:
        """vec [..., E, 3] Å, length [E] Å -> [..., E, K]."""
        lb = self.length(length).expand(vec.shape[:-1] + (-1,))
        return self.net(torch.cat([self.component(vec).flatten(-2), lb], dim=-1))


class _Block(nn.Module):
    def __init__(self, hidden: int, kernel_dim: int, widening: int):
        super().__init__()
        self.edge = nn.Sequential(nn.Linear(kernel_dim, kernel_dim), nn.SiLU())
        self.weight = nn.Parameter(torch.randn(kernel_dim, hidden) / kernel_dim**0.5)
        self.norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, widening * hidden), nn.SiLU(), nn.Linear(widening * hidden, hidden))
        self.layer_scale = nn.Parameter(torch.full((hidden,), 0.1))

    def message(self, phi0: Tensor, envelope: Tensor, h: Tensor, edge_index: Tensor, norm: float) -> Tensor:
        """phi0 [E, O, K], h [N, O, C] -> [N, O, C]."""
        phi = self.edge(phi0) * envelope[:, None, None]
        return spatial_message(phi, self.weight, h, edge_index, h.shape[0]) / norm

    def update(self, h: Tensor, m: Tensor) -> Tensor:
        return self.layer_scale * self.mlp(self.norm(h + m))


class EdgeMLP(nn.Module):
    """Plain message passing on raw edge vectors: NOT rotation invariant on its own (the FA inner net).

    ``forward`` has the backbone signature and returns per-atom energies [N].
    """

    def __init__(self, cfg: FrameAveragingConfig, num_species: int, radial_range: RadialRange,
                 avg_num_neighbors: float):
        super().__init__()
        self.radial_range, self.avg_num_neighbors = radial_range, float(avg_num_neighbors)
        self.embed = nn.Embedding(num_species, cfg.hidden)
        self.edge_embed = _EdgeEmbedding(cfg.basis_size, cfg.kernel_dim, radial_range)
        self.blocks = nn.ModuleList(_Block(cfg.hidden, cfg.kernel_dim, cfg.widening) for _ in range(cfg.layers))
        self.readout = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, 1))

    def forward(self, species: Tensor, positions: Tensor, edge_index: Tensor, edge_vec: Tensor, batch: Tensor,
                num_graphs: int) -> Tensor:
        r = torch.sqrt((edge_vec * edge_vec).sum(-1))
        envelope = self.radial_range.envelope(r)
        phi0 = self.edge_embed(edge_vec, r)[:, None]  # [E, 1, K]
        h = self.embed(species)[:, None]  # [N, 1, C]
        for block in self.blocks:
            h = h + block.update(h, block.message(phi0, envelope, h, edge_index, self.avg_num_neighbors))
        return self.readout(h[:, 0]).squeeze(-1)


class _LocalFrameNet(nn.Module):
    """Invariant message passing whose node updates are averaged over each atom's local frames."""

    def __init__(self, cfg: FrameAveragingConfig, num_species: int, radial_range: RadialRange,
                 avg_num_neighbors: float):
        super().__init__()
        self.cfg = cfg
        self.radial_range, self.avg_num_neighbors = radial_range, float(avg_num_neighbors)
        self.embed = nn.Embedding(num_species, cfg.hidden)
        self.edge_embed = _EdgeEmbedding(cfg.basis_size, cfg.kernel_dim, radial_range)
        self.blocks = nn.ModuleList(_Block(cfg.hidden, cfg.kernel_dim, cfg.widening) for _ in range(cfg.layers))
        self.readout = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, 1))

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        n = species.shape[0]
        receiver = edge_index[1]
        r = torch.sqrt((edge_vec * edge_vec).sum(-1))
        envelope = self.radial_range.envelope(r)
        outer = envelope[:, None, None] * edge_vec[:, :, None] * edge_vec[:, None, :]
        moment = scatter_sum(outer, receiver, n)  # [N, 3, 3]
        frames = FrameSet(moment, self.cfg.group, self.cfg.gap_low, self.cfg.gap_high)
        views = frames.active_views()
        weights = frames.weights[:, views]  # [N, V]
        canon = frames.canonical(edge_vec, receiver, views)  # [V, E, 3]
        phi0 = self.edge_embed(canon, r).transpose(0, 1)  # [E, V, K]
        h = self.embed(species)  # [N, C]
        for block in self.blocks:
            hv = h[:, None].expand(-1, len(views), -1)
            m = block.message(phi0, envelope, hv, edge_index, self.avg_num_neighbors)  # [N, V, C]
            h = h + (weights[..., None] * block.update(hv, m)).sum(1)
        return self.readout(h).squeeze(-1)


@register_backbone("frame_averaging", FrameAveragingConfig)
class FrameAveraging(nn.Module):
    """Frame Averaging backbone: per-atom energies [N], exactly E(3) (or SE(3)) invariant."""

    def __init__(self, config: FrameAveragingConfig, num_species: int, radial_range: RadialRange,
                 avg_num_neighbors: float):
        super().__init__()
        self.config = config
        if config.frame == "local":
            self.net = _LocalFrameNet(config, num_species, radial_range, avg_num_neighbors)
        elif config.inner == "mlp":
            self.net = EdgeMLP(config, num_species, radial_range, avg_num_neighbors)
        else:
            cls, config_cls = get_backbone(config.inner)
            try:
                inner_config = config_cls(**config.inner_options)
            except TypeError as exc:
                raise ValueError(f"bad inner_options for inner backbone {config.inner!r}: {exc}") from None
            self.net = cls(inner_config, num_species, radial_range, avg_num_neighbors)

    def forward(self, species: Tensor, positions: Tensor, edge_index: Tensor, edge_vec: Tensor, batch: Tensor,
                num_graphs: int) -> Tensor:
        """Per-atom energies [N] (before scale/shift)."""
        if self.config.frame == "local":
            return self.net(species, edge_index, edge_vec)
        self._check_not_periodic(positions, edge_index, edge_vec)
        n = positions.shape[0]
        counts = torch.bincount(batch, minlength=num_graphs).clamp(min=1).to(positions.dtype)
        centroid = scatter_sum(positions, batch, num_graphs) / counts[:, None]
        centred = positions - centroid[batch]
        moment = scatter_sum(centred[:, :, None] * centred[:, None, :], batch, num_graphs) / counts[:, None, None]
        frames = FrameSet(moment, self.config.group, self.config.gap_low, self.config.gap_high)
        views = frames.active_views()
        nv = len(views)
        pos_v = frames.canonical(centred, batch, views).reshape(nv * n, 3)
        vec_v = frames.canonical(edge_vec, batch[edge_index[1]], views).reshape(-1, 3)
        offsets = (torch.arange(nv, device=positions.device) * n).repeat_interleave(edge_index.shape[1])
        out = self.net(
            species.repeat(nv),
            pos_v,
            edge_index.repeat(1, nv) + offsets,
            vec_v,
            (batch[None, :] + num_graphs * torch.arange(nv, device=batch.device)[:, None]).reshape(-1),
            num_graphs * nv,
        ).reshape(nv, n)
        return (frames.weights[batch][:, views] * out.T).sum(-1)

    @staticmethod
    def _check_not_periodic(positions: Tensor, edge_index: Tensor, edge_vec: Tensor) -> None:
        if edge_index.shape[1] == 0:
            return
        direct = positions[edge_index[0]] - positions[edge_index[1]]
        bad = (edge_vec - direct).abs().amax(-1) > 1e-6
        if bool(bad.any()):
            e = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"frame_averaging with frame='global' needs non-periodic structures, but the edge from atom "
                f"{int(edge_index[0, e])} to atom {int(edge_index[1, e])} crosses a periodic cell boundary; "
                "a global PCA frame is not defined for a periodic system: use frame='local'"
            )
