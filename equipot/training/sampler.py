"""A seeded, resumable (and DDP-aware) sampler of training frames."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Frame indices for one epoch: a permutation seeded by ``(seed, epoch)``, split across ranks.

    Like ``torch.utils.data.DistributedSampler`` (the permutation is padded by repeating its head
    to a multiple of ``world_size`` and rank ``r`` takes positions ``r, r + W, ...``), so with a
    global batch B and local batches of B / W, the union over ranks of local batch k is exactly
    the single-process batch k. Unlike it, an epoch can start at a batch offset
    (:meth:`set_epoch`), which is how a resumed run continues in the middle of an epoch with the
    same data order as an uninterrupted run.
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if size < 1:
            raise ValueError("EpochSampler: the dataset is empty")
        self.size = int(size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self.start = 0

    def indices(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch`` (the whole epoch, ignoring the start offset)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = -(-self.size // self.world_size) * self.world_size
        order = (order * (total // len(order) + 1))[:total]
        return order[self.rank::self.world_size]

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch and skip its first ``start`` indices (of this rank)."""
        self.epoch = int(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices(self.epoch)[self.start:])

    def __len__(self) -> int:
        return max(0, -(-self.size // self.world_size) - self.start)
