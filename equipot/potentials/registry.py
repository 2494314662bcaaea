"""Registry of energy backbones, by name, each with the dataclass that configures it."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable

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
    """Class decorator: register a backbone under ``name``, configured by the dataclass ``config_cls``.

    A backbone is an ``nn.Module`` built as ``cls(config, num_species, cutoff, avg_num_neighbors)``
    whose ``forward(species [N], positions [N, 3], edge_index [2, E], edge_vec [E, 3], batch [N],
    num_graphs)`` returns per-atom energies [N] (before scale and shift).
    """

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


def build_potential(
    backbone: str = "ponita",
    elements: tuple[int, ...] | list[int] = (1, 6, 7, 8),
    cutoff: float = 5.0,
    **options: Any,
) -> "Potential":  # noqa: F821
    """Build a :class:`Potential` with the named backbone.

    Keyword options that are fields of :class:`PotentialConfig` (``atomic_energies``, ``scale``,
    ``shift``, ``avg_num_neighbors``, ``min_pair_distance``) go there; the rest configure the
    backbone's dataclass (e.g. ``hidden=64, layers=3, grid_size=12`` for ``ponita``).
    """
    from dataclasses import fields

    from .base import Potential, PotentialConfig

    pot_fields = {f.name for f in fields(PotentialConfig)}
    pot_kwargs = {k: v for k, v in options.items() if k in pot_fields}
    backbone_options = {k: v for k, v in options.items() if k not in pot_fields}
    config = PotentialConfig(
        backbone=backbone, elements=list(elements), cutoff=cutoff, backbone_options=backbone_options, **pot_kwargs
    )
    return Potential(config)
