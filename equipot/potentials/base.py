"""Potential: AtomicGraph -> energy per structure; forces and stress by autograd. A property model
(``config.target`` not ``energy``) gives its property instead, through the readout the config names
(:mod:`equipot.potentials.readouts`), and no forces.

The per-atom energy is ``E_i = atomic_energies[z_i] + energy_correction[z_i] + shift
+ scale * (e_i - e_iso(z_i))`` where ``e_i`` is the backbone's output and ``e_iso(z)`` what the
backbone gives for an atom of element ``z`` with no neighbour. So an isolated atom has exactly its
reference energy ``atomic_energies[z] + energy_correction[z] + shift`` and zero force, for every
backbone.

Why ``energy_correction`` (a trainable per-element parameter, zero after ``set_reference``):
subtracting ``e_iso`` removes every per-element constant the backbone could learn, so without it
a constant energy offset could only be learned through weights that also shape the forces, which
the force-dominated loss moves slowly and at random. The correction gets gradient from the energy loss alone;
the trainer also re-fits it in closed form before every validation
(:mod:`equipot.training.energy_fit`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..graph import AtomicGraph, GraphBuilder
from ..ops import scatter_sum
from . import readouts
from .config import PotentialConfig, UnknownOption
from .radial import RadialRange
from .registry import check_option_ranges, get_backbone


class Potential(nn.Module):
    """An interatomic potential: a registered backbone plus what every backbone shares.

    A new Potential is in eval mode: evaluation is what users do most, and backbones that
    randomise in training mode (rotated orientation grids, sampled lifts) must give one
    deterministic energy surface unless a trainer asks for ``.train()``.
    """

    def __init__(self, config: PotentialConfig):
        super().__init__()
        missing = config.unresolved()
        if missing:
            raise ValueError(f"the model config leaves {', '.join(missing)} to the training data; give values "
                             f"(or build it from data with equipot.training.model_from_data)")
        self.config = config
        cls, config_cls = get_backbone(config.backbone)
        try:
            backbone_config = config_cls(**config.backbone_options)
        except TypeError as exc:
            raise ValueError(f"bad options for backbone {config.backbone!r}: {exc}") from None
        check_option_ranges(backbone_config)
        self.backbone = cls(backbone_config, len(config.elements), RadialRange(config.cutoff),
                            config.avg_num_neighbors)
        # Built after the backbone, so a model without it draws the same initial weights as before.
        add_vectors = getattr(self.backbone, "add_vector_head", None)
        self.vector_outputs = bool(config.target_readout == "dipole" and add_vectors is not None and add_vectors())
        z_to_index = torch.full((119,), -1, dtype=torch.long)
        z_to_index[torch.tensor(config.elements)] = torch.arange(len(config.elements))
        self.register_buffer("z_to_index", z_to_index, persistent=False)
        self.energy_correction = nn.Parameter(torch.zeros(len(config.elements)))
        self.eval()

    @property
    def cutoff(self) -> float:
        return self.config.cutoff

    def graph_builder(self) -> GraphBuilder:
        """How this model's graphs are built (see :class:`~equipot.graph.GraphBuilder`)."""
        return self.config.graph_builder()

    def species_index(self, numbers: Tensor) -> Tensor:
        """Map atomic numbers [N] to species indices [N]; ValueError names the first unknown atom."""
        numbers = numbers.long()
        bad = (numbers < 1) | (numbers > 118)
        idx = self.z_to_index[numbers.clamp(0, 118)]
        bad = bad | (idx < 0)
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"atom {k} has atomic number {int(numbers[k])}, which this model was not built for "
                f"(it knows {self.config.elements})"
            )
        return idx

    def set_reference(
        self, atomic_energies: Sequence[float] | None = None, scale: float | None = None, shift: float | None = None
    ) -> None:
        """Set per-element reference energies (eV, in ``config.elements`` order), scale and shift (eV).

        New atomic energies also reset the learned ``energy_correction`` to zero.
        """
        if atomic_energies is not None:
            if len(atomic_energies) != len(self.config.elements):
                raise ValueError("need one atomic energy per element")
            self.config.atomic_energies = [float(e) for e in atomic_energies]
            with torch.no_grad():
                self.energy_correction.zero_()
        if scale is not None:
            self.config.scale = float(scale)
        if shift is not None:
            self.config.shift = float(shift)

    def fit_atomic_energies(self, numbers_per_frame: Sequence[np.ndarray], energies: Sequence[float]) -> np.ndarray:
        """Least-squares per-element reference energies (eV) from frames' atomic numbers and energies.

        Solves min ||C e0 - E||, C[f, s] = count of element s in frame f, sets them on the
        model and returns them. Elements absent from the frames get 0.
        """
        counts = element_counts(numbers_per_frame, self.config.elements)
        e0, *_ = np.linalg.lstsq(counts, np.asarray(energies, dtype=np.float64), rcond=None)
        self.set_reference(atomic_energies=e0.tolist())
        return e0

    def reference_energies(self, device: torch.device | str | None = None) -> Tensor:
        """Energy of an isolated atom of each element, atomic_energies + energy_correction + shift, [S] eV.

        Kept in float64 whatever the model's dtype: molecular energies are ~1e4 eV, where
        float32 would round away meV (the correction is small, so its own dtype does not matter).
        Differentiable with respect to ``energy_correction``.
        """
        e0 = self.config.reference_list()
        correction = self.energy_correction.to(device=device, dtype=torch.float64)
        return torch.tensor(e0, dtype=torch.float64, device=device) + self.config.shift + correction

    def _isolated_energies(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """Backbone output for one atom of each element with no neighbour, [S]."""
        none = torch.zeros(0, dtype=torch.long, device=device)
        return self._with_lone_atoms(none, torch.zeros(0, 3, dtype=dtype, device=device),
                                     torch.zeros(2, 0, dtype=torch.long, device=device),
                                     torch.zeros(0, 3, dtype=dtype, device=device), none, 0)[1]

    def _with_lone_atoms(self, species: Tensor, positions: Tensor, edge_index: Tensor, edge_vec: Tensor,
                         batch: Tensor, num_graphs: int) -> tuple[Tensor, Tensor]:
        """(backbone output of the batch [N] or [N, 4], scalar output of a lone atom of each element [S])
        from one backbone call: the lone atoms ride along as S more one-atom structures without edges
        (a call of their own would repeat the whole network's dispatch for S atoms)."""
        lone = torch.arange(len(self.config.elements), device=species.device)
        raw = self.backbone(torch.cat([species, lone]), torch.cat([positions, positions.new_zeros(len(lone), 3)]),
                            edge_index, edge_vec, torch.cat([batch, num_graphs + lone]), num_graphs + len(lone))
        return raw[: len(species)], self._scalar(raw[len(species):])

    def _scalar(self, out: Tensor) -> Tensor:
        """The per-atom scalar [N] of a backbone's output ([N], or [N, 4] with a vector head)."""
        return out[:, 0] if self.vector_outputs else out

    def forward(
        self,
        graph: AtomicGraph,
        compute_forces: bool | None = None,
        compute_stress: bool = False,
        create_graph: bool = False,
    ) -> dict[str, Tensor]:
        """Energies, and by autograd forces and stress, of a batch; or a property model's property.

        ``compute_forces`` None (default): forces for an energy model, none for a property model.

        An energy model returns ``energy`` [B] eV and ``node_energy`` [N] eV (both float64), and
        when asked ``forces`` [N, 3] eV/Å (= -dE/dx) and ``stress`` [B, 3, 3] eV/Å^3
        (= (1/V) dE/dε, the ASE sign convention: positive under tension).
        ``create_graph=True`` keeps the graph of the derivatives (training on forces).
        A property model returns ``property`` [B] (float64, in ``config.target_unit``; see
        :meth:`predict_property`) and refuses forces and stress. Both return ``node_output`` [N],
        the backbone's scalar output (a constant one means the network has died).
        """
        if not self.config.is_potential:
            if compute_forces or compute_stress:
                raise ValueError(f"this model predicts the property {self.config.target!r} "
                                 f"({self.config.target_unit}), not an energy: it has no forces or stress")
            return self.predict_property(graph)
        compute_forces = True if compute_forces is None else compute_forces
        species = self.species_index(graph.numbers)
        positions, cell = graph.positions, graph.cell
        need_grad = compute_forces or compute_stress
        inputs: list[Tensor] = []
        if need_grad:
            if not positions.requires_grad:
                positions = positions.detach().requires_grad_(True)
            inputs.append(positions)
        if compute_stress:
            volume = torch.linalg.det(cell).abs()
            if bool((volume < 1e-9).any()):
                raise ValueError("stress needs a periodic cell with non-zero volume for every structure")
            strain = torch.zeros_like(cell, requires_grad=True)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            positions = positions + torch.einsum("ni,nij->nj", positions, sym[graph.batch])
            cell = cell + torch.bmm(cell, sym)
            inputs.append(strain)
        edge_vec = graph.edge_vectors(positions, cell)
        raw, isolated = self._with_lone_atoms(species, positions, graph.edge_index, edge_vec, graph.batch,
                                              graph.num_graphs)
        out = self._scalar(raw)
        node_energy = self._extensive_nodes(out, species, isolated)
        energy = scatter_sum(node_energy, graph.batch, graph.num_graphs)
        result = {"energy": energy, "node_energy": node_energy, "node_output": out.detach()}
        if need_grad:
            grads = torch.autograd.grad(
                energy.sum(), inputs, create_graph=create_graph, allow_unused=True
            )
            grads = [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, inputs)]
            if compute_forces:
                result["forces"] = -grads[0]
            if compute_stress:
                result["stress"] = grads[-1] / volume.view(-1, 1, 1)
        return result

    def _extensive_nodes(self, out: Tensor, species: Tensor, isolated: Tensor) -> Tensor:
        """Per-atom terms [N] float64 of the extensive readout: references + shift + scale * (o - o_iso)
        (:func:`atom_energies`, the one expression that the exported program also uses)."""
        return atom_energies(out, species, isolated, self.reference_energies(out.device), self.config.scale)

    def predict_property(self, graph: AtomicGraph) -> dict[str, Tensor]:
        """A property model's prediction through its readout (:mod:`equipot.potentials.readouts`).

        Returns ``property`` [B] float64 in ``config.target_unit`` and ``node_output`` [N]; the
        ``extensive``, ``intensive`` and ``spatial_extent`` readouts also ``node_property`` [N]
        (per-atom terms whose sum, or mean for ``intensive``, is the property), ``dipole`` also
        ``dipole`` [B, 3] (the vector, in the target's unit) and ``charges`` [N] (e).
        """
        cfg = self.config
        species = self.species_index(graph.numbers)
        raw, isolated = self._with_lone_atoms(species, graph.positions, graph.edge_index, graph.edge_vectors(),
                                              graph.batch, graph.num_graphs)
        out = self._scalar(raw)
        result = {"node_output": out.detach()}
        b, n = graph.batch, graph.num_graphs
        kind = cfg.target_readout
        if kind == "extensive":
            node = self._extensive_nodes(out, species, isolated)
            value = scatter_sum(node, b, n)
        elif kind == "intensive":
            node = cfg.shift + cfg.scale * out.double()
            value = readouts.intensive(out.double(), b, n, cfg.scale, cfg.shift)
        elif kind == "dipole":
            vectors = raw[:, 1:4].double() if self.vector_outputs else None
            value, result["dipole"], result["charges"] = readouts.dipole(out.double(), vectors,
                                                                         graph.positions.double(), b, n, cfg.scale)
            node = None
        else:
            refs = (torch.tensor(cfg.reference_list(), dtype=torch.float64, device=out.device)
                    + self.energy_correction.to(device=out.device, dtype=torch.float64))[species]
            value, node = readouts.spatial_extent(out.double(), refs, graph.numbers, graph.positions, b, n,
                                                  cfg.scale, cfg.shift)
        result["property"] = value
        if node is not None:
            result["node_property"] = node
        return result


def predicted(out: dict[str, Tensor]) -> Tensor:
    """The per-structure prediction [B] of a model's output: ``property`` for a property model,
    else ``energy`` (also what a model file of format < 3 trained on a property gives)."""
    return out["property"] if "property" in out else out["energy"]


def atom_energies(out: Tensor, species: Tensor, isolated: Tensor, reference: Tensor, scale: float) -> Tensor:
    """Per-atom energies [N] eV (float64) from the backbone's output ``out`` [N]: the one energy
    expression, ``reference[s] + scale * (out - isolated[s])`` for an atom of species ``s``
    (``isolated`` [S]: the backbone's output for a lone atom; ``reference`` [S] eV float64:
    :meth:`Potential.reference_energies`). Shared by :meth:`Potential.forward`, the exported
    program and the LAMMPS interface, so that all of them give the same numbers."""
    return reference[species] + (scale * (out - isolated[species])).double()


def element_counts(numbers_per_frame: Sequence[np.ndarray], elements: Sequence[int]) -> np.ndarray:
    """[F, S] count of each element (in ``elements`` order) in each frame's atomic numbers."""
    counts = np.zeros((len(numbers_per_frame), len(elements)))
    index = {int(z): s for s, z in enumerate(elements)}
    for f, numbers in enumerate(numbers_per_frame):
        for z, c in zip(*np.unique(np.asarray(numbers), return_counts=True)):
            if int(z) not in index:
                raise ValueError(f"frame {f} contains element {int(z)} not in the model's {list(elements)}")
            counts[f, index[int(z)]] = c
    return counts


def build_potential(
    backbone: str = "ponita",
    elements: tuple[int, ...] | list[int] = (1, 6, 7, 8),
    cutoff: float = 5.0,
    **options: Any,
) -> Potential:
    """Build a :class:`Potential` with the named backbone.

    ``options`` are fields of :class:`PotentialConfig` (``atomic_energies`` in eV per element,
    ``scale`` eV, ``shift`` eV, ``avg_num_neighbors``, ``min_pair_distance`` Å; by default zero
    reference energies, scale 1 eV and 16 neighbours; a property model with ``target``,
    ``target_unit`` and ``target_readout``, extensive by default) or options of the backbone (e.g. ``hidden=64,
    layers=3, grid_size=12`` for ``ponita``), in the flat form of a config file's ``model`` section.
    """
    values = {"backbone": backbone, "elements": list(elements), "cutoff": cutoff, "atomic_energies": None,
              "scale": 1.0, "avg_num_neighbors": 16.0, "target_readout": "extensive", **options}
    try:
        return Potential(PotentialConfig.from_flat(values))
    except UnknownOption as exc:
        raise ValueError(f"bad options for backbone {backbone!r}: {exc}") from None
