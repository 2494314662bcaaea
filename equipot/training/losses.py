"""Energy, force, stress and property losses.

Every term is a mean of squared (or Huber) errors:

- energy: per-atom energy error ((E_pred - E_ref) / n_atoms)^2, averaged over structures, (eV/atom)^2;
- forces: force-component error (F_pred - F_ref)^2, averaged over atoms x 3, (eV/Å)^2;
- stress: stress-component error, averaged over structures x 9, (eV/Å^3)^2;
- property: ((P_pred - P_ref) / property_scale)^2 averaged over structures: dimensionless, the
  error in units of the property's spread (:func:`equipot.training.targets.loss_scale`).

``kind``: ``mse`` (the squares above), ``huber`` (quadratic below ``huber_delta``, linear above)
or ``l1`` (absolute errors).

Terms are *sums* divided by a *global* count, so that under DistributedDataParallel (which
averages gradients over ranks) the gradient equals that of the loss over the global batch:
:func:`loss_terms` returns the sums and the counts, :func:`combine` divides by the counts
(all-reduced across ranks by the trainer) and multiplies by the world size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..graph import AtomicGraph
from ..potentials.base import predicted


@dataclass
class LossWeights:
    """Weights of the loss terms (a zero weight drops the term)."""

    energy: float = 1.0
    forces: float = 100.0
    stress: float = 1.0
    property: float = 1.0
    property_name: str | None = None
    kind: str = "mse"
    huber_delta: float = 0.01
    property_scale: float = 1.0

    def terms(self, available: set[str]) -> list[str]:
        """Loss terms in use given the target names in the data."""
        if self.property_name is not None:
            return ["property"]
        out = []
        for name in ("energy", "forces", "stress"):
            if getattr(self, name) > 0 and name in available:
                out.append(name)
        return out


def _elementwise(err: Tensor, kind: str, delta: float) -> Tensor:
    if kind == "huber":
        a = err.abs()
        return torch.where(a < delta, 0.5 * err * err, delta * (a - 0.5 * delta))
    if kind == "l1":
        return err.abs()
    return err * err


def loss_terms(
    pred: dict[str, Tensor], targets: dict[str, Tensor], graph: AtomicGraph, weights: LossWeights, terms: list[str]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Sums of the elementwise losses and their counts, per term.

    ``pred`` is the output of :class:`~equipot.potentials.Potential` (``energy`` [B] eV,
    ``forces`` [N, 3], ``stress`` [B, 3, 3]); ``targets`` the batch's targets. For the
    ``property`` term the model's prediction (``property``, or ``energy`` for a model file of
    format < 3) is compared with ``targets[property_name]``.
    """
    sums: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    kind, delta = weights.kind, weights.huber_delta
    dtype = torch.float64
    for name in terms:
        if name == "energy":
            n_atoms = (graph.ptr[1:] - graph.ptr[:-1]).to(dtype)
            err = (pred["energy"].to(dtype) - targets["energy"].to(dtype)) / n_atoms
        elif name == "forces":
            err = pred["forces"] - targets["forces"].to(pred["forces"].dtype)
        elif name == "stress":
            err = pred["stress"] - targets["stress"].to(pred["stress"].dtype)
        else:
            target = targets[weights.property_name].to(dtype).reshape(-1)
            err = (predicted(pred).to(dtype) - target) / weights.property_scale
        sums[name] = _elementwise(err, kind, delta).sum().to(dtype)
        counts[name] = torch.tensor(float(err.numel()), dtype=dtype, device=err.device)
    return sums, counts


def combine(
    sums: dict[str, Tensor], counts: dict[str, Tensor], weights: LossWeights, world_size: int = 1
) -> tuple[Tensor, dict[str, float]]:
    """Weighted total loss (scalar, differentiable) and the per-term values (floats, local batch).

    ``counts`` should be the global counts (summed over ranks); the total is multiplied by
    ``world_size`` to undo DDP's gradient averaging.
    """
    total = None
    parts: dict[str, float] = {}
    for name, s in sums.items():
        count = counts[name].clamp_min(1.0)
        term = s / count
        parts[name] = float(term.detach()) * world_size
        weighted = getattr(weights, name) * term
        total = weighted if total is None else total + weighted
    if total is None:
        raise ValueError("no loss term is active: the data has none of the targets with a non-zero weight")
    return total * world_size, parts
