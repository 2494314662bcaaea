"""Registry of energy backbones, by name, each with the dataclass that configures it.

The contract a backbone meets is :class:`Backbone`; ``tests/potentials/test_backbone_contract.py``
checks every registered one against it.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
from typing import Any, Callable, Protocol, runtime_checkable

from torch import Tensor

from .radial import RadialRange


@runtime_checkable
class Backbone(Protocol):
    """What :class:`~equipot.potentials.base.Potential` asks of a backbone (an ``nn.Module``).

    Built as ``cls(config, num_species, radial_range, avg_num_neighbors)``: ``config`` an instance
    of the dataclass registered with it, ``radial_range`` a
    :class:`~equipot.potentials.radial.RadialRange` (the cutoff in Å, as a float, with the
    radial bases and envelope on it). The Potential adds reference energies, scale and shift,
    subtracts the isolated-atom output, and takes forces and stress by autograd, so a backbone
    only maps a batch to per-atom energies. It must be smooth in ``edge_vec`` and go to zero
    smoothly at the cutoff (``radial_range.envelope``; forces are continuous), and must accept
    a graph without edges (isolated atoms).

    Optional attribute ``message_passing_hops`` (int): the backbone is local, i.e. atom i's
    energy depends only on the species and the edge vectors within that many edge hops of i,
    never on ``positions``, ``batch`` or an atom's place in the batch (a message-passing
    network with that many rounds). The LAMMPS interface (:mod:`equipot.interfaces.lammps`)
    needs it to know how deep ghost atoms must reach; backbones without it do not run there.
    """

    def __init__(self, config: Any, num_species: int, radial_range: RadialRange, avg_num_neighbors: float) -> None:
        ...

    def forward(self, species: Tensor, positions: Tensor, edge_index: Tensor, edge_vec: Tensor, batch: Tensor,
                num_graphs: int) -> Tensor:
        """species [N] int64 species indices, positions [N, 3] Å, edge_index [2, E] (sender,
        receiver), edge_vec [E, 3] Å (sender minus receiver, periodic shift included),
        batch [N] structure of each atom -> per-atom energies [N] (before scale and shift)."""
        ...

def check_option_ranges(config: Any) -> None:
    """ValueError naming the first option of a backbone config (a dataclass) that is out of range:
    an integer below 1 (below 0 for a field whose default is 0 or that the class lists in
    ``ZERO_ALLOWED``; ``seed`` is free), or a float that is NaN or inf."""
    zero_allowed = getattr(config, "ZERO_ALLOWED", ())
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, bool) or f.name == "seed":
            continue
        if isinstance(value, int):
            low = 0 if f.name in zero_allowed or f.default == 0 else 1
            if value < low:
                raise ValueError(f"model.{f.name} must be an integer >= {low}, got {value}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"model.{f.name} must be a finite number, got {value}")


_BACKBONES: dict[str, tuple[type, type]] = {}

# Modules that register backbones when imported; imported on first lookup so that
# `import equipot` stays cheap and a broken optional backbone cannot break the others.
_BUILTIN_MODULES = (
    "equipot.potentials.ponita",
    "equipot.potentials.lieconv",
    "equipot.potentials.frame_averaging",
    "equipot.potentials.ga_attention",
    "equipot.potentials.grepsnet",
)
_loaded = False


def register_backbone(name: str, config_cls: type) -> Callable[[type], type]:
    """Class decorator: register the :class:`Backbone` ``cls`` under ``name``, configured by the
    dataclass ``config_cls``."""

    def deco(cls: type) -> type:
        if name in _BACKBONES and _BACKBONES[name][0] is not cls:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = (cls, config_cls)
        return cls

    return deco


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


def get_backbone(name: str) -> tuple[type, type]:
    """(backbone class, config dataclass) registered under ``name``."""
    _load_builtins()
    try:
        return _BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(_BACKBONES))}") from None


def available_backbones() -> list[str]:
    """Names of all registered backbones."""
    _load_builtins()
    return sorted(_BACKBONES)
