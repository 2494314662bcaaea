"""EquiCalc: an ASE calculator around a :class:`~equipot.potentials.Potential`."""
from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ..graph import COINCIDENT, AtomicGraph
from ..potentials.base import Potential
from ..potentials.model_file import load_model
from ..verlet import VerletList


class ExtrapolationWarning(UserWarning):
    """Atoms came closer than any pair the model saw in training."""


def check_atoms(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """Raise ValueError for positions that are not finite or a periodic cell without volume."""
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"atom {k} has a non-finite position {positions[k].tolist()}")
    if not np.isfinite(cell).all():
        raise ValueError("the cell has non-finite entries")
    if pbc.any():
        # Past ~1e8 cell lengths, wrapping an atom into the cell rounds its place in the cell away
        # (and at 1e300 the image count overflows int64): the answer would be noise or NaN.
        shortest = min(float(np.linalg.norm(cell[k])) for k in np.flatnonzero(pbc))
        far = np.abs(positions).max(axis=1) > 1e8 * max(shortest, 1e-6)
        if far.any():
            k = int(np.flatnonzero(far)[0])
            raise ValueError(f"atom {k} at {positions[k].tolist()} Å is more than 1e8 cell lengths from the cell "
                             f"along a periodic direction; wrap the positions into the cell (atoms.wrap())")
        if pbc.all():
            volume = abs(np.linalg.det(cell))
            if volume < 1e-6:
                raise ValueError(f"periodic cell has zero volume ({volume:.3g} Å^3)")
        for k in np.flatnonzero(pbc):
            if np.linalg.norm(cell[k]) < 1e-6:
                raise ValueError(f"cell vector {k} is zero along a periodic direction")


class EquiCalc(Calculator):
    """ASE calculator for equipot models.

    Args:
        model: a :class:`Potential` or the path of a model file written by ``save_model``.
            A model object is copied, so the calculator never changes it (dtype, device).
        device: torch device to run on ("cpu", "cuda", ...).
        dtype: torch.float64 (default; for MD and optimisation) or torch.float32 (faster).
        skin: Verlet skin (Å): the neighbour list is built with cutoff + skin and rebuilt
            only when an atom has moved more than skin/2. 0 rebuilds every call.
        neighbors: "matscipy" (CPU, with the skin), "torch" (a cell list on ``device``, rebuilt
            every call: on a GPU this beats copying positions to the host), or "auto"
            (torch on CUDA devices, matscipy otherwise).

    Results: ``energy`` and ``free_energy`` (eV), ``energies`` (eV per atom), ``forces``
    (eV/Å), and for fully periodic cells ``stress`` (eV/Å^3, Voigt order, ASE sign).

    A property model (one trained with ``train.property``, e.g. on QM9's HOMO) is not a potential:
    its calculator gives the property under its own name, ``calc.get_property("homo", atoms)`` in
    the model's ``target_unit`` (and, for a dipole model, ASE's ``dipole`` in e·Å:
    ``atoms.get_dipole_moment()``), and refuses energy, forces and stress with
    ``PropertyNotImplementedError`` naming what the model predicts.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        model: Potential | str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        skin: float = 0.5,
        neighbors: str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(model, (str, os.PathLike)):
            model = load_model(model, map_location="cpu")
        elif isinstance(model, Potential):
            model = copy.deepcopy(model)
        else:
            raise TypeError(f"EquiCalc needs a Potential or a model file path, got {type(model).__name__}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if neighbors == "auto":
            neighbors = "torch" if self.device.type == "cuda" else "matscipy"
        if neighbors not in ("matscipy", "torch"):
            raise ValueError(f"neighbors must be 'auto', 'matscipy' or 'torch', got {neighbors!r}")
        self.neighbor_backend = neighbors
        self.graphs = self.model.graph_builder()
        self.neighbors = VerletList(self.graphs.cutoff, skin)
        self._warned = False
        config = self.model.config
        if not config.is_potential:
            self.implemented_properties = [config.target] + (["dipole"] if config.target_readout == "dipole" else [])

    def get_property(self, name, atoms=None, allow_calculation=True):
        config = self.model.config
        if not config.is_potential and name not in self.implemented_properties:
            raise PropertyNotImplementedError(
                f"this model predicts {config.target!r} ({config.target_unit}), not {name!r}: it is a property model, "
                f"not a potential; use calc.get_property({config.target!r}, atoms)")
        return super().get_property(name, atoms, allow_calculation)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        positions = np.asarray(atoms.positions, dtype=np.float64)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        check_atoms(positions, cell, pbc)
        want_stress = "stress" in properties
        if want_stress and not pbc.all():
            raise PropertyNotImplementedError("stress is only defined for cells periodic in all three directions")
        self.model.species_index(torch.as_tensor(atoms.numbers))  # ValueError naming an unknown element first
        # A potential is translation-invariant: centred positions keep float32 edge vectors exact far from
        # the origin (at 1e6 Å float32 resolves 0.06 Å; forces were off by 0.18 eV/Å). The Verlet list keeps
        # the positions as given (its skin test compares them between calls).
        centred = positions - positions.mean(axis=0) if self.model.config.is_potential else positions
        structure = [(atoms.numbers, centred, cell, pbc)]
        if self.neighbor_backend == "torch":
            graph = self.graphs(structure, self.dtype, self.device, neighbors="torch")
        else:
            # The Verlet list holds pairs out to cutoff + skin; the graph builder drops those beyond
            # the cutoff (the envelope zeroes them) so the model does not pay ~1/3 more edges.
            edges = [self.neighbors.get(positions, atoms.numbers, cell, pbc)]
            graph = self.graphs(structure, self.dtype, self.device, edges=edges)
        self._check_extrapolation(graph)
        self._check_memory(graph)
        if not self.model.config.is_potential:
            self._property(graph)
            return
        out = self.model(graph, compute_forces=True, compute_stress=want_stress)
        for key in ("energy", "forces", "stress"):
            if key in out and not bool(torch.isfinite(out[key]).all()):
                # The input was checked above: the model itself broke down here.
                raise ValueError(f"the model gave a non-finite {key} for this structure of {len(atoms)} atoms "
                                 f"(its positions and cell are finite): the model cannot be used here")
        energy = float(out["energy"][0].detach())
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["energies"] = out["node_energy"].detach().cpu().numpy().astype(np.float64)
        self.results["forces"] = out["forces"].detach().cpu().numpy().astype(np.float64)
        if want_stress:
            stress = out["stress"][0].detach().cpu().numpy().astype(np.float64)
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)

    def _property(self, graph: AtomicGraph) -> None:
        """A property model's results: the property (its unit) and, for a dipole, the vector in e·Å."""
        config = self.model.config
        out = self.model(graph)
        value = float(out["property"][0].detach())
        if not np.isfinite(value):
            raise ValueError(f"the model gave a non-finite {config.target} for this structure of "
                             f"{graph.num_nodes} atoms: the model cannot be used here")
        self.results[config.target] = value
        if "dipole" in out:
            self.results["dipole"] = (out["dipole"][0].detach().cpu().numpy() / config.scale).astype(np.float64)

    def _check_memory(self, graph: AtomicGraph) -> None:
        """Refuse, before allocating, a system whose energy and forces would not fit in the memory
        this machine has free (CPU; the backbone's own estimate), naming the size that would fit."""
        estimate = getattr(self.model.backbone, "inference_bytes", None)
        if estimate is None or self.device.type != "cpu":
            return
        need = estimate(graph.num_nodes, graph.num_edges, torch.finfo(self.dtype).bits // 8)
        free = available_memory()
        if free is not None and need > free:
            fits = int(graph.num_nodes * free / need)
            raise ValueError(f"{graph.num_nodes} atoms ({graph.num_edges} pairs within the cutoff) need about "
                             f"{need / 2**30:.1f} GiB for energy and forces in {str(self.dtype).split('.')[-1]}, "
                             f"{free / 2**30:.1f} GiB are free: about {fits} atoms of this density fit "
                             f"(float32 halves the need)")

    def _check_extrapolation(self, graph: AtomicGraph) -> None:
        """Raise for atoms on top of each other; warn once when a pair is closer than in training."""
        pair = graph.closest_pair()
        if pair is None:
            return
        _, i, j, shortest = pair
        if shortest < COINCIDENT:
            raise ValueError(f"atoms {i} and {j} are at the same position ({shortest:.1e} Å apart, "
                             f"periodic images included)")
        dmin = self.model.config.min_pair_distance
        if self._warned or dmin is None:
            return
        if shortest < dmin:
            self._warned = True
            warnings.warn(
                f"two atoms are {shortest:.3f} Å apart, closer than any pair in the training data "
                f"({dmin:.3f} Å): the model is extrapolating (warned once per calculator)",
                ExtrapolationWarning,
                stacklevel=3,
            )


def available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
