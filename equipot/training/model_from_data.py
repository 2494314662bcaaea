"""A new model set up from its training data: the fields of a :class:`PotentialConfig` that a
training config leaves to the data (``elements``, ``avg_num_neighbors``, ``min_pair_distance``,
``atomic_energies``, ``scale``) resolved on the training split."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from ..data import H5Dataset
from ..graph import AtomicGraph
from ..potentials.base import Potential, PotentialConfig, element_counts
from .config import DataSection
from .data import Splits, check_dataset_elements, target_values

# Frames per neighbour-list batch for the statistics (bounded memory on large periodic frames).
_STATS_BATCH = 64


@dataclass
class Statistics:
    """What the model's normalisation is set from (training frames only)."""

    elements: list[int]
    avg_num_neighbors: float
    min_pair_distance: float | None
    rms_forces: float | None
    frames: int


def training_statistics(dataset: H5Dataset, cutoff: float, max_frames: int | None = None,
                        seed: int = 0) -> Statistics:
    """Mean neighbours per atom within ``cutoff``, shortest pair distance (Å) and RMS force
    component (eV/Å) over the training frames (a seeded subset of ``max_frames`` when given)."""
    idx = np.arange(len(dataset))
    if max_frames is not None and max_frames < len(dataset):
        idx = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:max_frames])
    edges = atoms = 0
    dmin = np.inf
    f_sq, f_n = 0.0, 0
    elements: set[int] = set()
    for start in range(0, len(idx), _STATS_BATCH):
        frames = [dataset[int(k)] for k in idx[start:start + _STATS_BATCH]]
        graph = AtomicGraph.from_structures([(f.numbers, f.positions, f.cell, f.pbc) for f in frames], cutoff)
        elements.update(int(z) for z in torch.unique(graph.numbers))
        edges += graph.num_edges
        atoms += graph.num_nodes
        if graph.num_edges:
            dmin = min(dmin, float(graph.edge_vectors().norm(dim=-1).min()))
        for frame in frames:
            if frame.forces is not None:
                f_sq += float((frame.forces ** 2).sum())
                f_n += frame.forces.size
    return Statistics(
        elements=sorted(elements),
        avg_num_neighbors=edges / max(atoms, 1),
        min_pair_distance=float(dmin) if np.isfinite(dmin) else None,
        rms_forces=float(np.sqrt(f_sq / f_n)) if f_n else None,
        frames=len(idx),
    )


def model_from_data(model: PotentialConfig, splits: Splits, data: DataSection,
                    property_name: str | None = None, log: Callable[[str], None] = print) -> Potential:
    """A new :class:`Potential` as ``model`` says, with what it leaves to the data resolved on
    the training split (ValueError naming the frame or key when the data cannot serve); ``log``
    hears the choices made that the user should know of."""
    train = splits.train
    stats = training_statistics(train, model.cutoff, data.stats_frames, data.seed)
    elements = (list(model.elements) if model.elements is not None
                else sorted(set(train.elements()) | set(stats.elements)))
    for ds, what in ((train, "training"), (splits.valid, "validation"), (splits.test, "test")):
        if ds is not None:
            check_dataset_elements(ds, elements, what)
    avg = stats.avg_num_neighbors if model.avg_num_neighbors == "auto" else model.avg_num_neighbors
    given = model.atomic_energies
    if isinstance(given, dict):
        missing = [z for z in elements if z not in given]
        if missing:
            raise ValueError(f"model.atomic_energies has no entry for element Z={missing[0]}")
        given = [given[z] for z in elements]
    potential = Potential(replace(
        model, elements=elements, avg_num_neighbors=max(avg, 1e-3), atomic_energies=None, scale=1.0,
        min_pair_distance=stats.min_pair_distance if model.min_pair_distance is None else model.min_pair_distance,
        learn_atomic_energies=model.learns_atomic_energies(), backbone_options=dict(model.backbone_options)))
    values = target_values(train, property_name)
    numbers = train.numbers_per_frame()
    if isinstance(given, list):
        potential.set_reference(atomic_energies=given)
    elif given == "fit" and values is not None:
        counts = element_counts(numbers, elements)
        present = int((counts.sum(0) > 0).sum())
        if np.linalg.matrix_rank(counts) < present:
            # One composition (a single molecule's trajectory) cannot tell the elements apart:
            # least squares would return an arbitrary split of the energy between them.
            per_atom = float(np.mean(np.asarray(values) / counts.sum(1)))
            potential.set_reference(atomic_energies=[per_atom] * len(elements))
            log(f"  note: the training frames do not determine one reference energy per element (their "
                f"compositions are linearly dependent: {present} elements, rank {np.linalg.matrix_rank(counts)}); "
                f"using the mean energy per atom, {per_atom:.6g} eV, for every element")
        else:
            potential.fit_atomic_energies(numbers, values)
    else:
        potential.set_reference(atomic_energies=[0.0] * len(elements))
    potential.set_reference(scale=_scale(model, potential, stats, numbers, values, property_name))
    return potential


def _scale(model: PotentialConfig, potential: Potential, stats: Statistics, numbers: Sequence[np.ndarray],
           values: np.ndarray | None, property_name: str | None) -> float:
    """``model.scale`` in eV: the number given, the RMS force component, or the RMS per-atom
    energy left after the reference energies."""
    if not isinstance(model.scale, str):
        return float(model.scale)
    if model.scale == "rms_forces" and stats.rms_forces and property_name is None:
        return float(stats.rms_forces)
    if values is None:
        return 1.0
    e0 = potential.reference_energies().detach().numpy()
    index = {z: s for s, z in enumerate(potential.config.elements)}
    per_atom = [(value - sum(e0[index[int(z)]] for z in num)) / len(num) for num, value in zip(numbers, values)]
    rms = float(np.sqrt(np.mean(np.square(per_atom)))) if per_atom else 1.0
    return rms if np.isfinite(rms) and rms > 1e-12 else 1.0
