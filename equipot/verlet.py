"""A neighbour list with a Verlet skin, rebuilt only when atoms have moved far enough (MD, relaxations).

Edges follow the conventions of :mod:`equipot.neighbors`.
"""
from __future__ import annotations

import math

import numpy as np

from .neighbors import as_pbc, check_cutoff, effective_cells, neighbor_list


class VerletList:
    """Neighbour list with a Verlet skin, for MD and geometry optimisation.

    The list is built (with :func:`neighbor_list`) for ``cutoff + skin`` and reused until some atom
    has moved more than ``skin / 2`` from where it was at the last build; until then every pair
    closer than ``cutoff`` is guaranteed to be in the list. The returned list therefore also holds
    pairs between ``cutoff`` and ``cutoff + skin``: models must (and equipot's do) weight edges by
    a smooth cutoff envelope that is exactly zero beyond ``cutoff``, so these extra edges change
    nothing but cost.

    A change in the number of atoms, the atomic numbers, the cell or pbc forces a rebuild. An atom
    that jumps by a lattice vector along a periodic direction (ASE wrapping it back into the cell)
    does not: its jump is taken out of the displacement and put into the returned shifts, so the
    edge vectors stay right.

    Attributes:
        cutoff: Å. skin: Å. rebuilds: number of builds so far.
    """

    def __init__(self, cutoff: float, skin: float = 0.5) -> None:
        self.cutoff = check_cutoff(cutoff)
        skin = float(skin)
        if not math.isfinite(skin) or skin < 0.0:
            raise ValueError(f"skin must be a finite distance >= 0 Å, got {skin!r}")
        self.skin = skin
        self.rebuilds = 0
        self._positions: np.ndarray | None = None
        self._numbers: np.ndarray | None = None
        self._cell: np.ndarray | None = None
        self._pbc: np.ndarray | None = None
        self._inv_cell: np.ndarray | None = None
        self._unimodular: np.ndarray | None = None
        self._lists: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        """Forget the stored list; the next :meth:`get` rebuilds."""
        self._positions = None
        self._lists = None

    def get(
        self,
        positions: np.ndarray,
        numbers: np.ndarray,
        cell: np.ndarray | None = None,
        pbc=None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(senders [E] int64, receivers [E] int64, shifts [E, 3] int64)`` for ``cutoff + skin``.

        Args:
            positions: [n, 3] Å. numbers: [n] atomic numbers. cell: [3, 3] Å or None.
            pbc: [3] bool or None.

        The arrays follow :func:`neighbor_list`'s conventions; treat them as read-only (they may be
        the stored list itself).
        """
        x = np.asarray(positions, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"positions must have shape [n, 3], got {x.shape}")
        numbers = np.asarray(numbers).reshape(-1)
        if len(numbers) != len(x):
            raise ValueError(f"numbers has {len(numbers)} entries but positions has {len(x)} atoms")
        cell_ = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64).reshape(3, 3)
        pbc_ = as_pbc(pbc)

        jump = self._lattice_jumps(x, numbers, cell_, pbc_)
        if jump is None:
            self._build(x, numbers, cell_, pbc_)
            return self._lists
        senders, receivers, shifts = self._lists
        if jump.any():
            shifts = shifts - jump[senders] + jump[receivers]
        return senders, receivers, shifts

    def _lattice_jumps(self, x, numbers, cell, pbc) -> np.ndarray | None:
        """Integer lattice jump [n, 3] of each atom since the build, or None when a rebuild is due."""
        if (
            self._positions is None
            or len(x) != len(self._positions)
            or not np.array_equal(numbers, self._numbers)
            or not np.array_equal(pbc, self._pbc)
            or not np.array_equal(cell, self._cell)
        ):
            return None
        if not np.isfinite(x).all():
            return None  # let the build raise the error that names the atom
        delta = x - self._positions
        jump = np.zeros(delta.shape, dtype=np.int64)
        if pbc.any():
            # Round in the reduced basis (nearly orthogonal, so rounding finds the lattice jump),
            # then express the jump in the caller's cell.
            frac = delta @ self._inv_cell
            jump = np.where(pbc, np.rint(frac), 0.0).astype(np.int64) @ self._unimodular
            delta = delta - jump @ cell
        limit = 0.5 * self.skin
        if np.einsum("ij,ij->i", delta, delta).max(initial=0.0) > limit * limit:
            return None
        return jump

    def _build(self, x, numbers, cell, pbc) -> None:
        self._lists = neighbor_list(x, self.cutoff + self.skin, cell=cell, pbc=pbc)
        self._positions = x.copy()
        self._numbers = numbers.copy()
        self._cell = cell.copy()
        self._pbc = pbc.copy()
        eff, unimodular = (a[0] for a in effective_cells(cell[None], pbc[None]))
        self._inv_cell = np.linalg.inv(eff)
        self._unimodular = unimodular
        self.rebuilds += 1
