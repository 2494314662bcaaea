"""Datasets of a training run (splits from the config), their checks and their training targets."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.reader import H5Dataset
from ..data.split import random_split
from ..graph import COINCIDENT
from .config import DataSection


@dataclass
class Splits:
    """Training, validation (may be None) and test (may be None) datasets."""

    train: H5Dataset
    valid: H5Dataset | None
    test: H5Dataset | None


def _open(path: str | None, split: str | None, what: str) -> H5Dataset:
    if path is None:
        raise ValueError(f"data.{what}_file is not set")
    if Path(path).is_dir():
        raise IsADirectoryError(f"data.{what}_file: {path} is a folder, not a file")
    if not Path(path).is_file():
        raise FileNotFoundError(f"data.{what}_file: {path} does not exist")
    return H5Dataset(path, split=split)


def _cap(dataset: H5Dataset, n: int | None, seed: int) -> H5Dataset:
    if n is None or n >= len(dataset):
        return dataset
    perm = np.random.default_rng(seed).permutation(len(dataset))[:n]
    return dataset.subset(np.sort(perm))


def build_splits(cfg: DataSection) -> Splits:
    """The datasets the config names (see :class:`~equipot.training.config.DataSection`).

    Validation frames come from ``valid_file``/``valid_split`` when given, otherwise
    ``valid_size`` frames (a fraction when < 1) are drawn from the training frames with ``seed``;
    ``n_train``/``n_valid`` then cap the sizes with seeded random subsets.
    """
    pool = _open(cfg.train_file, cfg.train_split, "train")
    if cfg.valid_file is not None or cfg.valid_split is not None:
        valid = _open(cfg.valid_file or cfg.train_file, cfg.valid_split, "valid")
        train = pool
    elif cfg.valid_size > 0:
        n_valid = int(round(cfg.valid_size * len(pool))) if cfg.valid_size < 1 else int(cfg.valid_size)
        n_valid = max(1, n_valid)
        if n_valid >= len(pool):
            raise ValueError(f"data.valid_size: {cfg.valid_size} leaves no training frames out of {len(pool)}")
        train, valid = random_split(pool, [len(pool) - n_valid, n_valid], seed=cfg.seed)
    else:
        train, valid = pool, None
    train = _cap(train, cfg.n_train, cfg.seed + 1)
    if valid is not None:
        valid = _cap(valid, cfg.n_valid, cfg.seed + 2)
    test = None
    if cfg.test_file is not None or cfg.test_split is not None:
        test = _open(cfg.test_file or cfg.train_file, cfg.test_split, "test")
    if len(train) == 0:
        raise ValueError(f"{cfg.train_file}: no training frames (split {cfg.train_split!r})")
    return Splits(train, valid if valid is None or len(valid) else None, test)


def check_dataset_elements(dataset: H5Dataset, elements: Sequence[int], what: str) -> None:
    """ValueError naming the first frame with an element outside ``elements``."""
    allowed = set(int(z) for z in elements)
    for k, numbers in enumerate(dataset.numbers_per_frame()):
        bad = [int(z) for z in np.unique(numbers) if int(z) not in allowed]
        if bad:
            raise ValueError(
                f"{dataset.path}: {what} frame {k} contains element Z={bad[0]}, which is not in "
                f"model.elements {sorted(allowed)}"
            )


def check_targets(dataset: H5Dataset, property_name: str | None, what: str) -> None:
    """ValueError when ``dataset`` lacks what the loss needs, or a frame has no atoms or
    non-finite labels (naming file, field and frame)."""
    if property_name is not None:
        if property_name not in dataset.property_names():
            known = ", ".join(dataset.property_names()) or "none"
            raise ValueError(f"{dataset.path}: {what} data has no property '{property_name}' (properties: {known})")
        info = dataset.property_info().get(property_name, {})
        shape = tuple(info.get("shape", ()))
        if info.get("per_atom") or (shape and int(np.prod(shape)) != 1):
            raise ValueError(f"{dataset.path}: property '{property_name}' is not one number per structure "
                             f"(shape {shape}); only scalar properties can be trained")
    elif not dataset.has("energy") and not dataset.has("forces"):
        raise ValueError(f"{dataset.path}: {what} data has neither energy nor forces to train on")
    dataset.check_labels(property_name)


def target_values(dataset: H5Dataset, property_name: str | None) -> np.ndarray | None:
    """Per-structure training targets (energies in eV, or the property) or None."""
    if property_name is not None:
        return np.asarray(dataset.property_values(property_name), dtype=np.float64).reshape(len(dataset))
    if dataset.has("energy"):
        return dataset.energies()
    return None


def check_no_coincident_atoms(graph, dataset: H5Dataset, frames: np.ndarray) -> float | None:
    """The graph's shortest pair distance (Å; None without edges), after a ValueError naming the file,
    frame and atoms when two atoms of the graph (its structures being ``dataset``'s frames ``frames``,
    positions into the dataset) sit on top of each other: their forces would be NaN (and every metric
    after them)."""
    pair = graph.closest_pair()
    if pair is not None and pair[3] < COINCIDENT:
        frame = int(dataset.indices[int(frames[pair[0]])])
        raise ValueError(f"{dataset.path}: frame {frame}: atoms {pair[1]} and {pair[2]} are at the same position "
                         f"({pair[3]:.1e} Å apart); remove or fix that frame")
    return None if pair is None else pair[3]
