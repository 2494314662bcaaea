"""equipot: equivariant machine-learning interatomic potentials.

Public API::

    from equipot import EquiCalc, build_potential, load_model, save_model
    atoms.calc = EquiCalc(load_model("model.pt"))
"""
from .calculators.ase import EquiCalc
from .graph import AtomicGraph
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

__version__ = "0.1.0"

__all__ = [
    "AtomicGraph",
    "EquiCalc",
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
