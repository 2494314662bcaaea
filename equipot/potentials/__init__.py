"""Potentials: the shared :class:`Potential` wrapper and the registered backbones."""
from .base import Potential, PotentialConfig, build_potential
from .model_file import load_model, save_model
from .radial import RadialRange
from .registry import Backbone, available_backbones, get_backbone, register_backbone

__all__ = [
    "Backbone",
    "Potential",
    "PotentialConfig",
    "RadialRange",
    "load_model",
    "save_model",
    "available_backbones",
    "build_potential",
    "get_backbone",
    "register_backbone",
]
