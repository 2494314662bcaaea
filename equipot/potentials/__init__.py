"""Potentials: the shared :class:`Potential` wrapper and the registered backbones."""
from .base import Potential, PotentialConfig, load_model, save_model
from .registry import available_backbones, build_potential, get_backbone, register_backbone

__all__ = [
    "Potential",
    "PotentialConfig",
    "load_model",
    "save_model",
    "available_backbones",
    "build_potential",
    "get_backbone",
    "register_backbone",
]
