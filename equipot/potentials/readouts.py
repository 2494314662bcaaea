"""Readouts: how a backbone's per-atom outputs become one value per structure.

``PotentialConfig.target_readout`` names one of these; :class:`~equipot.potentials.Potential`
applies it. ``o_i`` is the backbone's scalar output of atom ``i`` (dimensionless, of order 0.1 to
1 at initialisation), ``ref(z)`` the per-element reference (``atomic_energies`` plus the learned
``energy_correction``), ``scale`` and ``shift`` the config's standardisation, all in the target's
unit:

- ``extensive``: ``y = sum_i [ref(z_i) + shift + scale * (o_i - o_iso(z_i))]``: the energy of a
  potential, and size-extensive properties (U0, U, H, G, ZPVE, Cv, alpha). An isolated atom
  gives exactly ``ref(z) + shift``; a molecule and a copy far away give exactly twice the value.
- ``intensive``: ``y = shift + scale * mean_i o_i``: properties that do not grow with the
  molecule (HOMO, LUMO, gap); ``shift`` is the training mean, ``scale`` the standard deviation.
- ``dipole``: charges ``q_i = o_i - mean(o)`` (so that every structure is neutral: the charges
  sum to zero, which also makes the vector independent of the origin), the vector
  ``d = sum_i q_i (r_i - c) + sum_i v_i`` in e·Å (``c`` the centroid; ``v_i`` a vector per atom
  read out of the backbone's orientations when it has them: ``Ponita.add_vector_head``), and
  ``y = scale * |d|`` with ``scale`` the factor from e·Å to the target's unit (4.80320 for Debye),
  so the charges are in e. The vector ``scale * d`` is returned as ``dipole``.
- ``spatial_extent``: ``y = sum_i [ref(z_i) + (shift + scale * o_i) |r_i - c_Z|^2]`` with ``c_Z``
  the centre of nuclear charge: per-atom weights (an electron count, learned) times squared
  distances, plus a per-element constant (the atoms' own extent), for QM9's <R^2>.

Units: positions in Å; the target's unit as the config says.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..ops import scatter_sum

#: readout kinds, in the order the documentation lists them
READOUTS = ("extensive", "intensive", "dipole", "spatial_extent")
#: readouts without per-element reference values (their ``atomic_energies`` are zero)
NO_REFERENCES = ("intensive", "dipole")
#: e·Å in each dipole unit the ``dipole`` readout can give (CODATA 2018: e = 1.602176634e-19 C,
#: Debye = 1e-21 / c C·m, Bohr = 0.529177210903 Å)
DIPOLE_UNITS = {"Debye": 4.803204712570263, "D": 4.803204712570263, "e*Angstrom": 1.0, "eÅ": 1.0,
                "e*Bohr": 1.0 / 0.529177210903, "ea0": 1.0 / 0.529177210903}


def dipole_scale(unit: str) -> float:
    """The ``dipole`` readout's scale for a target in ``unit``: the value of 1 e·Å in it.

    ValueError names the unit and the known ones."""
    if unit not in DIPOLE_UNITS:
        raise ValueError(f"the dipole readout gives e·Å in Debye, e*Angstrom or e*Bohr, not {unit!r}")
    return DIPOLE_UNITS[unit]


def atoms_per_structure(batch: Tensor, num_graphs: int, dtype: torch.dtype) -> Tensor:
    """[B] number of atoms of each structure (at least 1, so empty structures divide safely)."""
    ones = torch.ones_like(batch, dtype=dtype)
    return scatter_sum(ones, batch, num_graphs).clamp_min(1.0)


def intensive(outputs: Tensor, batch: Tensor, num_graphs: int, scale: float, shift: float) -> Tensor:
    """``shift + scale * mean_i o_i`` per structure, [B] (``outputs`` [N])."""
    mean = scatter_sum(outputs, batch, num_graphs) / atoms_per_structure(batch, num_graphs, outputs.dtype)
    return shift + scale * mean


def centred(positions: Tensor, weights: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """[N, 3] positions minus their structure's ``weights``-weighted centre (weights [N] > 0)."""
    total = scatter_sum(weights, batch, num_graphs).clamp_min(1e-12)
    centre = scatter_sum(weights[:, None] * positions, batch, num_graphs) / total[:, None]
    return positions - centre[batch]


def neutral_charges(outputs: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """[N] charges summing to zero per structure: ``o_i`` minus its structure's mean."""
    mean = scatter_sum(outputs, batch, num_graphs) / atoms_per_structure(batch, num_graphs, outputs.dtype)
    return outputs - mean[batch]


def dipole(outputs: Tensor, vectors: Tensor | None, positions: Tensor, batch: Tensor, num_graphs: int,
           scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """(magnitude [B], vector [B, 3], charges [N]) of the ``dipole`` readout.

    ``outputs`` [N] become neutral charges (e); ``vectors`` [N, 3] (e·Å, or None) are added to
    ``sum_i q_i (r_i - c)``; magnitude and vector are multiplied by ``scale`` (the target unit)."""
    charges = neutral_charges(outputs, batch, num_graphs)
    ones = torch.ones_like(outputs)
    moment = charges[:, None] * centred(positions.to(outputs.dtype), ones, batch, num_graphs)
    if vectors is not None:
        moment = moment + vectors.to(outputs.dtype)
    vector = scale * scatter_sum(moment, batch, num_graphs)
    return norm(vector), vector, charges


def norm(vector: Tensor) -> Tensor:
    """|v| over the last axis with a zero gradient (not NaN) at v = 0: QM9 has molecules whose
    dipole is zero by symmetry."""
    squared = (vector * vector).sum(-1)
    positive = squared > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, squared, torch.ones_like(squared))),
                       torch.zeros_like(squared))


def spatial_extent(outputs: Tensor, references: Tensor, numbers: Tensor, positions: Tensor, batch: Tensor,
                   num_graphs: int, scale: float, shift: float) -> tuple[Tensor, Tensor]:
    """(value [B], per-atom contributions [N]) of the ``spatial_extent`` readout.

    ``references`` [N]: each atom's per-element constant; ``numbers`` [N] atomic numbers (the
    weights of the centre of nuclear charge)."""
    r = centred(positions.to(outputs.dtype), numbers.to(outputs.dtype), batch, num_graphs)
    node = references + (shift + scale * outputs) * (r * r).sum(-1)
    return scatter_sum(node, batch, num_graphs), node


def squared_extent(numbers: Tensor, positions: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """[B] sum over atoms of |r_i - c_Z|^2, Å^2 (the geometric part of ``spatial_extent``, used to
    fit its ``shift`` on the training data)."""
    r = centred(positions, numbers.to(positions.dtype), batch, num_graphs)
    return scatter_sum((r * r).sum(-1), batch, num_graphs)
