"""The one description of a model: :class:`PotentialConfig`.

It is what a model file stores beside the weights, what :func:`~equipot.build_potential` builds
and what the ``model:`` section of a training config is. In a training config the values that the
training data can decide may be left to it with a keyword (``elements: null``, ``atomic_energies:
auto | fit | zero | atomrefs | {Z: eV}``, ``scale: rms_forces | std``, ``avg_num_neighbors: auto``,
``min_pair_distance: null``, ``target_readout: auto``); :func:`equipot.training.model_from_data`
resolves them on the training split before the model is built. A
:class:`~equipot.potentials.Potential` takes only a resolved config.

Written out (a config file, ``--help``), the backbone's own options stand beside the shared fields
(``model.hidden: 64``); :meth:`PotentialConfig.from_flat` and :meth:`PotentialConfig.to_flat` are
the one place that splits and joins them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..coerce import coerce_fields, did_you_mean
from ..graph import GraphBuilder
from ..neighbors import check_cutoff
from .readouts import NO_REFERENCES, READOUTS
from .registry import get_backbone

#: keyword values of the fields the training data may decide
DATA_KEYWORDS = {"atomic_energies": ("auto", "fit", "zero", "atomrefs"), "scale": ("rms_forces", "std"),
                 "avg_num_neighbors": ("auto",)}
#: what the model predicts when it is a potential (energy, forces and stress)
ENERGY = "energy"


class UnknownOption(ValueError):
    """A model option that is neither a shared field nor an option of the backbone."""


@dataclass
class PotentialConfig:
    """Everything needed to rebuild a :class:`~equipot.potentials.Potential` (saved with its weights).

    Attributes:
        backbone: registered backbone name (``ponita``, ``lieconv``, ...).
        cutoff: interaction cutoff, Å.
        elements: atomic numbers the model knows, in species-index order; null = the elements
            of the training data.
        atomic_energies: reference energy per element, eV (for a property model: reference value
            per element in ``target_unit``), in ``elements`` order; in a training config also
            ``fit`` (least squares on the training split), ``zero``, ``atomrefs`` (the data
            file's isolated-atom values of the target, e.g. QM9's U0), a mapping {atomic
            number: eV}, or ``auto``: ``fit`` for an energy, the target's default for a
            property (:mod:`equipot.training.targets`).
        learn_atomic_energies: train a per-element correction to those energies (the model's
            ``energy_correction``; it changes energies only, never forces). null (default): true
            for ``fit`` and ``zero``, false for a mapping, so that given isolated-atom energies
            (e.g. DFT E0s) stay exactly what the model gives for isolated atoms.
        scale: eV multiplying the backbone output: a number, or in a training config
            ``rms_forces`` (RMS of the training force components) or ``std`` (RMS per-atom residual
            energy after the reference fit).
        shift: eV added to every atom's energy.
        avg_num_neighbors: normalises neighbour sums in the backbones: a number, or ``auto``
            (mean over the training split).
        min_pair_distance: shortest pair distance seen in training, Å (set from the data); closer
            pairs trigger the calculator's extrapolation warning. null = unknown.
        target: what the model predicts: ``energy`` (a potential: energy, forces, stress) or a
            per-structure property (e.g. ``homo``; set from ``train.property`` in training).
        target_unit: unit of the target (``eV`` for an energy; for a property, the data's unit).
        target_readout: how per-atom outputs become the target (:mod:`equipot.potentials.readouts`):
            ``extensive`` (sum over atoms), ``intensive`` (mean over atoms), ``dipole`` (norm
            of an equivariant vector: predicted charges times positions, plus a vector read out
            of the orientations where the backbone has them), ``spatial_extent`` (per-atom
            weights times squared distances from the centre of nuclear charge, for <R^2>), or
            ``auto``: extensive for an energy, the property's default otherwise.
        backbone_options: the backbone's own options (written flat beside these fields).
    """

    backbone: str = "ponita"
    cutoff: float = 5.0
    elements: list[int] | None = None
    atomic_energies: Any = "auto"
    learn_atomic_energies: bool | None = None
    scale: Any = "rms_forces"
    shift: float = 0.0
    avg_num_neighbors: Any = "auto"
    min_pair_distance: float | None = None
    target: str = ENERGY
    target_unit: str = "eV"
    target_readout: str = "auto"
    backbone_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cutoff = check_cutoff(self.cutoff)
        if self.elements is not None:
            self.elements = [int(z) for z in self.elements]
            if not self.elements or len(set(self.elements)) != len(self.elements):
                raise ValueError(f"elements must be a non-empty list of distinct atomic numbers, got {self.elements}")
            if any(not 1 <= z <= 118 for z in self.elements):
                raise ValueError(f"elements: atomic numbers must be in 1..118, got {self.elements}")
        if self.target_readout not in ("auto", *READOUTS):
            raise ValueError(f"target_readout: {self.target_readout!r} is not one of auto, {', '.join(READOUTS)}")
        if not isinstance(self.target, str) or not self.target:
            raise ValueError(f"target: expected a property name or {ENERGY!r}, got {self.target!r}")
        if self.target == ENERGY and self.target_readout not in ("auto", "extensive"):
            raise ValueError(f"target_readout: an energy model (a potential) reads out the sum over atoms "
                             f"(extensive), not {self.target_readout!r}")
        for key, keywords in DATA_KEYWORDS.items():
            value = getattr(self, key)
            if isinstance(value, str):
                if value not in keywords:
                    raise ValueError(f"{key}: {value!r} is not a number or one of {', '.join(keywords)}")
            elif key == "atomic_energies":
                self.atomic_energies = _atomic_energies(value, self.elements)
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{key}: expected a number or {' / '.join(keywords)}, got {value!r}")
            else:
                setattr(self, key, float(value))

    # ------------------------------------------------------------------ resolution
    def unresolved(self) -> list[str]:
        """The fields still left to the training data (empty for a buildable model)."""
        out = ["elements"] if self.elements is None else []
        out += [k for k in DATA_KEYWORDS if isinstance(getattr(self, k), (str, dict))]
        return out + (["target_readout"] if self.target_readout == "auto" else [])

    def graph_builder(self) -> GraphBuilder:
        """How this model's graphs are built (its cutoff)."""
        return GraphBuilder(self.cutoff)

    @property
    def is_potential(self) -> bool:
        """True for an energy model (energy, forces, stress); False for a property model."""
        return self.target == ENERGY

    def learns_atomic_energies(self) -> bool:
        """``learn_atomic_energies`` with its default resolved (false for given energies, and for
        readouts without per-element references)."""
        if self.target_readout in NO_REFERENCES:
            return False
        if self.learn_atomic_energies is not None:
            return self.learn_atomic_energies
        return not isinstance(self.atomic_energies, dict)

    def reference_list(self) -> list[float]:
        """Per-element reference energies, eV, in ``elements`` order (zeros when not set)."""
        e0 = self.atomic_energies
        return [float(e) for e in e0] if isinstance(e0, list) else [0.0] * len(self.elements or [])

    # ------------------------------------------------------------------ flat form
    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> "PotentialConfig":
        """A config from its flat form (shared fields and backbone options side by side; nested
        ``backbone_options`` are accepted too), every value checked against its field's type.

        ValueError names the key (``model.<key>``) and lists the valid ones.
        """
        values = dict(values)
        options = dict(values.pop("backbone_options", None) or values.pop("options", None) or {})
        own = {f.name for f in dataclasses.fields(cls)}
        options.update({k: values.pop(k) for k in list(values) if k not in own})
        shared = coerce_fields(cls, values, "model", skip=("backbone_options",))
        backbone = shared.get("backbone", cls.backbone)
        try:
            option_cls = get_backbone(backbone)[1]
        except ValueError as exc:
            raise ValueError(f"model.backbone: {exc}") from None
        valid = [f.name for f in dataclasses.fields(option_cls)]
        unknown = [k for k in options if k not in valid]
        if unknown:
            hint = did_you_mean(unknown[0], [*valid, *own], "model")
            raise UnknownOption(f"unknown config key 'model.{unknown[0]}'{hint} (model keys: "
                             f"{', '.join(sorted(own - {'backbone_options'}))}; backbone '{backbone}' options: "
                             f"{', '.join(valid)})")
        shared["backbone_options"] = coerce_fields(option_cls, options, "model")
        try:
            return cls(**shared)
        except ValueError as exc:
            raise ValueError(f"model.{exc}") from None

    def to_flat(self) -> dict[str, Any]:
        """The flat form: every shared field, then every backbone option with its default filled in."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "backbone_options"}
        try:
            options = dataclasses.asdict(get_backbone(self.backbone)[1](**self.backbone_options))
        except (ValueError, TypeError):
            options = dict(self.backbone_options)
        return {**out, **options}


def _atomic_energies(value: Any, elements: list[int] | None) -> list[float] | dict[int, float] | None:
    """A list (one eV value per element), a mapping {Z: eV}, or None, checked."""
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            return {int(z): float(e) for z, e in value.items()}
        except (TypeError, ValueError):
            raise ValueError("atomic_energies: a mapping must be {atomic number: energy in eV}") from None
    if isinstance(value, (list, tuple)):
        try:
            energies = [float(e) for e in value]
        except (TypeError, ValueError):
            raise ValueError(f"atomic_energies: expected numbers (eV), got {value!r}") from None
        if elements is not None and len(energies) != len(elements):
            raise ValueError(f"atomic_energies has {len(energies)} entries for {len(elements)} elements")
        return energies
    raise ValueError(f"atomic_energies: expected auto, fit, zero, atomrefs, a mapping or a list, got {value!r}")
