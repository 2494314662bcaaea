"""Batches of :class:`~equipot.graph.AtomicGraph` from an :class:`~equipot.data.reader.H5Dataset`.

``collate`` turns a list of frames into one graph plus a dict of target tensors; it runs
inside the DataLoader workers, so the neighbour lists (matscipy, CPU) are built in
parallel with training.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..graph import AtomicGraph, GraphBuilder
from .schema import Frame


def _builder(graphs: GraphBuilder | float) -> GraphBuilder:
    return graphs if isinstance(graphs, GraphBuilder) else GraphBuilder(graphs)


def _tensor(values: np.ndarray, dtype: torch.dtype) -> Tensor:
    values = np.ascontiguousarray(values)
    if values.dtype.kind == "f":
        return torch.as_tensor(values, dtype=dtype)
    if values.dtype.kind == "b":
        return torch.as_tensor(values, dtype=torch.bool)
    return torch.as_tensor(values, dtype=torch.int64)


def collate(
    frames: Sequence[Frame],
    graphs: GraphBuilder | float,
    dtype: torch.dtype = torch.float64,
) -> tuple[AtomicGraph, dict[str, Tensor]]:
    """Batch frames into an :class:`AtomicGraph` built by ``graphs`` (a model's
    ``graph_builder()``, or a cutoff in Å) and targets.

    Targets, each present only when every frame has it:
    ``"energy"`` [B] eV, ``"forces"`` [N, 3] eV/Å, ``"stress"`` [B, 3, 3] eV/Å^3,
    per-frame properties [B] or [B, k, ...], per-atom properties [N] or [N, k, ...].
    Floating targets are cast to ``dtype``; integer and bool ones keep their kind.
    """
    if not frames:
        raise ValueError("collate: empty list of frames")
    graph = _builder(graphs)([(f.numbers, f.positions, f.cell, f.pbc) for f in frames], dtype=dtype)
    targets: dict[str, Tensor] = {}
    if all(f.energy is not None for f in frames):
        targets["energy"] = torch.tensor([f.energy for f in frames], dtype=dtype)
    if all(f.forces is not None for f in frames):
        targets["forces"] = _tensor(np.concatenate([f.forces for f in frames]), dtype)
    if all(f.stress is not None for f in frames):
        targets["stress"] = _tensor(np.stack([f.stress for f in frames]), dtype)
    for name in frames[0].properties:
        if all(name in f.properties for f in frames):
            targets[name] = _tensor(np.stack([f.properties[name] for f in frames]), dtype)
    for name in frames[0].atom_properties:
        if all(name in f.atom_properties for f in frames):
            targets[name] = _tensor(np.concatenate([f.atom_properties[name] for f in frames]), dtype)
    return graph, targets


class Collater:
    """Picklable ``collate_fn`` (a lambda would not reach spawned workers)."""

    def __init__(self, graphs: GraphBuilder | float, dtype: torch.dtype = torch.float64):
        self.graphs = _builder(graphs)
        self.dtype = dtype

    def __call__(self, frames: Sequence[Frame]) -> tuple[AtomicGraph, dict[str, Tensor]]:
        return collate(frames, self.graphs, self.dtype)


def _seed_worker(worker_id: int) -> None:
    # numpy's global RNG is copied into forked workers; give each its own stream.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


def make_loader(
    dataset: Dataset,
    graphs: GraphBuilder | float,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> DataLoader:
    """A DataLoader yielding ``(AtomicGraph, targets)`` batches (see :func:`collate`).

    ``graphs``: how the graphs are built, the model's ``graph_builder()`` (what training passes)
    or a cutoff in Å. ``shuffle`` uses a generator seeded with ``seed``, so the order is reproducible.
    With ``num_workers > 0`` each worker opens its own HDF5 handle and builds neighbour
    lists for its batches. ``sampler`` (e.g. a DistributedSampler) replaces ``shuffle``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=Collater(graphs, dtype),
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
    )
