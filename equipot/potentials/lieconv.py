"""LieConv (Finzi et al., ICML 2020) on SE(3) as an energy backbone.

Lifting. SE(3) acts transitively on R3 and the stabiliser of a point is SO(3), so atom i
at x_i is lifted to L group elements u_{i,k} = (x_i, R_{i,k}), k = 1..L, with rotations
R_{i,k} drawn from the Haar measure. Because the action is transitive there is a single
orbit: the paper's orbit identifier q is constant and dropped; the species enter through
the node features instead.

Kernel. For an edge j -> i (r = x_j - x_i, within the cutoff) and a pair of lifts (k, l)
the group element u^-1 v = (R_{i,k}^T r, R_{i,k}^T R_{j,l}) is mapped to the Lie algebra as

    a = (t, w),  t = R_{i,k}^T r  (Å),  w = log(R_{i,k}^T R_{j,l}) in so(3) (axis * angle),

the paper's simpler SE(3) variant that keeps the translational part in the lifted frame
instead of the exact V(w)^-1 t (V depends only on w, so the kernel MLP can absorb it).
The kernel is an MLP on Gaussian expansions of t's components and of |r|, and on w / pi,
times the smooth cutoff envelope of |r| (locality by a smooth cutoff, never a hard ball
with random subsampling: forces stay continuous when neighbours cross the cutoff).

Smoothness. The lifts do not depend on positions, so w is constant under a displacement
and t is linear in r: the energy is as smooth as the MLPs and the envelope (the log map's
cut at angle pi only ever sees fixed rotations, never a position-dependent one).

Invariance. Translations are exact (only r enters). Rotating the structure by Q is
equivalent to replacing every lift R by Q^T R, which has the same Haar distribution: the
energy is invariant in expectation over the lifts, and with a fixed set of L lifts it has a
rotation error that shrinks like ~1/sqrt(L) (tested in tests/potentials/test_lieconv.py;
measured in benchmarks/RESULTS.md, "Backbones side by side"). Permutations are
exact only in expectation too: lifts are indexed by the atom's slot in its structure, so
permuting atoms amounts to drawing other lifts. Reflections: with ``reflections=True``
every proper lift R comes with the improper lift -R (the stabiliser in E(3) is O(3)); pairs
only combine lifts of the same parity, so R^T R' stays in SO(3) and its log exists.
E(-x; R) = E(x; -R), so the inversion x -> -x is exactly symmetric, and any improper
rotation is as accurate as a proper one (the antithetic pair also reduces the variance).

Cost. The full convolution is edges x L x L kernel evaluations. ``pairing="diagonal"``
(default) combines lift k of i only with lift k of j (edges x L; each lift index is an
independent network with one random frame per atom, averaged at the readout);
``pairing="full"`` sums over all l of the same parity (edges x L^2/2 with reflections).
Layers: message -> ConvNeXt-style residual MLP per lifted point; readout: MLP per lift,
mean over lifts.

Determinism. In training mode (``module.train()``) with ``sample_lifts=True`` fresh Haar
lifts are drawn at every call (an augmentation that teaches invariance). In eval mode the
lifts come from a fixed table generated from ``seed`` (per atom index within its structure,
so a structure's lifts do not depend on what else is in the batch): an MD run sees one
smooth energy surface. Call ``.eval()`` for inference (EquiCalc does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ops.message import spatial_message
from .radial import RadialRange
from .registry import register_backbone

_CHUNK = 256  # atoms per block of the inference lift table


@dataclass
class LieConvConfig:
    """Hyper-parameters of the LieConv backbone.

    Attributes:
        hidden: channels C per lifted point.
        layers: number of convolution layers.
        num_lifts: L, lifts per atom (even when ``reflections``; half are the improper copies).
        basis_size: Gaussians per translational component and for the distance.
        kernel_dim: width K of the kernel MLP.
        widening: expansion of the pointwise MLP.
        pairing: "diagonal" (lift k with lift k, cost E*L) or "full" (all same-parity pairs).
        reflections: pair every lift R with -R (exact inversion symmetry, E(3) instead of SE(3)).
        sample_lifts: draw random lifts at every call in training mode.
        seed: seed of the fixed inference lifts.
    """

    hidden: int = 64
    layers: int = 3
    num_lifts: int = 4
    basis_size: int = 8
    kernel_dim: int = 32
    widening: int = 2
    pairing: str = "diagonal"
    reflections: bool = True
    sample_lifts: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_lifts < 1:
            raise ValueError(f"num_lifts must be >= 1, got {self.num_lifts}")
        if self.reflections and self.num_lifts % 2:
            raise ValueError(f"num_lifts must be even with reflections=True (R and -R), got {self.num_lifts}")
        if self.pairing not in ("diagonal", "full"):
            raise ValueError(f"pairing must be 'diagonal' or 'full', got {self.pairing!r}")


# --- unit quaternions (w, x, y, z) for the lifts -------------------------------------------------


def random_quaternions(shape: tuple[int, ...], generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """Haar-random rotations as unit quaternions [*shape, 4] (normalised 4-d Gaussians)."""
    q = torch.randn(*shape, 4, generator=generator, dtype=dtype, device=device)
    return q / q.norm(dim=-1, keepdim=True)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Unit quaternions [..., 4] -> rotation matrices [..., 3, 3]."""
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(q.shape[:-1] + (3, 3))


def relative_log(qa: Tensor, qb: Tensor) -> Tensor:
    """log(R_a^T R_b) in so(3) as axis * angle [..., 3] (angle in [0, pi]) from quaternions [..., 4]."""
    aw, av = qa[..., :1], -qa[..., 1:]  # conjugate of qa
    bw, bv = qb[..., :1], qb[..., 1:]
    w = aw * bw - (av * bv).sum(-1, keepdim=True)
    v = aw * bv + bw * av + torch.cross(av, bv, dim=-1)
    sign = torch.where(w < 0, -torch.ones_like(w), torch.ones_like(w))  # q and -q: same rotation
    w, v = w * sign, v * sign
    s = v.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, w)
    scale = torch.where(s > 1e-12, angle / s.clamp(min=1e-12), 2.0 / w.clamp(min=1e-12))
    return v * scale


# --- the network ----------------------------------------------------------------------------------


class _Layer(nn.Module):
    def __init__(self, cfg: LieConvConfig):
        super().__init__()
        c, k = cfg.hidden, cfg.kernel_dim
        self.edge = nn.Sequential(nn.Linear(k, k), nn.SiLU())
        self.weight = nn.Parameter(torch.randn(k, c) / k**0.5)
        self.norm = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, cfg.widening * c), nn.SiLU(), nn.Linear(cfg.widening * c, c))
        self.layer_scale = nn.Parameter(torch.full((c,), 0.1))

    def forward(self, h: Tensor, phi0: Tensor, envelope: Tensor, edge_index: Tensor, pair_k: Tensor,
                pair_l: Tensor, num_lifts: int, norm: float) -> Tensor:
        """h [N, L, C], phi0 [E, P, K] -> h [N, L, C]."""
        phi = self.edge(phi0) * envelope[:, None, None]
        per_pair = spatial_message(phi, self.weight, h[:, pair_l], edge_index, h.shape[0])  # [N, P, C]
        m = torch.zeros_like(h).index_add_(1, pair_k, per_pair)
        m = m * (num_lifts / (pair_k.numel() * norm))  # mean over the pairs of each lift
        return h + self.layer_scale * self.mlp(self.norm(h + m))


@register_backbone("lieconv", LieConvConfig)
class LieConv(nn.Module):
    """LieConv on SE(3) (E(3) with reflections): per-atom energies [N] from species and edge vectors."""

    def __init__(self, config: LieConvConfig, num_species: int, radial_range: RadialRange,
                 avg_num_neighbors: float):
        super().__init__()
        self.config = config
        self.radial_range = radial_range
        self.avg_num_neighbors = float(avg_num_neighbors)
        c, n, k = config.hidden, config.basis_size, config.kernel_dim
        self.num_proper = config.num_lifts // 2 if config.reflections else config.num_lifts
        pk, pl = self._pairs()
        self.register_buffer("pair_k", pk, persistent=False)
        self.register_buffer("pair_l", pl, persistent=False)
        self.embed = nn.Embedding(num_species, c)
        self.t_basis = radial_range.gaussian(n, signed=True)
        self.r_basis = radial_range.gaussian(n)
        self.kernel = nn.Sequential(nn.Linear(4 * n + 3, k), nn.SiLU(), nn.Linear(k, k), nn.SiLU())
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.layers))
        self.readout = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, 1))
        self._table: Tensor | None = None  # cached inference lifts [A, L_proper, 4], float64, CPU

    def _pairs(self) -> tuple[Tensor, Tensor]:
        """Lift index pairs (k of the receiver, l of the sender), each [P]."""
        lifts = self.config.num_lifts
        if self.config.pairing == "diagonal":
            idx = torch.arange(lifts)
            return idx, idx.clone()
        parity = torch.arange(lifts) // self.num_proper if self.config.reflections else torch.zeros(lifts)
        kk, ll = torch.meshgrid(torch.arange(lifts), torch.arange(lifts), indexing="ij")
        same = parity[kk] == parity[ll]
        return kk[same], ll[same]

    def _fixed_lifts(self, count: int) -> Tensor:
        """Inference lifts for atom slots 0..count-1, [count, L_proper, 4] float64 (CPU, cached).

        Block b of the table comes from its own generator seeded with (seed, b), so slot a's
        lifts never depend on how many atoms were requested before.
        """
        have = 0 if self._table is None else self._table.shape[0]
        if count > have:
            blocks = [] if self._table is None else [self._table]
            for b in range(have // _CHUNK, -(-count // _CHUNK)):
                g = torch.Generator().manual_seed(int(self.config.seed) * 1_000_003 + b)
                blocks.append(random_quaternions((_CHUNK, self.num_proper), generator=g))
            self._table = torch.cat(blocks)
        return self._table[:count]

    def lifts(self, batch: Tensor, num_graphs: int, dtype: torch.dtype) -> Tensor:
        """Proper lift quaternions per atom [N, L_proper, 4]: random in training, else the fixed table."""
        n = batch.shape[0]
        if self.training and self.config.sample_lifts:
            return random_quaternions((n, self.num_proper), dtype=dtype, device=batch.device)
        counts = torch.bincount(batch, minlength=num_graphs)
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(n, device=batch.device) - start[batch]
        count = int(counts.max()) if n else 0
        return self._fixed_lifts(count).to(device=batch.device, dtype=dtype)[slot]

    def edge_features(self, edge_index: Tensor, edge_vec: Tensor, quats: Tensor) -> Tensor:
        """Embedded Lie-algebra elements of every (edge, lift pair), phi0 [E, P, K] (before the envelope)."""
        j, i = edge_index[0], edge_index[1]
        props = self.pair_k % self.num_proper  # proper rotation index of each lift
        propl = self.pair_l % self.num_proper
        q_i = quats[i][:, props]  # [E, P, 4]
        q_j = quats[j][:, propl]
        rot_i = quaternion_to_matrix(q_i)  # [E, P, 3, 3]
        t = torch.einsum("epab,ea->epb", rot_i, edge_vec)  # R^T r
        if self.config.reflections:
            parity = 1.0 - 2.0 * (self.pair_k >= self.num_proper).to(edge_vec.dtype)  # -R: t -> -t
            t = t * parity[:, None]
        omega = relative_log(q_i, q_j) / math.pi  # same-parity pairs: (-R)^T(-R') = R^T R'
        r = torch.sqrt((edge_vec * edge_vec).sum(-1))
        feats = torch.cat([
            self.t_basis(t).flatten(-2),
            self.r_basis(r)[:, None, :].expand(-1, t.shape[1], -1),
            omega,
        ], dim=-1)
        return self.kernel(feats)

    def forward(self, species: Tensor, positions: Tensor, edge_index: Tensor, edge_vec: Tensor, batch: Tensor,
                num_graphs: int) -> Tensor:
        """Per-atom energies [N] (before scale/shift)."""
        lifts = self.config.num_lifts
        quats = self.lifts(batch, num_graphs, edge_vec.dtype)
        r = torch.sqrt((edge_vec * edge_vec).sum(-1))
        envelope = self.radial_range.envelope(r)
        phi0 = self.edge_features(edge_index, edge_vec, quats)
        h = self.embed(species)[:, None, :].expand(-1, lifts, -1).contiguous()
        for layer in self.layers:
            h = layer(h, phi0, envelope, edge_index, self.pair_k, self.pair_l, lifts, self.avg_num_neighbors)
        return self.readout(h).squeeze(-1).mean(-1)
