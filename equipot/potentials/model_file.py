"""Model files: a :class:`Potential`'s config and weights, read without running code from the file.

A file is a ``torch.save`` of plain values: ``{"format": "equipot.model", "version": int,
"config": PotentialConfig as a dict, "state_dict": tensors}``, so it loads with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from ..safe_write import atomic_write
from .base import Potential, PotentialConfig
from .registry import get_backbone

MODEL_FORMAT = "equipot.model"
MODEL_VERSION = 2  # 2: backbone options may need their 0.1 defaults (see _upgrade_options)


def save_model(model: Potential, path: str | os.PathLike) -> None:
    """Write weights + config to ``path`` atomically (``path.tmp`` then rename).

    The file holds only tensors and plain Python values, so :func:`load_model` reads it
    with ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "config": asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def _upgrade_options(backbone: str, options: dict[str, Any], version: int) -> dict[str, Any]:
    """Backbone options of a file of model format ``version``, completed with the defaults of its time.

    Files store only the options that were given; a backbone whose defaults changed since says
    what they were through its config class's ``legacy_options(options)`` (format 1 = equipot 0.1).
    """
    config_cls = get_backbone(backbone)[1]
    if version < 2 and hasattr(config_cls, "legacy_options"):
        return config_cls.legacy_options(dict(options))
    return options


def load_model(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> Potential:
    """Load a model written by :func:`save_model`. Never runs code from the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # the unpickler's errors name the offending global
        raise ValueError(f"{path} is not a loadable equipot model file: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not an equipot model file (no format marker)")
    if payload.get("version", 0) > MODEL_VERSION:
        raise ValueError(f"{path} was written by a newer equipot (model format {payload['version']})")
    known = {f.name for f in fields(PotentialConfig)}
    config = PotentialConfig(**{k: v for k, v in payload["config"].items() if k in known})
    config.backbone_options = _upgrade_options(config.backbone, config.backbone_options, payload.get("version", 0))
    model = Potential(config)
    state = payload["state_dict"]
    dtype = next((v.dtype for k, v in state.items() if k.startswith("backbone.") and v.is_floating_point()),
                 torch.float32)
    model.to(dtype)
    if "energy_correction" not in state:  # files written before the correction existed
        state = {**state, "energy_correction": torch.zeros_like(model.energy_correction)}
    model.load_state_dict(state)
    return model
