"""What one MPI rank of a domain-decomposed run sees, and how deep its ghost atoms reach.

A rank holds its local atoms (indices ``0 .. nlocal-1``) and ghost atoms (copies of atoms owned
by other ranks, or periodic images, ``nlocal .. num_atoms-1``), and a full neighbour list given
as pairs: ``receiver`` (atom i), ``sender`` (neighbour j) and ``vectors`` = x_j - x_i (Å).
With LAMMPS's ``ghostneigh`` the ghost atoms have neighbour lists too.

A model with k rounds of message passing gives a local atom's energy exactly when every atom
within k - 1 edge hops of it has its complete neighbourhood: the ghost atoms must reach
k × cutoff beyond the rank's domain. :func:`hop_distances` and :func:`needed_atoms` cut the
rank's graph down to what its local energies depend on; :func:`ghost_shell_depth` estimates how
deep the ghost atoms reach, for the check that the LAMMPS input asked for enough.
"""
from __future__ import annotations

import numpy as np

#: A ghost shell is "closed" when the atoms reach more than CLOSED_REACH cutoffs beyond the local
#: atoms in at least CLOSED_FACES of the six directions ±x, ±y, ±z: bulk (6), slabs (5 at a
#: surface). LAMMPS's ghost atoms always reach one cutoff plus the skin, so in bulk every
#: direction passes 0.75 cutoff even with a small skin. A molecule or cluster split between ranks
#: reaches across its few cut faces only (1-3), and there a shallow shell can be the end of the
#: molecule, so it is not judged.
CLOSED_FACES = 5
CLOSED_REACH = 0.75


def hop_distances(num_atoms: int, nlocal: int, receiver: np.ndarray, sender: np.ndarray, max_hops: int) -> np.ndarray:
    """Edge hops [num_atoms] from the nearest local atom: 0 for local atoms, ``max_hops + 1`` for
    atoms farther than ``max_hops`` (or not connected)."""
    hops = np.full(num_atoms, max_hops + 1, dtype=np.int64)
    hops[:nlocal] = 0
    for k in range(1, max_hops + 1):
        reached = sender[hops[receiver] == k - 1]
        hops[reached[hops[reached] > k]] = k
    return hops


def needed_atoms(hops: np.ndarray, receiver: np.ndarray, max_hops: int) -> tuple[np.ndarray, np.ndarray]:
    """(atoms [M], pairs [P]): the atoms and pairs the local atoms' energies depend on, for a model
    of ``max_hops`` rounds: atoms within ``max_hops`` hops (sorted, so the local atoms come
    first), pairs whose receiver is within ``max_hops - 1`` hops."""
    return np.flatnonzero(hops <= max_hops), np.flatnonzero(hops[receiver] <= max_hops - 1)


def _csr(receiver: np.ndarray, num_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """(ptr [num_atoms + 1], order [P]): pair ids grouped by receiver."""
    order = np.argsort(receiver, kind="stable")
    ptr = np.zeros(num_atoms + 1, dtype=np.int64)
    np.cumsum(np.bincount(receiver, minlength=num_atoms), out=ptr[1:])
    return ptr, order


def _pairs_of(atoms: np.ndarray, ptr: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Ids of the pairs whose receiver is in ``atoms``."""
    start = ptr[atoms]
    count = ptr[atoms + 1] - start
    total = int(count.sum())
    first = np.repeat(start - (np.cumsum(count) - count), count)
    return order[first + np.arange(total)]


def ghost_shell_depth(num_atoms: int, nlocal: int, receiver: np.ndarray, sender: np.ndarray, vectors: np.ndarray,
                      cutoff: float) -> float | None:
    """How far (Å) the atoms of a closed ghost shell reach beyond the local atoms, or None.

    Positions are rebuilt from the pair vectors along a breadth-first tree of each connected
    group of atoms that holds local atoms. For each group the reach in each of the directions
    ±x, ±y, ±z is how far its atoms extend beyond the bounding box of its local atoms. When at
    least :data:`CLOSED_FACES` directions reach past :data:`CLOSED_REACH` × ``cutoff`` (the group is surrounded by
    ghost atoms, as in bulk, where LAMMPS's ghost region is the domain grown by the
    communication cutoff), the largest reach estimates that cutoff from below to within about
    one interatomic distance; the smallest such value over the groups is returned. None: no
    group is closed (a molecule, or no ghost atoms), so the depth cannot be judged from the
    atoms alone.
    """
    if nlocal == 0 or receiver.size == 0:
        return None
    ptr, order = _csr(receiver, num_atoms)
    reached = np.zeros(num_atoms, dtype=bool)
    position = np.zeros((num_atoms, 3))
    depth = None
    for root in range(nlocal):
        if reached[root]:
            continue
        reached[root] = True
        members = [np.array([root])]
        frontier = members[0]
        while frontier.size:
            pairs = _pairs_of(frontier, ptr, order)
            new = ~reached[sender[pairs]]
            atoms, first = np.unique(sender[pairs[new]], return_index=True)
            pairs = pairs[new][first]
            position[atoms] = position[receiver[pairs]] + vectors[pairs]
            reached[atoms] = True
            members.append(atoms)
            frontier = atoms
        group = np.concatenate(members)
        local = position[group[group < nlocal]]
        every = position[group]
        reach = np.concatenate([local.min(0) - every.min(0), every.max(0) - local.max(0)])
        if int((reach > CLOSED_REACH * cutoff).sum()) >= CLOSED_FACES:
            depth = float(reach.max()) if depth is None else min(depth, float(reach.max()))
    return depth
