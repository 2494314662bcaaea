"""Neighbour lists: matscipy on the CPU, a batched torch cell list on any device (the Verlet skin
for MD is :mod:`equipot.verlet`).

Conventions (shared with :class:`equipot.graph.AtomicGraph`):

* an edge points from sender ``j`` to receiver ``i``;
* its vector is ``positions[j] - positions[i] + shift @ cell`` (Å), ``shift`` an integer triple
  that is zero along every non-periodic direction;
* a pair is an edge when its distance is strictly below the cutoff;
* an atom is never its own neighbour with a zero shift, but it is with a non-zero shift when its
  periodic image lies within the cutoff (small cells, cutoffs larger than the cell);
* edges are sorted by receiver.

Cells hold the lattice vectors as rows. Only the rows along periodic directions are used (they must
be linearly independent); rows along non-periodic directions may be anything, zeros included.
Positions need not be wrapped into the cell.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["check_cutoff", "neighbor_list", "torch_neighbor_list"]

# Above this many cutoff-sized bins matscipy walks a huge, nearly empty grid (seconds for a molecule
# that exploded over 10^4 Å); the sparse torch cell list does not care, so it takes over.
_MATSCIPY_MAX_BINS = 1_000_000
# Bins per direction in the torch cell list; keeps the int64 bin keys far from overflow.
_MAX_BINS_PER_DIM = 1 << 15
# Refuse cells so small that the image stencil alone would exhaust memory.
_MAX_STENCIL = 10_000_000
# Periodic images of one atom that `neighbor_list` searches before it refuses: a cell that much
# thinner than the cutoff is a mistake, and matscipy would need memory ~ atoms^2 x images (a
# 1e-3 Å slab cell asked it for 8e7 images and exhausted memory).
_MAX_IMAGES = 100_000
# Relative margin on the search radius of the torch cell list, so that rounding in the binning can
# never drop a pair that the exact distance test keeps.
_SEARCH_MARGIN = 1e-4


# ----------------------------------------------------------------------------------------- helpers
def check_cutoff(cutoff: float) -> float:
    """``cutoff`` as a float, Å; ValueError unless it is a finite positive number (the one check
    of a cutoff: the model config, the training config and the neighbour lists call it)."""
    try:
        value = float(cutoff)
    except (TypeError, ValueError):
        raise ValueError(f"cutoff must be a number, got {cutoff!r}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"cutoff must be a finite positive distance in Å, got {cutoff!r}")
    return value


def _first_nonfinite_atom(finite_rows: np.ndarray) -> int | None:
    bad = np.flatnonzero(~finite_rows)
    return int(bad[0]) if bad.size else None


def _lll_reduce(rows: np.ndarray, delta: float = 0.75) -> np.ndarray:
    """Unimodular integer matrix U [k, k] such that ``U @ rows`` is an LLL-reduced basis.

    ``rows`` [k, 3] (k <= 3) must be linearly independent. A reduced basis spans the same lattice
    with nearly orthogonal, short vectors: a strongly sheared cell then needs a few bins and
    images instead of hundreds.
    """
    k = len(rows)
    u = np.eye(k, dtype=np.int64)

    def gram_schmidt(basis):
        ortho = np.zeros_like(basis)
        mu = np.zeros((k, k))
        for a in range(k):
            ortho[a] = basis[a]
            for b in range(a):
                mu[a, b] = basis[a] @ ortho[b] / (ortho[b] @ ortho[b])
                ortho[a] = ortho[a] - mu[a, b] * ortho[b]
        return (ortho * ortho).sum(axis=1), mu

    a = 1
    for _ in range(10_000):  # LLL terminates far sooner; the cap only guards against NaN input
        if a >= k:
            break
        for b in range(a - 1, -1, -1):
            q = int(np.rint(gram_schmidt(u @ rows)[1][a, b]))
            if q:
                u[a] -= q * u[b]
        norms, mu = gram_schmidt(u @ rows)
        if norms[a] >= (delta - mu[a, a - 1] ** 2) * norms[a - 1]:
            a += 1
        else:
            u[[a - 1, a]] = u[[a, a - 1]]
            a = max(a - 1, 1)
    return u


def effective_cells(cells: np.ndarray, pbc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-singular working cells for binning, and how their shifts map back to the given cells.

    Returns ``(eff [B, 3, 3], u [B, 3, 3] int64)``. The periodic rows of ``eff`` are an LLL-reduced
    basis of the periodic lattice, ``eff[pbc] = (u @ cells)[pbc]`` with ``u`` unimodular and the
    identity on non-periodic directions, so an integer shift ``n`` in the working cell is the shift
    ``n @ u`` in the given cell. Each non-periodic row of ``eff`` is a unit vector orthogonal to the
    periodic rows (and to the other replacements), so the fractional coordinate along it is a plain
    distance in Å and the shifts along it stay zero.

    Raises:
        ValueError: when the periodic rows of a cell are not finite or not linearly independent.
    """
    cells = np.asarray(cells, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if not np.isfinite(cells[pbc]).all():
        raise ValueError("cell has non-finite lattice vectors along a periodic direction")
    periodic_rows = np.where(pbc[..., None], cells, 0.0)
    _, sing, vh = np.linalg.svd(periodic_rows)
    rank_needed = pbc.sum(-1)
    for b in np.flatnonzero(rank_needed):
        k = rank_needed[b]
        # A degenerate periodic lattice (zero vector, two parallel vectors, zero volume) has a tiny
        # k-th singular value compared with the largest one.
        if not sing[b, 0] > 0.0 or sing[b, k - 1] <= 1e-9 * sing[b, 0]:
            where = "" if len(cells) == 1 else f" of structure {b}"
            raise ValueError(
                f"cell{where} is singular (zero volume) along its periodic directions "
                f"pbc={pbc[b].tolist()}: cell={cells[b].tolist()}"
            )
    # Right singular vectors beyond the rank span the orthogonal complement of the periodic rows.
    complement_row = rank_needed[:, None] + np.cumsum(~pbc, axis=-1) - 1
    complement_row = np.clip(complement_row, 0, 2)
    filler = np.take_along_axis(vh, complement_row[..., None], axis=1)
    eff = np.where(pbc[..., None], cells, filler)
    unimodular = np.tile(np.eye(3, dtype=np.int64), (len(cells), 1, 1))
    for b in np.flatnonzero(rank_needed > 1):
        idx = np.flatnonzero(pbc[b])
        block = _lll_reduce(cells[b, idx])
        unimodular[b][np.ix_(idx, idx)] = block
        eff[b, idx] = block @ cells[b, idx]
    return eff, unimodular


def as_pbc(pbc, n_structures: int | None = None) -> np.ndarray:
    """``pbc`` (None, a bool, [3] or [B, 3]) as a bool array [3], or [B, 3] for ``n_structures``."""
    arr = np.asarray(False if pbc is None else pbc, dtype=bool)
    if n_structures is None:
        return np.broadcast_to(arr, (3,)).copy()
    return np.broadcast_to(arr, (n_structures, 3)).copy()


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        return (value.double() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def _empty_numpy() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)


# ------------------------------------------------------------------------------------ numpy / CPU
def neighbor_list(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour list of one structure on the CPU (matscipy).

    Args:
        positions: [n, 3] Å, wrapped or not.
        cutoff: Å, > 0; pairs closer than ``cutoff`` (strictly) are edges.
        cell: [3, 3] Å, lattice vectors as rows, or None (no periodicity possible).
        pbc: [3] bool (or one bool for all directions); None means not periodic. Mixed
            periodicity (slabs ``(True, True, False)``, wires) and any triclinic cell work,
            as do cutoffs larger than the cell (several images of one atom, the atom's own
            images included).

    Returns:
        ``(senders [E] int64, receivers [E] int64, shifts [E, 3] int64)`` sorted by receiver
        (stable), with edge vector ``positions[senders] - positions[receivers] + shifts @ cell``.

    Raises:
        ValueError: non-finite positions (naming the first bad atom), a cutoff <= 0, a cell
            that is singular along a periodic direction, or malformed shapes.
    """
    cutoff = check_cutoff(cutoff)
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"positions must have shape [n, 3], got {x.shape}")
    bad = _first_nonfinite_atom(np.isfinite(x).all(axis=1))
    if bad is not None:
        raise ValueError(f"position of atom {bad} is not finite: {x[bad].tolist()}")
    pbc_ = as_pbc(pbc)
    if cell is None:
        cell_ = np.zeros((3, 3))
    else:
        cell_ = np.asarray(cell, dtype=np.float64)
        if cell_.shape != (3, 3):
            raise ValueError(f"cell must have shape [3, 3], got {cell_.shape}")
    if cell is None and pbc_.any():
        raise ValueError(f"pbc={pbc_.tolist()} needs a cell, got cell=None")
    eff, unimodular = (a[0] for a in effective_cells(cell_[None], pbc_[None]))
    n = len(x)
    if n == 0 or (n == 1 and not pbc_.any()):
        return _empty_numpy()
    if pbc_.any():
        thickness = 1.0 / np.linalg.norm(np.linalg.inv(eff), axis=0)
        images = float(np.prod(np.where(pbc_, 2.0 * np.ceil(cutoff / thickness) + 1.0, 1.0)))
        if images > _MAX_IMAGES:
            raise ValueError(
                f"cutoff {cutoff} Å is too large for the cell: it would need {images:.3g} periodic images per "
                f"atom (the cell is {thickness[pbc_].min():.3g} Å thin along a periodic direction)"
            )

    # Wrap along periodic directions ourselves and undo it on the shifts: that keeps the answer
    # independent of how matscipy treats atoms outside the cell.
    frac = x @ np.linalg.inv(eff)
    offset = np.where(pbc_, np.floor(frac), 0.0)
    x_wrapped = x - offset @ eff

    # Non-periodic rows: stretch the orthonormal filler rows over the atoms' extent plus a margin,
    # and put the origin below the lowest atom, so every atom lies inside matscipy's box.
    lo = frac.min(axis=0)
    hi = frac.max(axis=0)
    pad = 0.5 * cutoff + 1.0
    box = eff.copy()
    origin = np.zeros(3)
    for k in np.flatnonzero(~pbc_):
        box[k] = eff[k] * (hi[k] - lo[k] + 2.0 * pad)
        origin += eff[k] * (lo[k] - pad)
    spacings = 1.0 / np.linalg.norm(np.linalg.inv(box), axis=0)
    n_bins = np.prod(np.maximum(spacings / cutoff, 1.0))
    if n_bins > _MATSCIPY_MAX_BINS:
        edge_index, shift = torch_neighbor_list(
            torch.as_tensor(x), cutoff, None, torch.as_tensor(cell_)[None], torch.as_tensor(pbc_)[None]
        )
        return edge_index[0].numpy(), edge_index[1].numpy(), shift.to(torch.int64).numpy()

    from matscipy.neighbours import neighbour_list as _matscipy_neighbour_list

    i, j, s = _matscipy_neighbour_list(
        "ijS", positions=np.ascontiguousarray(x_wrapped), cutoff=cutoff, cell=box,
        cell_origin=origin, pbc=pbc_,
    )
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    off = offset.astype(np.int64)
    s = (s.astype(np.int64) + off[i] - off[j]) @ unimodular
    keep = (i != j) | s.any(axis=1)
    order = np.argsort(i[keep], kind="stable")
    return j[keep][order], i[keep][order], s[keep][order]


# ------------------------------------------------------------------------------------ torch / any
def torch_neighbor_list(
    positions: Tensor,
    cutoff: float,
    batch: Tensor | None = None,
    cell: Tensor | None = None,
    pbc: Tensor | None = None,
    *,
    max_pairs_per_chunk: int = 1 << 21,
) -> tuple[Tensor, Tensor]:
    """Batched neighbour list in pure torch, computed on ``positions.device``.

    A sparse cell list: atoms are binned in fractional coordinates with bins at least one
    cutoff thick (so only the adjacent bins, or for cells thinner than the cutoff the needed
    number of periodic images, ``ceil(cutoff * |b_k|)`` per periodic direction with ``b_k`` the
    reciprocal vectors, have to be searched). Bins are looked up by sorted keys, so empty space
    costs nothing, and candidate pairs are processed in chunks of at most
    ``max_pairs_per_chunk``, which bounds memory for large systems.

    Args:
        positions: [N, 3] Å, wrapped or not.
        cutoff: Å, > 0.
        batch: [N] int64 structure index of each atom; None means one structure.
        cell: [B, 3, 3] (or [3, 3]) Å, lattice vectors as rows; None means zeros.
        pbc: [B, 3] (or [3]) bool; None means not periodic.

    Returns:
        ``(edge_index [2, E] int64, edge_shift [E, 3])`` on the positions' device, ``edge_shift``
        integer valued in the positions' dtype, row 0 senders j, row 1 receivers i, sorted by
        receiver; edge vector ``positions[j] - positions[i] + edge_shift @ cell[batch[i]]``.

    Raises:
        ValueError: as :func:`neighbor_list`, and for atoms whose ``batch`` has no cell.
    """
    cutoff = check_cutoff(cutoff)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {tuple(positions.shape)}")
    device, dtype = positions.device, positions.dtype
    n = positions.shape[0]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=device)
    batch = batch.to(device=device, dtype=torch.long)
    if batch.shape != (n,):
        raise ValueError(f"batch must have shape [{n}], got {tuple(batch.shape)}")

    pbc_in = None if pbc is None else _to_numpy(pbc).astype(bool).reshape(-1, 3)
    if cell is not None:
        cells_np = _to_numpy(cell).astype(np.float64).reshape(-1, 3, 3)
    elif pbc_in is not None:
        cells_np = np.zeros((len(pbc_in), 3, 3))
    else:
        cells_np = np.zeros((int(batch.max()) + 1 if n else 1, 3, 3))
    n_struct = len(cells_np)
    pbc_np = as_pbc(pbc_in, n_struct)
    eff, unimodular = effective_cells(cells_np, pbc_np)

    empty = (torch.zeros((2, 0), dtype=torch.long, device=device), torch.zeros((0, 3), dtype=dtype, device=device))
    if n == 0:
        return empty
    finite = torch.isfinite(positions.detach()).all(dim=1)
    if not bool(finite.all()):
        bad = int(torch.nonzero(~finite)[0, 0])
        raise ValueError(f"position of atom {bad} is not finite: {positions[bad].tolist()}")
    if int(batch.min()) < 0 or int(batch.max()) >= n_struct:
        raise ValueError(f"batch indices must lie in [0, {n_struct}) (one cell per structure)")

    f64 = torch.float64
    eff_t = torch.as_tensor(eff, dtype=f64, device=device)
    inv = np.linalg.inv(eff)
    inv_t = torch.as_tensor(inv, dtype=f64, device=device)
    pbc_t = torch.as_tensor(pbc_np, device=device)
    pbc_atom = pbc_t[batch]
    pos64 = positions.detach().to(f64)
    frac = torch.einsum("nk,nkl->nl", pos64, inv_t[batch])
    offset = torch.where(pbc_atom, torch.floor(frac), torch.zeros_like(frac))
    frac = frac - offset
    x_wrapped = pos64 - torch.einsum("nk,nkl->nl", offset, eff_t[batch])

    # Extent of the atoms along the non-periodic (unit, orthonormal) directions, per structure.
    index3 = batch[:, None].expand(-1, 3)
    lo = torch.full((n_struct, 3), math.inf, dtype=f64, device=device)
    lo = lo.scatter_reduce(0, index3, frac, "amin")
    hi = torch.full((n_struct, 3), -math.inf, dtype=f64, device=device)
    hi = hi.scatter_reduce(0, index3, frac, "amax")
    lo_np, hi_np = lo.cpu().numpy(), hi.cpu().numpy()

    # Per structure and direction: number of bins (each at least `search` thick) and how many
    # bins away a neighbour can sit (> 1 only for cells thinner than the cutoff).
    search = cutoff * (1.0 + _SEARCH_MARGIN)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        thickness = np.where(pbc_np, 1.0 / np.linalg.norm(inv, axis=1), hi_np - lo_np)
        thickness = np.where(np.isfinite(thickness), thickness, 0.0)  # structures without atoms
        n_bins = np.clip(np.floor(thickness / search), 1, _MAX_BINS_PER_DIM).astype(np.int64)
        reach = np.where(thickness > 0, np.ceil(search * n_bins / thickness), 0).astype(np.int64)
    reach = np.where(pbc_np, np.maximum(reach, 1), np.minimum(reach, n_bins - 1))
    stencil = np.prod(2 * reach + 1, axis=1)
    if stencil.max() > _MAX_STENCIL:
        b = int(stencil.argmax())
        raise ValueError(
            f"cutoff {cutoff} Å is too large for the cell of structure {b}: it would need "
            f"{int(stencil[b])} periodic images per atom"
        )
    scale = np.where(pbc_np, n_bins, n_bins / np.where(thickness > 0, thickness, 1.0))
    base = np.where(pbc_np, 0.0, np.where(np.isfinite(lo_np), lo_np, 0.0))

    n_bins_t = torch.as_tensor(n_bins, device=device)
    reach_t = torch.as_tensor(reach, device=device)
    scale_t = torch.as_tensor(scale, dtype=f64, device=device)
    base_t = torch.as_tensor(base, dtype=f64, device=device)
    nb_atom = n_bins_t[batch]
    bin_of = torch.floor((frac - base_t[batch]) * scale_t[batch]).to(torch.long)
    bin_of = torch.minimum(bin_of.clamp_min(0), nb_atom - 1)

    # Sparse bins: a key per (structure, bin); atoms sorted by key, bins found by binary search.
    dims = n_bins.max(axis=0)
    if n_struct * float(np.prod(dims.astype(np.float64))) >= 2.0**62:
        raise ValueError("too many cell-list bins for int64 keys; use a larger cutoff or fewer structures")
    strides = torch.as_tensor([dims[1] * dims[2], dims[2], 1], device=device)
    struct_stride = int(np.prod(dims))

    def keys_of(structure: Tensor, bins: Tensor) -> Tensor:
        return structure * struct_stride + (bins * strides).sum(dim=-1)

    atom_keys = keys_of(batch, bin_of)
    sorted_keys, order = torch.sort(atom_keys, stable=True)

    # Stencil entries: one per (receiver, bin offset), receivers in ascending order.
    per_atom = torch.as_tensor(stencil, device=device)[batch]
    receiver = torch.repeat_interleave(torch.arange(n, device=device), per_atom)
    first = torch.cumsum(per_atom, 0) - per_atom
    local = torch.arange(receiver.numel(), device=device) - torch.repeat_interleave(first, per_atom)
    rb = batch[receiver]
    r = reach_t[rb]
    width = 2 * r + 1
    d2 = local % width[:, 2] - r[:, 2]
    rest = local // width[:, 2]
    d1 = rest % width[:, 1] - r[:, 1]
    d0 = rest // width[:, 1] - r[:, 0]
    target = bin_of[receiver] + torch.stack([d0, d1, d2], dim=1)
    nb_entry = n_bins_t[rb]
    periodic_entry = pbc_t[rb]
    image = torch.where(periodic_entry, torch.div(target, nb_entry, rounding_mode="floor"), 0)
    target = target - image * nb_entry
    valid = ((target >= 0) & (target < nb_entry)).all(dim=1)
    target_keys = keys_of(rb, target)
    start = torch.searchsorted(sorted_keys, target_keys, side="left")
    count = torch.searchsorted(sorted_keys, target_keys, side="right") - start
    count = torch.where(valid, count, torch.zeros_like(count))
    image_vec = torch.einsum("ek,ekl->el", image.to(f64), eff_t[rb])
    # Shifts back in the caller's cell basis (integer valued; float matmul because CUDA has no
    # integer bmm, exact for these small integers).
    unimodular_t = torch.as_tensor(unimodular, dtype=f64, device=device)
    image = torch.einsum("ek,ekl->el", image.to(f64), unimodular_t[rb]).round().to(torch.long)
    offset = torch.einsum("nk,nkl->nl", offset, unimodular_t[batch]).round().to(torch.long)

    # Chunk the candidate pairs by their running count so memory stays bounded.
    cum = torch.cumsum(count, 0)
    total = int(cum[-1])
    if total == 0:
        return empty
    cum_before = cum - count
    limit = max(int(max_pairs_per_chunk), 1)
    n_entries = receiver.numel()
    bounds = [0, n_entries]
    if total > limit:
        marks = torch.arange(limit, total, limit, device=device, dtype=cum.dtype)
        ends = (torch.searchsorted(cum, marks, side="left") + 1).clamp(max=n_entries)
        bounds = sorted({0, n_entries, *ends.tolist()})
    senders, receivers, shifts = [], [], []
    cutoff_sq = cutoff * cutoff
    for e0, e1 in itertools.pairwise(bounds):
        if e1 <= e0:
            continue
        entry = torch.repeat_interleave(torch.arange(e0, e1, device=device), count[e0:e1])
        if entry.numel() == 0:
            continue
        within = torch.arange(entry.numel(), device=device) - (cum_before[entry] - cum_before[e0])
        j = order[start[entry] + within]
        i = receiver[entry]
        vec = x_wrapped[j] - x_wrapped[i] + image_vec[entry]
        keep = (vec * vec).sum(dim=1) < cutoff_sq
        keep &= (i != j) | image[entry].any(dim=1)
        entry, i, j = entry[keep], i[keep], j[keep]
        senders.append(j)
        receivers.append(i)
        shifts.append(image[entry] + offset[i] - offset[j])
    if not senders:
        return empty
    edge_index = torch.stack([torch.cat(senders), torch.cat(receivers)])
    return edge_index, torch.cat(shifts).to(dtype)
