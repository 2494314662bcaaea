"""What a training target is and how it is set up: the one table of per-property defaults
(readout, per-element references) and the training recipe of property models.

The readout kinds themselves belong to the model (:mod:`equipot.potentials.readouts`); the units
come from the data file (the converters record each property's unit). A property not in the
table trains with the ``extensive`` readout and fitted references, as an energy does.

Standardisation (so that one recipe trains every target):

- ``extensive``: per-element references (the data file's isolated-atom values for U0, U, H, G,
  else a least-squares fit on the element counts) plus a learned per-element correction, and a
  per-atom ``scale``: the RMS per-atom residual;
- ``intensive``: ``shift`` = training mean, ``scale`` = training standard deviation;
- ``dipole``: ``scale`` = the value of 1 e·Å in the target's unit (the charges are in e);
- ``spatial_extent``: references and the mean weight per atom fitted jointly by least squares
  on the element counts and sum_i |r_i - c_Z|^2; ``scale`` = that weight;

and the property loss is the error divided by :func:`loss_scale` (the spread of the targets that
the composition does not explain), so that it is dimensionless whatever the target's unit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the learning rate of property training when ``train.lr`` is not given, by readout (measured on
#: QM9: benchmarks/RESULTS.md, section QM9); readouts not listed take ``PROPERTY_LR["extensive"]``
PROPERTY_LR = {"extensive": 2e-3, "intensive": 3e-3}
#: the learning rate of energy (+ forces) training when ``train.lr`` is not given
POTENTIAL_LR = 5e-3
#: structures per step of property training when ``data.batch_size`` is not given (QM9 molecules
#: are small: larger batches give more molecules per second on a CPU)
PROPERTY_BATCH = 32
#: structures per step of energy (+ forces) training when ``data.batch_size`` is not given
POTENTIAL_BATCH = 5


@dataclass(frozen=True)
class TargetDefaults:
    """How a target is read out and referenced by default.

    Attributes:
        readout: the readout kind (:data:`equipot.potentials.readouts.READOUTS`).
        references: ``atomrefs`` (the data file's isolated-atom values of the target, a fit where
            the file has none), ``fit`` (least squares on the element counts) or ``none``.
    """

    readout: str
    references: str


_ENERGY_LIKE = TargetDefaults("extensive", "atomrefs")
_ADDITIVE = TargetDefaults("extensive", "fit")
_INTENSIVE = TargetDefaults("intensive", "none")

#: per-target defaults: the energy of a potential and the properties of QM9 (equipot.data.qm9)
TARGETS: dict[str, TargetDefaults] = {
    "energy": _ADDITIVE,
    "U0": _ENERGY_LIKE, "U": _ENERGY_LIKE, "H": _ENERGY_LIKE, "G": _ENERGY_LIKE,
    "zpve": _ADDITIVE, "Cv": _ADDITIVE, "alpha": _ADDITIVE,
    "homo": _INTENSIVE, "lumo": _INTENSIVE, "gap": _INTENSIVE,
    "mu": TargetDefaults("dipole", "none"),
    "r2": TargetDefaults("spatial_extent", "fit"),
    # rotational constants are not among the usual QM9 targets; they shrink as molecules grow
    "A": _INTENSIVE, "B": _INTENSIVE, "C": _INTENSIVE,
}


def target_defaults(name: str) -> TargetDefaults:
    """The defaults of target ``name`` (an unknown property: extensive with fitted references)."""
    return TARGETS.get(name, _ADDITIVE)


def property_lr(readout: str) -> float:
    """The default learning rate of a property model with readout ``readout``."""
    return PROPERTY_LR.get(readout, PROPERTY_LR["extensive"])


def readout_of(name: str, readout: str = "auto") -> str:
    """The readout of target ``name`` when the model asks for ``readout`` (``auto``: the table's)."""
    return target_defaults(name).readout if readout == "auto" else readout


def loss_scale(values: np.ndarray, counts: np.ndarray) -> float:
    """The property loss's unit: the standard deviation of the training targets ``values`` [F]
    after a least-squares fit on the element counts ``counts`` [F, S] and a constant.

    1.0 when the targets leave nothing to learn (a constant)."""
    design = np.concatenate([counts, np.ones((len(values), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    residual = float(np.std(values - design @ coef))
    return residual if np.isfinite(residual) and residual > 1e-12 * max(1.0, float(np.abs(values).max())) else 1.0
