"""Evaluate a model on a dataset: errors per target, the loss, and (optionally) the predictions."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data import H5Dataset
from ..data.loader import make_loader
from ..potentials.base import Potential, predicted
from ..safe_write import atomic_write
from .data import check_no_coincident_atoms
from .distributed import DistInfo, all_reduce_sum
from .losses import LossWeights, combine, loss_terms
from .metrics import ErrorStats, metric_keys


@dataclass
class Evaluation:
    """Result of :func:`evaluate`: ``metrics`` (``<key>_mae``, ``<key>_rmse`` in eV, eV/Å or the
    property's unit, and ``loss``), when asked ``predictions`` (numpy arrays), and
    ``output_std``: the spread of the backbone's per-atom output among atoms of the same element
    (pooled standard deviation over every atom evaluated): zero for a network that has died, whose
    output no longer depends on the atoms' surroundings."""

    metrics: dict[str, float]
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    output_std: float | None = None


def available_targets(dataset: Dataset) -> set[str]:
    names = set()
    for name in ("energy", "forces", "stress"):
        if dataset.has(name):
            names.add(name)
    return names | set(dataset.property_names())


def model_property(model: Potential, property_name: str | None) -> str | None:
    """The property to score ``model`` on: its own target for a property model (ValueError when
    another is asked), else ``property_name`` (a model file of format < 3 trained on a property
    records no target and needs it)."""
    target = model.config.target
    if model.config.is_potential:
        return property_name
    if property_name not in (None, target):
        raise ValueError(f"the model predicts {target!r} ({model.config.target_unit}), not {property_name!r}")
    return target


def evaluate(
    model: Potential,
    dataset: Dataset,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    weights: LossWeights | None = None,
    property_name: str | None = None,
    num_workers: int = 0,
    keep_predictions: bool = False,
    dist_info: DistInfo | None = None,
) -> Evaluation:
    """Errors of ``model`` on ``dataset`` (MAE/RMSE per target) and the weighted loss.

    Forces are computed when the data has forces, stress when it has stress. With ``dist_info``
    each rank passes its own share of the frames and the sums are all-reduced.
    ``keep_predictions`` returns ``energy``/``energy_ref`` [M] eV, ``num_atoms`` [M], the structures
    (``numbers`` [sum N], ``positions`` [sum N, 3] Å, ``cell`` [M, 3, 3], ``pbc`` [M, 3]),
    ``forces``/``forces_ref`` [sum N, 3] eV/Å, ``stress``/``stress_ref`` [M, 3, 3] and, for a
    property model, ``<property>``/``<property>_ref`` [M].
    """
    info = dist_info or DistInfo()
    property_name = model_property(model, property_name)
    if isinstance(dataset, H5Dataset):
        dataset.check_labels(property_name)  # NaN labels would give NaN metrics and a NaN "best" model
    weights = weights or LossWeights(property_name=property_name)
    targets_here = available_targets(dataset)
    want_forces = property_name is None and "forces" in targets_here
    want_stress = property_name is None and "stress" in targets_here
    keys = metric_keys(targets_here, property_name, with_forces=want_forces)
    stats = ErrorStats(keys)
    terms = weights.terms(targets_here)
    loss_sums = torch.zeros(2 * len(terms), dtype=torch.float64)
    outputs = torch.zeros(119, 3, dtype=torch.float64)  # per element: count, sum, sum of squares of the output
    preds: dict[str, list[np.ndarray]] = {}
    model.eval()
    loader = make_loader(dataset, model.graph_builder(), batch_size, shuffle=False, num_workers=num_workers,
                         dtype=dtype)
    frames_done = 0
    for graph, targets in loader:
        check_no_coincident_atoms(graph, dataset, np.arange(frames_done, frames_done + graph.num_graphs))
        frames_done += graph.num_graphs
        graph = graph.to(device, dtype)
        targets = {k: v.to(device) for k, v in targets.items()}
        with torch.enable_grad():
            out = model(graph, compute_forces=want_forces, compute_stress=want_stress)
        out = {k: v.detach() for k, v in out.items()}
        if "node_output" in out:
            o = out["node_output"].double().cpu()
            z = graph.numbers.long().cpu()
            outputs.index_add_(0, z, torch.stack([torch.ones_like(o), o, o * o], dim=1))
        stats.update(out, targets, graph, property_name)
        if terms:
            sums, counts = loss_terms(out, targets, graph, weights, terms)
            for t, name in enumerate(terms):
                loss_sums[2 * t] += float(sums[name])
                loss_sums[2 * t + 1] += float(counts[name])
        if keep_predictions:
            _collect(preds, out, targets, graph, property_name)
    if info.enabled:
        stats.set_tensor(all_reduce_sum(stats.as_tensor(), info))
        loss_sums = all_reduce_sum(loss_sums, info)
        outputs = all_reduce_sum(outputs, info)
    metrics = stats.compute()
    if terms:
        sums = {name: loss_sums[2 * t] for t, name in enumerate(terms)}
        counts = {name: loss_sums[2 * t + 1] for t, name in enumerate(terms)}
        metrics["loss"] = float(combine(sums, counts, weights)[0])
    spread = None
    count = float(outputs[:, 0].sum())
    if count > 0:
        within = outputs[:, 2] - outputs[:, 1] ** 2 / outputs[:, 0].clamp_min(1.0)  # per element
        spread = max(float(within.sum()) / count, 0.0) ** 0.5
    return Evaluation(metrics, {k: np.concatenate(v) for k, v in preds.items()}, spread)


def _collect(preds: dict[str, list[np.ndarray]], out, targets, graph, property_name: str | None) -> None:
    def put(name, value):
        preds.setdefault(name, []).append(value.detach().cpu().double().numpy())

    put("num_atoms", (graph.ptr[1:] - graph.ptr[:-1]))
    put("numbers", graph.numbers)
    put("positions", graph.positions)
    put("cell", graph.cell)
    put("pbc", graph.pbc)
    if property_name is not None:
        put(property_name, predicted(out))
        put(f"{property_name}_ref", targets[property_name].reshape(-1))
        if "dipole" in out:
            put(f"{property_name}_vector", out["dipole"])
        return
    put("energy", out["energy"])
    if "energy" in targets:
        put("energy_ref", targets["energy"])
    for key in ("forces", "stress"):
        if key in out:
            put(key, out[key])
            if key in targets:
                put(f"{key}_ref", targets[key])


def write_predictions(model: Potential, dataset: H5Dataset, path: Path, weights: LossWeights, config: Any,
                      device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Evaluate ``model`` on ``dataset`` as a training run's ``config`` says and write its
    predictions (:func:`evaluate`'s ``keep_predictions``) to ``path`` (.npz) atomically; returns the metrics."""
    result = evaluate(model, dataset, config.data.valid_batch_size, device, dtype, weights, config.train.property,
                      config.data.num_workers, keep_predictions=True)
    with atomic_write(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **result.predictions)
    return result.metrics
