"""equipot: equivariant machine-learning interatomic potentials.

Public API::

    from equipot import EquiCalc, build_potential, load_model, save_model
    atoms.calc = EquiCalc(load_model("model.pt"))

The names are imported on first use, so ``import equipot.cli`` (the ``equipot`` command) and the
data package start without torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.1"

_EXPORTS = {
    "AtomicGraph": "equipot.graph",
    "EquiCalc": "equipot.calculators.ase",
    "GraphBuilder": "equipot.graph",
    "Potential": "equipot.potentials",
    "PotentialConfig": "equipot.potentials",
    "available_backbones": "equipot.potentials",
    "build_potential": "equipot.potentials",
    "get_backbone": "equipot.potentials",
    "load_model": "equipot.potentials",
    "register_backbone": "equipot.potentials",
    "save_model": "equipot.potentials",
}

__all__ = [
    "AtomicGraph",
    "EquiCalc",
    "GraphBuilder",
    "Potential",
    "PotentialConfig",
    "available_backbones",
    "build_potential",
    "get_backbone",
    "load_model",
    "register_backbone",
    "save_model",
    "__version__",
]

if TYPE_CHECKING:
    from .calculators.ase import EquiCalc
    from .graph import AtomicGraph, GraphBuilder
    from .potentials import (
        Potential,
        PotentialConfig,
        available_backbones,
        build_potential,
        get_backbone,
        load_model,
        register_backbone,
        save_model,
    )


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'equipot' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
