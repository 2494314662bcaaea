"""Training checkpoints: everything needed to continue a run bit for bit.

A checkpoint holds the model, EMA, optimiser and schedule states, the step/epoch/batch
position in the data order, the best score and early-stopping counter, the random-number
generator states (torch, CUDA, numpy, Python) and the elapsed training time. It contains only
tensors and plain Python values, so it is read with ``torch.load(weights_only=True)``.
Files are written atomically (``name.tmp`` then ``os.replace``).
"""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..safe_write import atomic_write
from .config import RESUME_KEYS, DataSection

CHECKPOINT_FORMAT = "equipot.checkpoint"
CHECKPOINT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """The global RNG states as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_lists(obj):
    if isinstance(obj, tuple):
        return [_to_lists(x) for x in obj]
    return obj


def _to_tuples(obj):
    if isinstance(obj, list):
        return tuple(_to_tuples(x) for x in obj)
    return obj


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path.tmp`` then rename, so a crash never leaves a half-written file."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    atomic_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (FileNotFoundError / ValueError naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch's text can advise weights_only=False: never pass that on
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text:
            raise ValueError(f"{path} is not an equipot checkpoint: it holds Python objects that an equipot "
                             f"checkpoint never contains; they were refused without being run") from None
        raise ValueError(f"{path} is not a readable checkpoint (truncated or corrupt: "
                         f"{text.splitlines()[0] if text else type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an equipot training checkpoint")
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{path} was written by a newer equipot (checkpoint format {state['version']})")
    return state


def data_fingerprints(data: DataSection) -> dict[str, str]:
    """:func:`file_fingerprint` of each data file of a run (train, valid, test), by path."""
    paths = {getattr(data, key) for key in ("train_file", "valid_file", "test_file") if getattr(data, key)}
    return {p: file_fingerprint(p) for p in sorted(paths)}


def check_same_run(state: dict[str, Any], config: dict[str, Any], fingerprints: dict[str, str],
                   checkpoint_path: Path, config_path: Path) -> None:
    """ValueError unless checkpoint ``state`` was written by the run whose config (``config``, as
    :func:`~equipot.training.config.config_to_dict` gives it, read from ``config_path``) is being resumed,
    on the same data files (``fingerprints`` now): a checkpoint copied from another run, or a data file
    replaced since the stop. What a resume may change (RESUME_KEYS, the run folder) is not compared."""
    saved = state.get("config") or {}
    for section, values in config.items():
        for key, value in values.items():
            name = f"{section}.{key}"
            if name in RESUME_KEYS or name == "train.run_dir":
                continue
            if key in saved.get(section, {}) and saved[section][key] != value:
                raise ValueError(f"{checkpoint_path} belongs to another run: its {name} is {saved[section][key]!r}, "
                                 f"{config_path} says {value!r}; resume the run it came from, or start a new one")
    for path, fingerprint in (state.get("data_files") or {}).items():
        if fingerprints.get(path, fingerprint) != fingerprint:
            raise ValueError(f"{path} has changed since {checkpoint_path} was written (another size or content); "
                             f"a resumed run must see the data it was trained on: restore the file, or start a "
                             f"new run")


def file_fingerprint(path: str | os.PathLike) -> str:
    """``"<size>:<sha256>"`` of a data file: a resumed run checks that its data did not change."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return f"{os.path.getsize(path)}:{digest.hexdigest()}"
