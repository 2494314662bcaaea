"""The closed-form re-fit of a model's per-element energy correction during training.

A force-dominated loss lets the backbone's energy per atom drift by a constant that the forces
cannot see, swinging from epoch to epoch by more than the energies' spread; the learned
correction (``Potential.energy_correction``) follows only at the learning rate. So the trainer
adds to it, on the new model and before every validation (the trained and the evaluated EMA
model), the per-element least-squares fit of the model's residual energies on a fixed seeded
subset of training frames (energies only, eval mode, so deterministic). The subset is at most a
tenth of the training set (at least ``MIN_FRAMES``): the fit runs twice per validation, in eval
mode on the denser inference grid, so on a small training set a fixed 500 frames would cost a
large share of the run (measured in ``benchmarks/RESULTS.md``), while a per-element constant
needs far fewer frames.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import H5Dataset
from ..data.loader import make_loader
from ..potentials.base import Potential, element_counts, predicted
from .data import target_values

MIN_FRAMES = 50


def refit_size(n_train: int, frames: int) -> int:
    """Frames the correction is fitted on: ``frames`` at most, and at most a tenth of the ``n_train``
    training frames unless that is below ``MIN_FRAMES`` (never more than ``n_train``)."""
    return min(frames, n_train, max(n_train // 10, MIN_FRAMES))


class EnergyFit:
    """The frames the correction is fitted on: ``refit_size(len(train), frames)`` of ``train``
    (seeded by ``seed``), with their target values (energy, or ``property``) [F] and element
    counts [F, S] for ``model``."""

    def __init__(self, train: H5Dataset, property_name: str | None, model: Potential, frames: int, seed: int,
                 batch_size: int):
        idx = np.arange(len(train))
        frames = refit_size(len(train), frames)
        if len(idx) > frames:
            idx = np.sort(np.random.default_rng(seed).permutation(len(idx))[:frames])
        self.values = target_values(train, property_name)[idx]
        numbers = train.numbers_per_frame()
        self.counts = element_counts([numbers[k] for k in idx], model.config.elements)
        self.loader = make_loader(train.subset(idx), model.graph_builder(), batch_size)

    def refit(self, model: Potential) -> None:
        """Add to ``model.energy_correction`` the least-squares fit of its residual energies (eV)."""
        dtype = next(model.backbone.parameters()).dtype
        device = model.energy_correction.device
        was_training = model.training
        model.eval()
        values = []
        with torch.no_grad():
            for graph, _ in self.loader:
                values.append(predicted(model(graph.to(device, dtype), compute_forces=False)).cpu())
        model.train(was_training)
        fit, *_ = np.linalg.lstsq(self.counts, self.values - torch.cat(values).numpy(), rcond=None)
        with torch.no_grad():
            model.energy_correction.add_(torch.as_tensor(fit, dtype=model.energy_correction.dtype, device=device))
