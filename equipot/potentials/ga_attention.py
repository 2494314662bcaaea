"""Geometric-algebra attention (after Spellings, 2021) as an energy backbone.

Spellings' networks attend over tuples of bond vectors of an atom and read rotation
invariants off their geometric products: for two vectors the product ``a b = a·b + a∧b``
gives a scalar and a bivector (invariant: its squared norm ``|a∧b|^2 = |a×b|^2``); a third
vector adds a trivector ``a·(b×c)``, a pseudoscalar that flips sign under reflection.

Which tuples. Attending over all pairs (j, k) of neighbours of i costs N·k^2 tuples (k ~ 50
neighbours at 5 Å in liquid water: 50× the edge count). Here each atom i instead carries A
smooth *reference vectors* per layer,

    R_i^a = (1/avg_num_neighbors) Σ_j f(r_ij) g^a(r_ij, h_j) r_ij / cutoff,

f the cutoff envelope, g learned from the radial basis and the sender's features, and the
attention runs over the pair tuples (i, j), j a neighbour, plus a *self tuple* (i, i). The
products are formed between the bond u = r_ij/cutoff and the references of both ends:

    u·R_i^a,  |u∧R_i^a|^2,  u·R_j^a,  |u∧R_j^a|^2,        (scalar, squared bivector)
    u·(R_i^a × R_j^a),  u·(R_i^a × R_i^(a+1)),           (trivectors)

and the self tuple reads the Gram matrix R_i^a·R_i^b. Because the dot product is bilinear,
u_ij·R_i^a = Σ_k w_k (u_ij·u_ik) is exactly a weighted sum over the neighbour pairs the full
model would see; the squared wedges and trivectors are weighted sums over pairs and triples.
The cost is O(E·A) instead of O(N·k^2), and every invariant is a polynomial of the positions
times smooth radial functions, so forces have no cone (no |·| of a vector that can vanish).

Parity (``parity``): ``"square"`` (default) squares the trivectors, ``"drop"`` leaves them out;
both give an E(3)-invariant energy. ``"signed"`` keeps their sign: SE(3)-invariant, and it
tells mirror images apart (chiral energies).

Attention. Per head, tuple (i, j) has a value v_ij and a score s_ij from MLPs on the embedded
invariants and the species/hidden features of i and j. The weights

    w_ij = f(r_ij) exp(s_ij) / (exp(s_ii) + Σ_k f(r_ik) exp(s_ik))

carry the envelope in the numerator and denominator, so a neighbour crossing the cutoff
leaves the weights continuous with continuous derivatives; the self tuple keeps the
denominator positive, so an atom whose last neighbour leaves (or an isolated atom) is smooth
and finite. Layers add the attended value to the atom features (residual); the energy is an
MLP of the final features.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ops import scatter_sum
from .radial import RadialRange
from .registry import register_backbone

PARITY_MODES = ("square", "drop", "signed")


@dataclass
class GAAttentionConfig:
    """Hyper-parameters of the geometric-algebra attention backbone.

    Attributes:
        hidden: atom feature channels C (divisible by ``heads``).
        layers: attention layers (each with a residual update).
        heads: attention heads; each attends over the tuples with its own softmax.
        references: reference vectors A per atom and layer.
        basis_size: Bessel functions of the bond length.
        parity: ``"square"``, ``"drop"`` (E(3)-invariant) or ``"signed"`` (SE(3) only).
    """

    hidden: int = 64
    layers: int = 3
    heads: int = 4
    references: int = 4
    basis_size: int = 8
    parity: str = "square"


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))


def _segment_max(src: Tensor, index: Tensor, init: Tensor) -> Tensor:
    """max over rows of ``src`` [E, H] grouped by ``index`` [E], and ``init`` [N, H] -> [N, H]."""
    out = init.clone()
    if src.numel():
        out = out.scatter_reduce(0, index[:, None].expand_as(src), src, reduce="amax", include_self=True)
    return out


class _GALayer(nn.Module):
    def __init__(self, cfg: GAAttentionConfig):
        super().__init__()
        c, a, n = cfg.hidden, cfg.references, cfg.basis_size
        self.heads, self.refs, self.parity = cfg.heads, a, cfg.parity
        # references: weights g^a from the bond's radial basis times the sender's features
        self.ref_radial = nn.Linear(n, a)
        self.ref_feat = nn.Linear(c, a)
        n_tri = 0 if cfg.parity == "drop" else 2 * a
        self.edge_embed = _mlp(n + 4 * a + n_tri, c, c)
        self.sender = nn.Linear(c, c)
        self.receiver = nn.Linear(c, c)
        self.value = _mlp(c, c, c)
        self.self_value = _mlp(c + a * (a + 1) // 2, c, c)
        self.score = nn.Linear(c, cfg.heads)
        self.norm = nn.LayerNorm(c)
        self.update = _mlp(c, c, c)
        iu = torch.triu_indices(a, a)
        self.register_buffer("triu", iu, persistent=False)

    def references(self, h: Tensor, u: Tensor, rbf: Tensor, env: Tensor, edge_index: Tensor,
                   norm: float) -> Tensor:
        """Reference vectors R [N, A, 3] (dimensionless: bonds in units of the cutoff)."""
        g = self.ref_radial(rbf) * self.ref_feat(h)[edge_index[0]] * env[:, None]  # [E, A]
        return scatter_sum(g[:, :, None] * u[:, None, :], edge_index[1], h.shape[0]) / norm

    def forward(self, h: Tensor, u: Tensor, rbf: Tensor, env: Tensor, edge_index: Tensor, norm: float) -> Tensor:
        """h [N, C], u [E, 3] bonds / cutoff, rbf [E, n], env [E] -> updated h [N, C]."""
        n_nodes, c = h.shape
        snd, rcv = edge_index[0], edge_index[1]
        ref = self.references(h, u, rbf, env, edge_index, norm)  # [N, A, 3]
        ri, rj = ref[rcv], ref[snd]  # [E, A, 3]
        ue = u[:, None, :].expand_as(ri)
        feats = [
            rbf,
            (ue * ri).sum(-1),  # scalar parts of u R_i, u R_j
            (ue * rj).sum(-1),
            torch.linalg.cross(ue, ri).pow(2).sum(-1),  # squared bivector norms (polynomial: no cone)
            torch.linalg.cross(ue, rj).pow(2).sum(-1),
        ]
        if self.parity != "drop":
            tri = torch.cat(
                [(ue * torch.linalg.cross(ri, rj)).sum(-1),
                 (ue * torch.linalg.cross(ri, ri.roll(1, dims=1))).sum(-1)], dim=-1)
            feats.append(tri * tri if self.parity == "square" else tri)
        x = self.edge_embed(torch.cat(feats, dim=-1))  # [E, C]
        v_edge = self.value(x * self.sender(h)[snd] + self.receiver(h)[rcv])  # [E, C]
        gram = torch.einsum("nad,nbd->nab", ref, ref)[:, self.triu[0], self.triu[1]]
        v_self = self.self_value(torch.cat([h, gram], dim=-1))  # [N, C]
        s_edge, s_self = self.score(v_edge), self.score(v_self)  # [E, H], [N, H]
        # softmax is unchanged by a per-atom shift; edges outside the cutoff (Verlet skin) must not
        # set it, or their large scores could underflow every weight that counts
        masked = torch.where(env[:, None] > 0, s_edge, torch.full_like(s_edge, -torch.inf))
        shift = _segment_max(masked.detach(), rcv, s_self.detach())  # [N, H]
        # the same mask keeps exp() of an out-of-cutoff score from overflowing to inf * 0 = nan
        logit = torch.where(env[:, None] > 0, s_edge - shift[rcv], torch.full_like(s_edge, -torch.inf))
        w_edge = env[:, None] * torch.exp(logit)
        w_self = torch.exp(s_self - shift)
        denom = w_self + scatter_sum(w_edge, rcv, n_nodes)  # > 0: the self tuple always counts
        hd = self.heads
        num = (w_self[:, :, None] * v_self.view(n_nodes, hd, -1)
               + scatter_sum(w_edge[:, :, None] * v_edge.view(-1, hd, c // hd), rcv, n_nodes))
        out = (num / denom[:, :, None]).reshape(n_nodes, c)
        return h + self.update(self.norm(out))


@register_backbone("ga_attention", GAAttentionConfig)
class GAAttention(nn.Module):
    """Geometric-algebra attention backbone: per-atom energies [N] from species and bond vectors."""

    supports_periodic = True

    def __init__(self, config: GAAttentionConfig, num_species: int, radial_range: RadialRange,
                 avg_num_neighbors: float):
        super().__init__()
        if config.parity not in PARITY_MODES:
            raise ValueError(f"ga_attention: parity must be one of {PARITY_MODES}, got {config.parity!r}")
        if config.hidden % config.heads:
            raise ValueError(f"ga_attention: hidden ({config.hidden}) must be divisible by heads ({config.heads})")
        if min(config.hidden, config.layers, config.heads, config.references, config.basis_size) < 1:
            raise ValueError(f"ga_attention: sizes must be positive, got {config}")
        self.config = config
        self.radial_range = radial_range
        self.avg_num_neighbors = float(avg_num_neighbors)
        c = config.hidden
        self.embed = nn.Embedding(num_species, c)
        self.basis = radial_range.bessel(config.basis_size)
        self.layers = nn.ModuleList(_GALayer(config) for _ in range(config.layers))
        self.readout = _mlp(c, c, 1)

    def forward(self, species: Tensor, positions: Tensor, edge_index: Tensor, edge_vec: Tensor, batch: Tensor,
                num_graphs: int) -> Tensor:
        """Per-atom energies [N] (before scale/shift). edge_vec [E, 3] in Å."""
        r = torch.sqrt((edge_vec * edge_vec).sum(-1))
        env = self.radial_range.envelope(r)
        rbf = self.basis(r) * env[:, None]
        u = self.radial_range.reduced(edge_vec)
        h = self.embed(species)
        for layer in self.layers:
            h = layer(h, u, rbf, env, edge_index, self.avg_num_neighbors)
        return self.readout(h).squeeze(-1)
