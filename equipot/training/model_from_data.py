"""A new model set up from its training data: the fields of a :class:`PotentialConfig` that a
training config leaves to the data (``elements``, ``avg_num_neighbors``, ``min_pair_distance``,
``atomic_energies``, ``scale``) resolved on the training split."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from ..data import H5Dataset
from ..graph import GraphBuilder
from ..potentials.base import Potential, PotentialConfig, element_counts
from ..potentials.config import ENERGY
from ..potentials.readouts import NO_REFERENCES, dipole_scale
from .config import DataSection
from .data import Splits, check_dataset_elements, check_no_coincident_atoms, target_values
from .targets import readout_of, target_defaults

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


def training_statistics(dataset: H5Dataset, graphs: GraphBuilder, max_frames: int | None = None,
                        seed: int = 0) -> Statistics:
    """Mean neighbours per atom in the graphs ``graphs`` builds, shortest pair distance (Å) and
    RMS force component (eV/Å) over the training frames (a seeded subset of ``max_frames`` when
    given)."""
    idx = np.arange(len(dataset))
    if max_frames is not None and max_frames < len(dataset):
        idx = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:max_frames])
    edges = atoms = 0
    dmin = np.inf
    f_sq, f_n = 0.0, 0
    elements: set[int] = set()
    for start in range(0, len(idx), _STATS_BATCH):
        frames = [dataset[int(k)] for k in idx[start:start + _STATS_BATCH]]
        graph = graphs([(f.numbers, f.positions, f.cell, f.pbc) for f in frames])
        shortest = check_no_coincident_atoms(graph, dataset, idx[start:start + _STATS_BATCH])
        elements.update(int(z) for z in torch.unique(graph.numbers))
        edges += graph.num_edges
        atoms += graph.num_nodes
        if shortest is not None:
            dmin = min(dmin, shortest)
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
    hears the choices made that the user should know of.

    With ``property_name`` the model is a property model: its target, unit and readout (and the
    references, ``atomic_energies: auto``) follow the property (:mod:`equipot.training.targets`)."""
    train = splits.train
    stats = training_statistics(train, model.graph_builder(), data.stats_frames, data.seed)
    elements = (list(model.elements) if model.elements is not None
                else sorted(set(train.elements()) | set(stats.elements)))
    for ds, what in ((train, "training"), (splits.valid, "validation"), (splits.test, "test")):
        if ds is not None:
            check_dataset_elements(ds, elements, what)
    avg = stats.avg_num_neighbors if model.avg_num_neighbors == "auto" else model.avg_num_neighbors
    target, unit, readout = _target(model, train, property_name)
    given = _references(model, readout, target, train, elements, log)
    resolved = replace(model, target=target, target_unit=unit, target_readout=readout)
    potential = Potential(replace(
        resolved, elements=elements, avg_num_neighbors=max(avg, 1e-3), atomic_energies=None, scale=1.0,
        min_pair_distance=stats.min_pair_distance if model.min_pair_distance is None else model.min_pair_distance,
        learn_atomic_energies=resolved.learns_atomic_energies(), backbone_options=dict(model.backbone_options)))
    values = target_values(train, property_name)
    numbers = train.numbers_per_frame()
    if readout == "spatial_extent":
        _fit_spatial_extent(potential, model, train, numbers, values, given)
        return potential
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
    if readout == "intensive":
        potential.set_reference(shift=float(np.mean(values)) if model.shift == 0.0 else model.shift,
                                scale=_given_or(model.scale, float(np.std(values))))
    elif readout == "dipole":
        potential.set_reference(scale=_given_or(model.scale, dipole_scale(unit)))
    else:
        potential.set_reference(scale=_scale(model, potential, stats, numbers, values, property_name))
    return potential


def _target(model: PotentialConfig, train: H5Dataset, property_name: str | None) -> tuple[str, str, str]:
    """(target, unit, readout) of the model: the energy, or ``property_name`` with the data's unit
    and the readout that ``model.target_readout`` or the property's defaults name."""
    target = property_name or ENERGY
    if model.target not in (ENERGY, target):
        raise ValueError(f"model.target is {model.target!r} but train.property is {property_name!r}: the model "
                         f"predicts what it is trained on (leave model.target out)")
    unit = train.units().get(target, "") if property_name is not None else "eV"
    readout = readout_of(target, model.target_readout)
    if property_name is None and readout != "extensive":
        raise ValueError(f"model.target_readout: {readout!r} is a readout for a property (train.property); a "
                         f"potential sums per-atom energies (extensive)")
    return target, unit, readout


def _references(model: PotentialConfig, readout: str, target: str, train: H5Dataset, elements: list[int],
                log: Callable[[str], None]) -> str | list[float]:
    """``model.atomic_energies`` resolved to ``fit``, ``zero`` or a list (the target's unit, in
    ``elements`` order)."""
    given = model.atomic_energies
    if given == "auto":
        given = {"atomrefs": "atomrefs", "fit": "fit", "none": "zero"}[target_defaults(target).references]
        if readout in NO_REFERENCES:
            given = "zero"
    if readout in NO_REFERENCES and given != "zero":
        raise ValueError(f"model.atomic_energies: the {readout} readout has no per-element references; leave it "
                         f"at auto (or zero), not {given!r}")
    if given == "atomrefs":
        refs = train.atomrefs().get(target)
        if refs is None:
            log(f"  note: {train.path} has no atomrefs for {target!r} (equipot convert stores QM9's); fitting the "
                f"references on the training split instead")
            return "fit"
        table, attrs = refs
        unit = train.units().get(target, "eV") if target != ENERGY else "eV"
        if attrs.get("unit", unit) != unit:
            raise ValueError(f"{train.path}: atomrefs/{target} is in {attrs.get('unit')!r}, the target in {unit!r}")
        present = {int(z) for z in np.asarray(attrs.get("elements", np.flatnonzero(table)))}
        missing = [z for z in elements if z not in present]
        if missing:
            raise ValueError(f"{train.path}: atomrefs/{target} has no value for element Z={missing[0]}")
        return [float(table[z]) for z in elements]
    if isinstance(given, dict):
        missing = [z for z in elements if z not in given]
        if missing:
            raise ValueError(f"model.atomic_energies has no entry for element Z={missing[0]}")
        return [given[z] for z in elements]
    return given


def _given_or(value: object, default: float) -> float:
    """A scale given as a number, else (a data keyword) ``default``."""
    return default if isinstance(value, str) else float(value)


def _fit_spatial_extent(potential: Potential, model: PotentialConfig, train: H5Dataset,
                        numbers: Sequence[np.ndarray], values: np.ndarray, given: str | list[float]) -> None:
    """References and mean weight of the ``spatial_extent`` readout: least squares of the targets
    on the element counts and sum_i |r_i - c_Z|^2 (only the latter when references are given)."""
    counts = element_counts(numbers, potential.config.elements)
    extent = np.array([squared_extent(train[k].numbers, train[k].positions) for k in range(len(train))])
    if isinstance(given, list) or given == "zero":
        refs = np.zeros(counts.shape[1]) if given == "zero" else np.asarray(given)
        weight = float(np.dot(extent, values - counts @ refs) / max(np.dot(extent, extent), 1e-12))
    else:
        coef, *_ = np.linalg.lstsq(np.concatenate([counts, extent[:, None]], axis=1), values, rcond=None)
        refs, weight = coef[:-1], float(coef[-1])
    potential.set_reference(atomic_energies=refs.tolist(), shift=weight if model.shift == 0.0 else model.shift,
                            scale=_given_or(model.scale, abs(weight) or 1.0))


def squared_extent(numbers: np.ndarray, positions: np.ndarray) -> float:
    """sum_i |r_i - c_Z|^2 of one structure, Å^2 (c_Z: the centre of nuclear charge), as the
    ``spatial_extent`` readout measures it."""
    centre = (numbers[:, None] * positions).sum(0) / max(float(numbers.sum()), 1e-12)
    return float(((positions - centre) ** 2).sum())


def _scale(model: PotentialConfig, potential: Potential, stats: Statistics, numbers: Sequence[np.ndarray],
           values: np.ndarray | None, property_name: str | None) -> float:
    """``model.scale`` in eV: the number given, the RMS force component, or the RMS per-atom
    energy left after the reference energies (and, when the model learns a per-element
    correction to given references, after its least-squares fit)."""
    if not isinstance(model.scale, str):
        return float(model.scale)
    if model.scale == "rms_forces" and stats.rms_forces and property_name is None:
        return float(stats.rms_forces)
    if values is None:
        return 1.0
    counts = element_counts(numbers, potential.config.elements)
    residual = np.asarray(values) - counts @ potential.reference_energies().detach().numpy()
    if potential.config.learns_atomic_energies():
        residual = residual - counts @ np.linalg.lstsq(counts, residual, rcond=None)[0]
    per_atom = residual / np.maximum(counts.sum(1), 1)
    rms = float(np.sqrt(np.mean(np.square(per_atom)))) if len(per_atom) else 1.0
    return rms if np.isfinite(rms) and rms > 1e-12 else 1.0
