"""R3×S2 message passing (PΘNITA, Bekkers et al., ICLR 2024) as an energy backbone.

Each atom carries features h [O, C] on a grid of O orientations o. A layer is a separable
convolution over position-orientation space followed by a ConvNeXt block:

1. spatial: m_i[o] = sum_j (phi_ij[o] @ W) * h_j[o] (the hot path, :func:`equipot.ops.spatial_message`),
   where phi_ij[o] [K] embeds the pair invariants |r| and o·r̂ (r = x_j - x_i);
2. sphere: m'_i[p] = (1/O) sum_o K_c(o·p) m_i[o] with K_c(x) = sum_l w_lc P_l(x) per channel
   (a band-limited Funk-Hecke filter of degree L);
3. block: h <- h + γ ⊙ MLP(norm(h + m')), channel mixing per orientation.

The energy is read out per orientation and averaged over the grid, so the model is
rotation-invariant up to the grid's quadrature error: every choice below is about keeping the
features smooth on the sphere, so that a small grid already averages them accurately.

Edge kernels (``kernel``):

- ``radial`` (default): phi_ij[o] = P_l(o·r̂) rho_lm(|r|): a radial MLP gives M functions of the
  distance for each Legendre degree l <= L, so the kernel is exactly band-limited (degree L) in
  the orientation, while any nonlinearity acts on the distance only. The radial MLP's trunk is
  shared by all layers, each layer has its own last linear map (PΘNITA's shared basis with a
  per-layer projection). Its input is scaled by ``edge_gain * sqrt(fan_in)`` so that the trunk
  starts with pre-activations of order one and resolves bond lengths (with the plain init on
  Gaussians of height 1 the kernel was a nearly linear, smooth function of |r|).
- ``mlp`` (equipot 0.1): an MLP over Gaussians(|r|) x Legendre(o·r̂) with the same input gain,
  plus a per-layer Linear+SiLU on [E, O, K]; its SiLU acts on functions of o·r̂, so the kernel
  is not band-limited (its angular power above degree 3 is measured in a test and in
  ``benchmarks/RESULTS.md``).

The block (defaults: ``lowpass=2``, ``norm=true``, ``readout=every``, ``widening=2``; the 0.1
block was ``lowpass=null, norm=false, readout=mlp, widening=4``):

- ``lowpass`` (a degree, or null): every layer's update is projected onto spherical harmonics of
  degree <= lowpass on the grid (a sphere convolution with the reproducing kernel
  (1/O) sum_l (2l+1) P_l(o·p)), so the features stay band-limited up to the aliasing of the MLP.
- ``norm=true``: LayerNorm over channels of h + m' before the MLP (PΘNITA normalises the
  convolution output, which contains a self-interaction; normalising h + m' instead keeps the
  gain bounded when a neighbour fades out at the cutoff, where m' -> 0).
- ``readout``: ``every`` (a linear head after every layer, averaged, as in PΘNITA) or ``mlp``
  (an MLP on the last layer's features).

Grids (``grid``, ``grid_size``; see :mod:`equipot.potentials.sphere`): ``icosahedron`` (12),
``dodecahedron`` (20), ``geodesic`` (10 nu^2 + 2: 42, 92, ...), ``repulsion`` (any size),
``fibonacci``, or ``auto`` (the best of these for the size). Training turns the grid by a fresh
random rotation every call (``rotate_grid_in_training``), so the loss sees every placement of the
grid relative to the molecule and the network learns to suppress what the grid cannot integrate.
The icosahedron integrates every degree except 6, 10, 12, 15, 16, ... exactly, so a network
trained on it keeps little at those degrees, and keeps whatever it likes at the others (7-9, 11,
13, ...). Only an icosahedral grid integrates all of those exactly; the 42-point geodesic grid
also integrates degrees 6 and 10 to 4 % and 15 %: that is the default inference grid
(``eval_grid``, saved with the model), with ``finetune_on_eval_grid`` training on it at the end
so that the network is adapted to the grid it is used on. ``r3_only=True`` uses distances only
(O = 1): exactly invariant.

A vector per atom (:meth:`Ponita.add_vector_head`, which the ``dipole`` readout asks for): a scalar
per orientation f(o), read out like the energy, times the orientation, averaged over the grid:
v = (3/O) sum_o f(o) o (the factor 3 makes it the degree-1 part of f). It turns with the molecule
as exactly as the grid averages the features (the scalar's invariance, one degree higher).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..ops.message import spatial_message, spherical_kernel, spherical_message
from .radial import RadialRange
from .registry import register_backbone
from .sphere import GRIDS, legendre, legendre_factors, orientation_grid

KERNELS = ("radial", "mlp")
READOUTS = ("mlp", "every")
# The defaults of equipot 0.1 (model files store only the options that were given).
LEGACY_DEFAULTS: dict[str, Any] = dict(
    hidden=64, layers=3, grid="fibonacci", grid_size=12, eval_grid=None, eval_grid_size=None, basis_size=16,
    radial_basis="gaussian", angular_degree=3, kernel="mlp", kernel_dim=16, widening=4, lowpass=None, norm=False,
    readout="mlp", finetune_on_eval_grid=0.0, edge_gain=5.0, neighbor_norm_power=0.0,
)


@dataclass
class PonitaConfig:
    """Hyper-parameters of the R3×S2 backbone.

    Attributes:
        hidden: channels C per orientation.
        layers: number of convolution layers.
        grid: orientation grid of training (and of inference when ``eval_grid`` resolves to it):
            ``icosahedron`` (12 points), ``dodecahedron`` (20), ``geodesic`` (10 nu^2 + 2 points),
            ``repulsion``, ``fibonacci``, or ``auto``: the icosahedron, dodecahedron or geodesic
            grid where the size has one, repulsion otherwise.
        grid_size: points of the grid (12 / 20 for the Platonic grids, 42, 92, ... for the
            geodesic one); ignored when r3_only.
        eval_grid, eval_grid_size: the grid of eval mode (inference). Both null: the training
            grid; ``auto`` without a size: the 42-point geodesic grid when training on the
            12-point icosahedron (it integrates everything the icosahedron does, and degrees 6
            and 10 to 4 % and 15 %; see the README's symmetry section), else the training grid.
        basis_size: radial functions of the distance |r| (the kernel's input).
        radial_basis: "gaussian" (evenly spaced Gaussians on [0, cutoff]) or "bessel"
            (sin(k pi r / c) / r, as in NequIP/MACE).
        angular_degree: highest Legendre degree L in o·r̂ (edges) and o·p (sphere kernel).
        kernel: "radial" (band-limited: radial functions times Legendre polynomials) or "mlp".
        kernel_dim: width K of the edge embedding phi (the fused kernel's inner size); with the
            radial kernel ceil(K / (L + 1)) radial functions per degree.
        radial_hidden: width of the radial MLP (radial kernel).
        widening: ConvNeXt MLP expansion factor.
        lowpass: band limit (degree) imposed on each layer's update; null = none.
        norm: LayerNorm over channels before each block's MLP.
        readout: "mlp" (last layer) or "every" (linear heads on every layer, averaged).
        r3_only: use only the distance |r| (exactly invariant R3 variant).
        rotate_grid_in_training: in training mode, turn the grid by a fresh random rotation at
            every call (one per batch); eval mode uses the fixed grid, so MD sees one surface.
        finetune_on_eval_grid: train on the (rotated) eval grid for this last fraction of the
            trainer's budget (epochs, max_steps or max_time), so that the network ends adapted to
            the grid it is evaluated on; 0 = always the training grid.
        edge_gain: the first layer of the edge network sees its input times
            edge_gain * sqrt(fan_in): sharp radial features and a kernel of order one at init.
        neighbor_norm_power: spatial messages are divided by avg_num_neighbors ** power
            (1: mean over neighbours, 0: plain sum).
    """

    ZERO_ALLOWED: ClassVar[tuple[str, ...]] = ("angular_degree", "lowpass")

    hidden: int = 64
    layers: int = 3
    grid: str = "auto"
    grid_size: int = 12
    eval_grid: str | None = "auto"
    eval_grid_size: int | None = None
    basis_size: int = 16
    radial_basis: str = "gaussian"
    angular_degree: int = 3
    kernel: str = "radial"
    kernel_dim: int = 16
    radial_hidden: int = 64
    widening: int = 2
    lowpass: int | None = 2
    norm: bool = True
    readout: str = "every"
    r3_only: bool = False
    rotate_grid_in_training: bool = True
    finetune_on_eval_grid: float = 0.0
    edge_gain: float = 5.0
    neighbor_norm_power: float = 0.0

    def __post_init__(self) -> None:
        for name, value, choices in (("grid", self.grid, GRIDS), ("kernel", self.kernel, KERNELS),
                                     ("readout", self.readout, READOUTS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if self.eval_grid is not None and self.eval_grid not in GRIDS:
            raise ValueError(f"eval_grid must be one of {', '.join(GRIDS)} or null, got {self.eval_grid!r}")
        if self.lowpass is not None and self.lowpass < 0:
            raise ValueError(f"lowpass must be a degree >= 0 or null, got {self.lowpass}")

    @staticmethod
    def upgrade_options(options: dict[str, Any], version: int) -> dict[str, Any]:
        """Options of a model file of format ``version``, completed with the defaults of its time:
        equipot 0.1 (format 1); before format 4, ``auto`` grids meant the 32-point repulsion grid
        for inference after the icosahedron and repulsion at sizes other than 12 and 20."""
        if version < 2:
            return {**LEGACY_DEFAULTS, **options}
        options = dict(options)
        if version < 4:
            grid, size = options.get("grid", "auto"), options.get("grid_size", 12)
            if grid == "auto" and size not in (12, 20):
                options["grid"] = "repulsion"
            if options.get("eval_grid", "auto") == "auto":
                if options.get("eval_grid_size") is None:
                    on_icosahedron = grid in ("auto", "icosahedron") and size == 12
                    options.update(eval_grid="repulsion" if on_icosahedron else None,
                                   eval_grid_size=32 if on_icosahedron else None)
                elif options["eval_grid_size"] not in (12, 20):
                    options["eval_grid"] = "repulsion"
        return options


def _sphere_grids(cfg: PonitaConfig) -> tuple[Tensor, Tensor]:
    """(training grid, eval grid), both [O, 3] float64 (see ``PonitaConfig.eval_grid``)."""
    if cfg.r3_only:
        one = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
        return one, one
    train = orientation_grid(cfg.grid, cfg.grid_size)
    name, size = cfg.eval_grid, cfg.eval_grid_size
    if name == "auto" and size is None:
        on_icosahedron = cfg.grid in ("auto", "icosahedron") and cfg.grid_size == 12
        name, size = ("geodesic", 42) if on_icosahedron else (None, None)
    if name is None and size is None:
        return train, train
    return train, orientation_grid(name or cfg.grid, size if size is not None else cfg.grid_size)


class SphereFactors:
    """The grid's Legendre matrices in factored form (:func:`~equipot.potentials.sphere.legendre_factors`):
    basis [O, K] with columns sorted by degree, ``degree`` [K] the degree of each column. Made once per
    grid (see :meth:`Ponita.current_factors`), so what is derived from it is kept, not redone per call."""

    def __init__(self, basis: Tensor, degree: Tensor):
        self.basis, self.degree = basis, degree
        self._counts = torch.bincount(degree.cpu()).tolist()  # columns per degree
        self._lowpass: dict[int, Tensor] = {}

    def columns(self, max_degree: int) -> int:
        """How many columns have degree <= max_degree (they come first)."""
        return sum(self._counts[: max_degree + 1])

    def lowpass_basis(self, max_degree: int) -> Tensor:
        """Q [O, K'] with Q Q^T = (1/O) sum_{l <= max_degree} (2l + 1) P_l(o·p), the projection of grid
        functions onto spherical harmonics of degree <= max_degree (a true projector when the grid
        integrates degree 2 max_degree exactly)."""
        if max_degree not in self._lowpass:
            k = self.columns(max_degree)
            scale = ((2 * self.degree[:k] + 1).to(self.basis.dtype) / self.basis.shape[0]).sqrt()
            self._lowpass[max_degree] = self.basis[:, :k] * scale
        return self._lowpass[max_degree]


def _over_orientations(x: Tensor, basis: Tensor, weight: Tensor | None = None) -> Tensor:
    """basis @ (weight * (basis^T @ x)) along the orientation axis of x [N, O, C]: basis [O, K], weight
    [K, C] or None -> [N, O, C]. Two [O, K] products in place of one [O, O] product."""
    # Batched over atoms in x's own layout: a transpose to [O, N C] and back cost more than the products
    # (3x at 1 536 atoms).
    a = torch.matmul(basis.transpose(0, 1), x)  # [N, K, C]
    if weight is not None:
        a = a * weight
    return torch.matmul(basis, a)


def lowpass_matrix(factors: SphereFactors, degree: int) -> Tensor:
    """[O, O] projection of grid functions onto spherical harmonics of degree <= ``degree``,
    (1/O) sum_l (2l + 1) P_l(o·p) (for analysis: the layers apply it in factored form)."""
    q = factors.lowpass_basis(degree)
    return q @ q.T


class _SphereConv(nn.Module):
    """Per-channel convolution over the orientation grid, kernel sum_l w_lc P_l(o·p) (Funk-Hecke:
    a band-limited filter of degree L)."""

    def __init__(self, degree: int, channels: int):
        super().__init__()
        self.degree = degree
        self.weight = nn.Parameter(torch.randn(degree + 1, channels) / (degree + 1) ** 0.5)

    def forward(self, x: Tensor, factors: SphereFactors) -> Tensor:
        """x [N, O, C] -> [N, O, C]: (1/O) sum_o sum_l w_lc P_l(o·p) x[o, c], with P_l(o·p) = B_l B_l^T
        (``factors``): the grid functions go to (L + 1)^2 coefficients and back, 2 (L+1)^2 O multiply-adds
        per atom and channel instead of (L + 1) O^2."""
        k = factors.columns(self.degree)
        basis = factors.basis[:, :k]
        return _over_orientations(x, basis, self.weight[factors.degree[:k]]) / x.shape[1]


class _Layer(nn.Module):
    def __init__(self, cfg: PonitaConfig, use_sphere: bool):
        super().__init__()
        c, k = cfg.hidden, cfg.kernel_dim
        self.kernel = cfg.kernel
        self.degrees = 1 if cfg.r3_only else cfg.angular_degree + 1  # Legendre degrees 0..L of the kernel
        if cfg.kernel == "mlp":
            self.edge = nn.Sequential(nn.Linear(k, k), nn.SiLU())
        else:
            k = self.degrees * -(-k // self.degrees)  # whole radial functions per degree
            self.radial_head = nn.Linear(cfg.radial_hidden, k)
        self.weight = nn.Parameter(torch.randn(k, c) / k**0.5)
        self.sphere = _SphereConv(cfg.angular_degree, c) if use_sphere else None
        self.norm = nn.LayerNorm(c) if cfg.norm else None
        self.mlp = nn.Sequential(nn.Linear(c, cfg.widening * c), nn.SiLU(), nn.Linear(cfg.widening * c, c))
        self.layer_scale = nn.Parameter(torch.ones(c))

    def radial_functions(self, edge: tuple[Tensor, ...], envelope: Tensor) -> Tensor:
        """rho_lm(|r|) [E, L+1, M] of this layer's radial kernel (see Ponita.edge_features)."""
        rho = self.radial_head(edge[2]) * envelope[:, None]  # [E, K]
        return rho.view(rho.shape[0], self.degrees, rho.shape[-1] // self.degrees)

    def edge_kernel(self, edge: tuple[Tensor, ...], envelope: Tensor) -> Tensor:
        """phi [E, O, K] of this layer (formed whole: for analysis; the message never stores it)."""
        if self.kernel == "mlp":
            return self.edge(edge[0]) * envelope[:, None, None]
        return spherical_kernel(edge[0], edge[1], self.radial_functions(edge, envelope))

    def forward(self, h: Tensor, edge: tuple[Tensor, ...], envelope: Tensor, edge_index: Tensor,
                factors: SphereFactors | None, lowpass: Tensor | None, norm: float) -> Tensor:
        if self.kernel == "mlp":
            m = spatial_message(self.edge_kernel(edge, envelope), self.weight, h, edge_index, h.shape[0])
        else:  # the kernel is formed block by block from the edge vectors (ops.spherical_message)
            m = spherical_message(edge[0], edge[1], self.radial_functions(edge, envelope), self.weight, h,
                                  edge_index, h.shape[0])
        m = m / norm
        if self.sphere is not None:
            m = self.sphere(m, factors)
        x = h + m
        if self.norm is not None:
            x = self.norm(x)
        update = self.layer_scale * self.mlp(x)
        if lowpass is not None:
            update = _over_orientations(update, lowpass)
        return h + update


@register_backbone("ponita", PonitaConfig)
class Ponita(nn.Module):
    """R3×S2 backbone: per-atom energies [N] from species, edges and edge vectors."""

    def __init__(self, config: PonitaConfig, num_species: int, radial_range: RadialRange,
                 avg_num_neighbors: float):
        super().__init__()
        self.config = config
        self.radial_range = radial_range
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.message_norm = self.avg_num_neighbors ** float(config.neighbor_norm_power)
        c, n = config.hidden, config.basis_size
        train_grid, eval_grid = _sphere_grids(config)
        self.register_buffer("grid", train_grid.to(torch.get_default_dtype()))
        self.register_buffer("eval_grid", eval_grid.to(torch.get_default_dtype()), persistent=False)
        self.embed = nn.Embedding(num_species, c)
        if config.radial_basis == "bessel":
            self.basis = radial_range.bessel(n)
        elif config.radial_basis == "gaussian":
            self.basis = radial_range.gaussian(n)
        else:
            raise ValueError(f"radial_basis must be 'bessel' or 'gaussian', got {config.radial_basis!r}")
        n_angular = 1 if config.r3_only else config.angular_degree + 1
        if config.kernel == "mlp":
            fan_in = n * n_angular
            self.edge_embed = nn.Sequential(nn.Linear(fan_in, config.kernel_dim), nn.SiLU())
        else:
            fan_in = n
            h = config.radial_hidden
            self.radial = nn.Sequential(nn.Linear(n, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU())
        self.edge_input_gain = float(config.edge_gain) * fan_in**0.5
        self.use_sphere = not config.r3_only and len(train_grid) > 1
        self._factor_cache: dict[tuple, SphereFactors] = {}
        self._on_eval_grid = False
        self.layers = nn.ModuleList(_Layer(config, self.use_sphere) for _ in range(config.layers))
        self.message_passing_hops = int(config.layers)  # the embedding is per species: one hop a layer
        if config.readout == "every":
            self.heads = nn.ModuleList(nn.Linear(c, 1) for _ in range(config.layers))
            with torch.no_grad():
                for head in self.heads:
                    head.weight.mul_(0.1)
        else:
            self.readout = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, 1))
            with torch.no_grad():  # start near a flat surface: the messages are large (see edge_gain)
                self.readout[-1].weight.mul_(0.1)
        self.vector_heads: nn.ModuleList | None = None

    def add_vector_head(self) -> bool:
        """Also read out a vector per atom (e·Å for the dipole readout): forward then returns
        [N, 4], the scalar and the vector. False (and nothing added) without orientations (r3_only)."""
        if not self.use_sphere:
            return False
        c, count = self.config.hidden, self.config.layers if self.config.readout == "every" else 1
        self.vector_heads = nn.ModuleList(nn.Linear(c, 1) for _ in range(count))
        with torch.no_grad():
            for head in self.vector_heads:
                head.weight.mul_(0.1)
        return True

    def edge_features(self, edge_vec: Tensor, grid: Tensor) -> tuple[Tensor, ...]:
        """What the layers' kernels are built from: ``mlp``: (phi0 [E, O, K],); ``radial``: (edge
        vectors [E, 3], grid [O, 3], radial trunk [E, H]), the Legendre polynomials of o·r̂ being
        formed inside the message. Before the cutoff envelope; grid [O, 3] (one point for r3_only)."""
        cfg = self.config
        r = torch.sqrt((edge_vec * edge_vec).sum(-1, keepdim=True))  # [E, 1]
        radial = self.basis(r) * self.edge_input_gain  # [E, 1, n]
        if cfg.kernel == "radial":
            return edge_vec, grid, self.radial(radial[:, 0])
        if cfg.r3_only:
            return (self.edge_embed(radial),)
        cos = (edge_vec @ grid.T) / r.clamp(min=1e-9)
        angular = legendre(cos, cfg.angular_degree)  # [E, O, L+1]
        feats = (radial.unsqueeze(-1) * angular.unsqueeze(-2)).flatten(-2)  # [E, O, n (L+1)]
        return (self.edge_embed(feats),)

    def inference_bytes(self, num_nodes: int, num_edges: int, itemsize: int) -> int:
        """Estimated peak memory (bytes) of energy + forces for a graph of that size on the CPU:
        each layer keeps ~8 node-feature tensors [N, O, C] (or their width) for the backward; the
        edges keep their radial functions. Calibrated on water boxes of 10 125 and 24 000 atoms, with
        a margin of ~30 % (benchmarks/RESULTS.md, memory section)."""
        cfg = self.config
        points = max(len(self.grid), len(self.eval_grid))
        nodes = 8 * cfg.layers * num_nodes * points * cfg.hidden
        edges = num_edges * (4 * cfg.radial_hidden + 2 * cfg.layers * cfg.kernel_dim + 16)
        return (nodes + edges) * itemsize

    def set_eval_grid(self, grid: str | None, size: int | None) -> None:
        """Use another orientation grid in eval mode (null = the training grid); weights unchanged."""
        self.config.eval_grid, self.config.eval_grid_size = grid, size
        self.config.__post_init__()
        # through the default dtype, exactly as __init__ builds it (a reloaded model gives the same numbers)
        self.eval_grid = _sphere_grids(self.config)[1].to(torch.get_default_dtype()).to(self.grid)

    def training_progress(self, fraction: float) -> None:
        """Told by the trainer before each step: the fraction of its budget done, in [0, 1]."""
        share = self.config.finetune_on_eval_grid
        self._on_eval_grid = share > 0 and fraction >= 1.0 - share

    def current_factors(self, dtype: torch.dtype, device: torch.device) -> SphereFactors:
        """The :class:`SphereFactors` of this call's grid (see :meth:`current_grid`), computed in float64
        from the grid buffer (the one a model file stores) and cached until that buffer changes. They
        depend only on the cosines between grid points, so the randomly turned training grid has the
        factors of the unturned one."""
        grid = self.eval_grid if not self.training or self._on_eval_grid else self.grid
        key = (grid.data_ptr(), grid._version, tuple(grid.shape), dtype, device)
        if key not in self._factor_cache:
            if len(self._factor_cache) >= 8:  # grids replaced or moved: drop the old entries
                self._factor_cache.clear()
            degree = max(self.config.angular_degree, self.config.lowpass or 0)
            basis, column_degree = legendre_factors(grid.detach(), degree)
            self._factor_cache[key] = SphereFactors(basis.to(device, dtype), column_degree.to(device))
        return self._factor_cache[key]

    def current_grid(self, dtype: torch.dtype) -> Tensor:
        """The orientation grid of this call, [O, 3]: randomly turned in training, fixed in eval."""
        if not self.training:
            return self.eval_grid.to(dtype)
        grid = (self.eval_grid if self._on_eval_grid else self.grid).to(dtype)
        if self.config.rotate_grid_in_training and self.use_sphere:
            q, rr = torch.linalg.qr(torch.randn(3, 3, dtype=grid.dtype, device=grid.device))
            grid = grid @ (q * torch.sign(torch.diagonal(rr))).T
        return grid

    def forward(self, species: Tensor, positions: Tensor, edge_index: Tensor, edge_vec: Tensor, batch: Tensor,
                num_graphs: int) -> Tensor:
        """Per-atom energies [N] (before scale/shift)."""
        cfg = self.config
        grid = self.current_grid(edge_vec.dtype)
        r = torch.sqrt((edge_vec * edge_vec).sum(-1))
        envelope = self.radial_range.envelope(r)
        edge = self.edge_features(edge_vec, grid)
        factors = lowpass = None
        if self.use_sphere:
            factors = self.current_factors(edge_vec.dtype, edge_vec.device)
            if cfg.lowpass is not None:
                lowpass = factors.lowpass_basis(cfg.lowpass)
        h = self.embed(species)[:, None, :].expand(-1, grid.shape[0], -1).contiguous()
        heads, vector_heads = [], []
        for k, layer in enumerate(self.layers):
            h = layer(h, edge, envelope, edge_index, factors, lowpass, self.message_norm)
            if cfg.readout == "every":
                heads.append(self.heads[k](h))
                if self.vector_heads is not None:
                    vector_heads.append(self.vector_heads[k](h))
        out = torch.stack(heads).mean(0) if heads else self.readout(h)
        scalar = out.squeeze(-1).mean(-1)
        if self.vector_heads is None:
            return scalar
        f = torch.stack(vector_heads).mean(0) if vector_heads else self.vector_heads[0](h)  # [N, O, 1]
        vector = (3.0 / grid.shape[0]) * f.squeeze(-1) @ grid  # [N, 3]
        return torch.cat([scalar[:, None], vector], dim=-1)


def set_inference_grid(model: Any, grid: str | None, size: int | None = None) -> None:
    """Make a ponita :class:`~equipot.potentials.Potential` evaluate on another grid (eval mode).

    ``grid``: a grid name (see :mod:`equipot.potentials.sphere`) or None for the training grid;
    ``size``: its number of points (default: the training grid's). Saved with the model.
    """
    if not isinstance(model.backbone, Ponita):
        raise ValueError(f"an inference grid needs the ponita backbone, not {model.config.backbone!r}")
    options = dict(model.config.backbone_options)
    options.update(eval_grid=grid, eval_grid_size=size)
    if grid is None and size is None:
        del options["eval_grid"], options["eval_grid_size"]
    model.backbone.set_eval_grid(grid, size)
    model.config.backbone_options = options
