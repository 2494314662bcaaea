"""Model files: a :class:`Potential`'s config and weights, read without running code from the file.

A file is a ``torch.save`` of plain values: ``{"format": "equipot.model", "version": int,
"config": PotentialConfig as a dict, "state_dict": tensors}``, so it loads with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..safe_write import atomic_write
from .base import Potential, PotentialConfig
from .registry import get_backbone

MODEL_FORMAT = "equipot.model"
# 2: backbone options may need their 0.1 defaults (see _upgrade_options); 3: the config records the
# target (energy or a property), its unit and its readout; older files are energy models;
# 4: the ponita "auto" grids include the geodesic ones (older files keep the grids of their time).
MODEL_VERSION = 4


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
    what they were through its config class's ``upgrade_options(options, version)``.
    """
    config_cls = get_backbone(backbone)[1]
    if version < MODEL_VERSION and hasattr(config_cls, "upgrade_options"):
        return config_cls.upgrade_options(dict(options), version)
    return options


def _other_writers(path: Path) -> list[int]:
    """Process ids that hold ``path`` open, other than this one (Linux /proc; empty elsewhere)."""
    target = os.path.realpath(path)
    pids = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if int(fd_dir.parent.name) != os.getpid() and any(
                    os.path.realpath(fd) == target for fd in fd_dir.iterdir()):
                pids.append(int(fd_dir.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def _is_utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 4  # a character cut by the 4096-byte window
    return True


def _not_a_model(path: Path, exc: Exception) -> ValueError:
    """Why ``path`` could not be read as a model file, in words that never suggest turning safety off."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    what = ("a model file is what `equipot train` writes (RUN_DIR/model.pt) or `equipot.save_model` saves")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return ValueError(f"{path} is an HDF5 dataset, not a model file; {what}")
    if head.startswith(b"PK") and b".data/" not in head and (b"archive_format" in head or b"serialized_" in head
                                                               or path.suffix == ".pt2"):
        return ValueError(f"{path} is an exported program (equipot export), not a model file; load it with "
                          f"torch.export.load; {what}")
    if head and not head.startswith(b"PK") and b"\0" not in head and _is_utf8(head):
        return ValueError(f"{path} is a text file (a structure or config?), not a model file; {what}")
    pids = _other_writers(path)
    if pids:
        return ValueError(f"{path} cannot be read now: process {pids[0]} has it open (is it still being "
                          f"written?); try again when that process is done")
    text = str(exc).split("\n")[0]
    if "weights_only" in str(exc) or "Unsupported global" in str(exc):
        return ValueError(f"{path} holds Python objects that an equipot model file never contains; they were "
                          f"refused without being run; {what}")
    return ValueError(f"{path}: not a readable model file, truncated or corrupt ({text})")


def _check_payload(path: Path, payload: Any) -> dict[str, Any]:
    """The payload's config dict, after checking the file's structure (ValueError naming the file)."""
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not an equipot model file (no format marker)")
    version = payload.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{path}: model format version must be an integer, got {version!r}")
    if version > MODEL_VERSION:
        raise ValueError(f"{path} was written by a newer equipot (model format {version}; this one reads up to "
                         f"{MODEL_VERSION})")
    config = payload.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the model file has no config mapping (found {type(config).__name__})")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: the model file has no state_dict of tensors")
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{path}: weight '{key}' holds NaN or inf; the model cannot give finite energies")
    return config


class _AllocationBudget(TorchFunctionMode):
    """Refuses, before any allocation, tensor creations that add up to more than ``limit`` bytes: a
    small file can declare a model of gigabytes (hidden=20000), and the shapes are only compared with
    the file's weights after the model is built."""

    _FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.randn, torch.rand, torch.full}

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.total = limit, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._FACTORIES and args:
            shape = args[0] if func is torch.full or isinstance(args[0], (tuple, list, torch.Size)) else args
            if all(isinstance(n, int) for n in shape):
                itemsize = (kwargs.get("dtype") or torch.get_default_dtype()).itemsize
                self.total += max(math.prod(shape), 0) * itemsize
            if self.total > self.limit:
                raise ValueError(f"it describes a model of more than {self.limit / 2**20:.0f} MiB, far more than "
                                 f"the weights the file holds (a damaged file, or not an equipot model)")
        return func(*args, **kwargs)


def load_model(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> Potential:
    """Load a model written by :func:`save_model`. Never runs code from the file.

    Every way a file can fail to be a usable model is a ValueError naming the file and what is
    wrong with it (another kind of file, a damaged file, weights that do not fit the config,
    non-finite weights or reference energies).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a model file (a run directory holds model.pt)")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # the unpickler fails in many ways; the file, not equipot, is at fault
        raise _not_a_model(path, exc) from None
    values = _check_payload(path, payload)
    known = {f.name for f in fields(PotentialConfig)}
    if payload.get("version", 0) < 3:
        values = {**values, "target_readout": "extensive"}  # before format 3 every model was a potential
    try:
        config = PotentialConfig(**{k: v for k, v in values.items() if k in known})
        config.backbone_options = _upgrade_options(config.backbone, config.backbone_options,
                                                   payload.get("version", 0))
        if config.unresolved():
            raise ValueError(f"fields {', '.join(config.unresolved())} are not set")
        numbers = [config.scale, config.shift, *config.reference_list()]
        if not all(math.isfinite(float(x)) for x in numbers):
            raise ValueError("scale, shift or reference energies are NaN or inf")
        stored = sum(v.numel() * v.element_size() for v in payload["state_dict"].values())
        with _AllocationBudget(4 * stored + (256 << 20)):  # weights in float64 at most, grids, caches
            model = Potential(config)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: the model config is not valid: {exc}") from None
    state = payload["state_dict"]
    dtype = next((v.dtype for k, v in state.items() if k.startswith("backbone.") and v.is_floating_point()),
                 torch.float32)
    model.to(dtype)
    if "energy_correction" not in state:  # files written before the correction existed
        state = {**state, "energy_correction": torch.zeros_like(model.energy_correction)}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split("\n")[1:2]).strip() or str(exc).split("\n")[0]
        raise ValueError(f"{path}: the weights do not fit the model its config describes ({detail})") from None
    return model
