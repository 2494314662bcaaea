"""AtomicGraph: one batch of structures as flat tensors; GraphBuilder: how a model's graphs are made.

Edges point from sender ``j`` (``edge_index[0]``) to
receiver ``i`` (``edge_index[1]``); the edge vector is
``positions[j] - positions[i] + edge_shift @ cell[batch[i]]`` in Å. Edges are kept
sorted by receiver so that segment (CSR) reductions need no sort per layer.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from .neighbors import check_cutoff, neighbor_list, torch_neighbor_list

#: Å: atoms closer than this are taken to be at the same position (see AtomicGraph.closest_pair)
COINCIDENT = 1e-8


@dataclass
class AtomicGraph:
    """A batch of B structures with N atoms and E directed edges in total.

    Attributes:
        positions: [N, 3] float, Å.
        numbers: [N] int64, atomic numbers.
        batch: [N] int64, structure index of each atom.
        cell: [B, 3, 3] float, Å, lattice vectors as rows (zeros where not periodic).
        pbc: [B, 3] bool.
        edge_index: [2, E] int64, (sender j, receiver i), sorted by receiver.
        edge_shift: [E, 3] float, integer cell shifts of the sender image.
        ptr: [B + 1] int64, atom offsets of each structure.
    """

    positions: Tensor
    numbers: Tensor
    batch: Tensor
    cell: Tensor
    pbc: Tensor
    edge_index: Tensor
    edge_shift: Tensor
    ptr: Tensor

    @property
    def num_graphs(self) -> int:
        return int(self.ptr.numel() - 1)

    @property
    def num_nodes(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "AtomicGraph":
        """Move to ``device``; floating fields (positions, cell, edge_shift) also cast to ``dtype``."""
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if t.is_floating_point():
                out[f.name] = t.to(device=device, dtype=dtype or t.dtype)
            else:
                out[f.name] = t.to(device=device)
        return AtomicGraph(**out)

    def replace(self, **changes: Tensor) -> "AtomicGraph":
        return replace(self, **changes)

    def closest_pair(self) -> tuple[int, int, int, float] | None:
        """(structure, atom i, atom j, distance Å) of the closest pair of the graph (periodic images
        included; atom indices within their structure), or None without edges. A distance below
        :data:`COINCIDENT` means atoms on top of each other: d|r|/dr is 0/0 there, and every backbone
        would give NaN forces without a word."""
        if self.num_edges == 0:
            return None
        lengths = self.edge_vectors().norm(dim=-1)
        k = int(lengths.argmin())
        j, i = self.edge_index[:, k].tolist()
        b = int(self.batch[i])
        first = int((self.batch < b).sum())
        return b, i - first, j - first, float(lengths[k])

    def edge_vectors(self, positions: Tensor | None = None, cell: Tensor | None = None) -> Tensor:
        """Edge vectors x_j - x_i + shift @ cell, [E, 3] Å.

        ``positions`` and ``cell`` default to the graph's own; pass strained ones
        to differentiate with respect to a strain (stress).
        """
        pos = self.positions if positions is None else positions
        cell = self.cell if cell is None else cell
        j, i = self.edge_index[0], self.edge_index[1]
        vec = pos[j] - pos[i]
        if self.edge_shift.numel():
            cell_e = cell[self.batch[i]]
            vec = vec + torch.einsum("ek,ekl->el", self.edge_shift.to(pos.dtype), cell_e)
        return vec

    def receiver_ptr(self) -> Tensor:
        """CSR offsets [N + 1] of the receiver-sorted edges."""
        counts = torch.bincount(self.edge_index[1], minlength=self.num_nodes)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    @classmethod
    def from_structures(
        cls,
        structures: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]],
        cutoff: float,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        neighbors: str = "matscipy",
        edges: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
    ) -> "AtomicGraph":
        """Build a batch from ``(numbers [n], positions [n, 3] Å, cell [3, 3] or None, pbc [3] or None)``.

        The one road from structures to graphs (data loader, calculator, training statistics,
        export). Neighbour lists within ``cutoff`` Å are built on the CPU with matscipy, or with
        ``neighbors="torch"`` on ``device`` (see :mod:`equipot.neighbors`). ``edges`` gives them
        instead, per structure ``(senders [e], receivers [e], shifts [e, 3])`` sorted by receiver
        (e.g. from a Verlet list); pairs at or beyond ``cutoff`` are dropped.
        """
        if neighbors not in ("matscipy", "torch"):
            raise ValueError(f"neighbors must be 'matscipy' or 'torch', got {neighbors!r}")
        pos, num, batch, cells, pbcs, senders, receivers, shifts = [], [], [], [], [], [], [], []
        offset = 0
        for b, (numbers, positions, cell, pbc) in enumerate(structures):
            numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
            positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
            cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64).reshape(3, 3)
            pbc = np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(3)
            pos.append(positions)
            num.append(numbers)
            batch.append(np.full(len(numbers), b, dtype=np.int64))
            cells.append(cell)
            pbcs.append(pbc)
            if neighbors == "matscipy":
                if edges is None:
                    j, i, s = neighbor_list(positions, cutoff, cell=cell, pbc=pbc)
                else:
                    j, i, s = (np.asarray(a) for a in edges[b])
                    vec = positions[j] - positions[i] + s @ cell
                    keep = np.einsum("ij,ij->i", vec, vec) < cutoff ** 2
                    j, i, s = j[keep], i[keep], s[keep]
                senders.append(j + offset)
                receivers.append(i + offset)
                shifts.append(s)
            offset += len(numbers)
        counts = [len(n) for n in num]
        t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)  # noqa: E731
        graph = cls(
            positions=t(np.concatenate(pos) if pos else np.zeros((0, 3)), dtype),
            numbers=t(np.concatenate(num) if num else np.zeros(0), torch.int64),
            batch=t(np.concatenate(batch) if batch else np.zeros(0), torch.int64),
            cell=t(np.stack(cells) if cells else np.zeros((0, 3, 3)), dtype),
            pbc=t(np.stack(pbcs) if pbcs else np.zeros((0, 3)), torch.bool),
            edge_index=t(np.stack([np.concatenate(senders), np.concatenate(receivers)])
                         if senders else np.zeros((2, 0)), torch.int64),
            edge_shift=t(np.concatenate(shifts) if shifts else np.zeros((0, 3)), dtype),
            ptr=t(np.concatenate([[0], np.cumsum(counts)]), torch.int64),
        )
        if neighbors == "torch":
            edge_index, edge_shift = torch_neighbor_list(graph.positions, cutoff, graph.batch, graph.cell,
                                                         graph.pbc)
            graph = graph.replace(edge_index=edge_index, edge_shift=edge_shift.to(dtype))
        return graph

    @classmethod
    def from_atoms(
        cls,
        atoms: "ase.Atoms | Iterable[ase.Atoms]",  # noqa: F821
        cutoff: float,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> "AtomicGraph":
        """Build a batch from one ``ase.Atoms`` or an iterable of them."""
        from ase import Atoms

        items = [atoms] if isinstance(atoms, Atoms) else list(atoms)
        return cls.from_structures(
            [(a.numbers, a.positions, a.cell.array, a.pbc) for a in items], cutoff, dtype=dtype, device=device
        )


@dataclass(frozen=True)
class GraphBuilder:
    """How the graphs of one model are built: an edge to every neighbour (periodic images
    included) closer than ``cutoff`` Å, through :meth:`AtomicGraph.from_structures`.

    A model gives its own (``PotentialConfig.graph_builder()``, ``Potential.graph_builder()``),
    so the data loader, the training statistics, evaluation, ``EquiCalc`` and export build the
    graphs that model was made for without being told its cutoff. Picklable, for DataLoader
    workers.
    """

    cutoff: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "cutoff", check_cutoff(self.cutoff))

    def __call__(
        self,
        structures: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]],
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        neighbors: str = "matscipy",
        edges: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
    ) -> AtomicGraph:
        """A batch of ``(numbers [n], positions [n, 3] Å, cell [3, 3] or None, pbc [3] or None)``;
        ``neighbors`` and ``edges`` as in :meth:`AtomicGraph.from_structures`."""
        return AtomicGraph.from_structures(structures, self.cutoff, dtype, device, neighbors, edges)
