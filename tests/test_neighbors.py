"""Neighbour lists against a brute-force reference, input validation, batching."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch

from equipot.neighbors import neighbor_list, torch_neighbor_list

MIXED_PBC = [p for p in itertools.product([False, True], repeat=3) if 0 < sum(p) < 3]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # These systems are tiny: intra-op threads only add wake-up latency, which turns into seconds
    # per test on a busy 2-core CI machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ reference + helpers
def brute_force(x: np.ndarray, cutoff: float, cell: np.ndarray | None, pbc) -> dict:
    """{(i, j, s0, s1, s2): vector} over every image in a range wide enough for any input."""
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=float)
    pbc = np.zeros(3, bool) if pbc is None else np.asarray(pbc, bool)
    ranges = []
    for k in range(3):
        if not pbc[k]:
            ranges.append([0])
            continue
        # Plane spacing of the periodic lattice along k, from the periodic rows alone.
        rows = cell[pbc]
        others = np.delete(rows, list(np.flatnonzero(pbc)).index(k), axis=0)
        if len(others):
            q, _ = np.linalg.qr(others.T)
            normal = cell[k] - q @ (q.T @ cell[k])
        else:
            normal = cell[k]
        height = np.linalg.norm(normal)
        spread = np.ptp(x @ normal / height) if len(x) else 0.0
        reach = int(np.ceil((cutoff + spread) / height)) + 1
        ranges.append(range(-reach, reach + 1))
    shifts = np.array(list(itertools.product(*ranges)), dtype=np.int64)
    # |x_j - x_i + s @ cell| < cutoff needs |s @ cell| < cutoff + |x_j - x_i|: skip hopeless images.
    diameter = np.linalg.norm(x[:, None] - x[None], axis=-1).max(initial=0.0)
    shifts = shifts[np.linalg.norm(shifts @ cell, axis=1) < cutoff + diameter]
    vec = x[None, None, :, :] - x[None, :, None, :] + (shifts @ cell)[:, None, None, :]
    s, i, j = np.nonzero(np.linalg.norm(vec, axis=-1) < cutoff)
    out = {}
    for a, b, c in zip(s, i, j):
        if b != c or shifts[a].any():
            out[(int(b), int(c), *map(int, shifts[a]))] = vec[a, b, c]
    return out


def run_matscipy(x, cutoff, cell, pbc):
    return neighbor_list(x, cutoff, cell=cell, pbc=pbc)


def run_torch(x, cutoff, cell, pbc, **kwargs):
    c = None if cell is None else torch.as_tensor(np.asarray(cell, dtype=float))[None]
    p = None if pbc is None else torch.as_tensor(np.asarray(pbc, dtype=bool))[None]
    edge_index, shift = torch_neighbor_list(torch.as_tensor(x), cutoff, None, c, p, **kwargs)
    assert edge_index.dtype == torch.int64 and shift.dtype == torch.float64
    assert torch.equal(shift, shift.round())
    return edge_index[0].numpy(), edge_index[1].numpy(), shift.to(torch.int64).numpy()


BACKENDS = {
    "matscipy": run_matscipy,
    "torch": run_torch,
    # A tiny chunk makes every candidate pair go through the chunking bookkeeping.
    "torch_chunked": lambda *a: run_torch(*a, max_pairs_per_chunk=4096),
}


def check_against_reference(backend, x, cutoff, cell, pbc, ref=None):
    senders, receivers, shifts = BACKENDS[backend](x, cutoff, cell, pbc)
    assert senders.dtype == receivers.dtype == shifts.dtype == np.int64
    assert shifts.shape == (len(senders), 3)
    assert np.all(np.diff(receivers) >= 0), "edges must be sorted by receiver"
    ref = brute_force(x, cutoff, cell, pbc) if ref is None else ref
    keys = [(int(i), int(j), *map(int, s)) for i, j, s in zip(receivers, senders, shifts)]
    assert len(set(keys)) == len(keys), "duplicate edges"
    assert set(keys) == set(ref)
    cell_ = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=float)
    vec = x[senders] - x[receivers] + shifts @ cell_
    np.testing.assert_allclose(vec, np.array([ref[k] for k in keys]).reshape(-1, 3), atol=1e-9)
    assert np.all(np.linalg.norm(vec, axis=1) < cutoff)
    if pbc is not None:
        assert not shifts[:, ~np.asarray(pbc, bool)].any(), "shift along a non-periodic direction"
    return len(keys)


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def unwrap(rng, x, cell, pbc):
    """Move atoms by random lattice vectors along periodic directions (positions outside the cell)."""
    jumps = rng.integers(-1, 2, size=x.shape) * np.asarray(pbc, bool)
    return x + jumps @ cell


# ---------------------------------------------------------------------------------------- cases
def case_molecule(rng):
    x = rng.uniform(0.0, 6.0, size=(rng.integers(2, 30), 3))
    return x, 3.0, None, None


def case_cubic(rng):
    cell = np.eye(3) * rng.uniform(5.0, 8.0)
    x = rng.uniform(0.0, 1.0, size=(30, 3)) @ cell
    return unwrap(rng, x, cell, [True] * 3), 3.5, cell, [True] * 3


def case_skewed(rng):
    length = rng.uniform(4.0, 6.0)
    cell = length * np.array([[1.0, 0.0, 0.0], [0.95, 0.35, 0.0], [-0.8, 0.6, 0.4]])
    cell = (cell + rng.normal(scale=0.1, size=(3, 3))) @ random_rotation(rng)
    x = rng.uniform(0.0, 1.0, size=(12, 3)) @ cell
    return unwrap(rng, x, cell, [True] * 3), 4.0, cell, [True] * 3


def case_sheared(rng):
    # A lattice given by a needlessly long, nearly parallel basis (a sheared MD cell): the
    # cell list must not search hundreds of bins for it.
    a, b, c = np.eye(3) * rng.uniform(3.5, 4.5, size=3)
    cell = np.array([a, 3 * a + b, -2 * a + 2 * b + c]) + rng.normal(scale=0.05, size=(3, 3))
    x = rng.uniform(0.0, 1.0, size=(10, 3)) @ cell
    return unwrap(rng, x, cell, [True] * 3), 3.5, cell, [True] * 3


def case_tiny(rng):
    # Cutoff several times the cell: many images of every atom, including its own.
    cell = np.diag(rng.uniform(1.2, 2.0, size=3)) + rng.uniform(-0.6, 0.6, size=(3, 3)) * (1 - np.eye(3))
    x = rng.uniform(0.0, 1.0, size=(rng.integers(1, 4), 3)) @ cell
    return unwrap(rng, x, cell, [True] * 3), 4.5, cell, [True] * 3


def case_mixed(rng):
    pbc = np.array(MIXED_PBC[rng.integers(len(MIXED_PBC))])
    cell = np.diag(rng.uniform(3.5, 6.0, size=3)) + rng.uniform(-1.5, 1.5, size=(3, 3)) * (1 - np.eye(3))
    cell = cell @ random_rotation(rng)
    # Rows along non-periodic directions are ignored: zeros (ASE's habit) or junk must both work.
    cell[~pbc] = 0.0 if rng.random() < 0.5 else rng.normal(size=(int((~pbc).sum()), 3))
    x = rng.uniform(-4.0, 9.0, size=(15, 3))
    x[0] += 40.0 * rng.normal(size=3)  # one atom far out, in vacuum
    return x, 3.5, cell, pbc


CASES = {
    "molecule": case_molecule,
    "cubic": case_cubic,
    "skewed": case_skewed,
    "sheared": case_sheared,
    "tiny": case_tiny,
    "mixed": case_mixed,
}


# ---------------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("seed", range(3))
def test_matches_brute_force(kind, seed):
    rng = np.random.default_rng(1000 * seed + list(CASES).index(kind))
    x, cutoff, cell, pbc = CASES[kind](rng)
    ref = brute_force(x, cutoff, cell, pbc)
    if kind in ("skewed", "sheared", "tiny", "cubic"):
        assert len(ref) > 0
    for backend in BACKENDS:
        assert check_against_reference(backend, x, cutoff, cell, pbc, ref) == len(ref), backend


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("pbc", MIXED_PBC)
def test_every_mixed_pbc_pattern(backend, pbc):
    rng = np.random.default_rng(sum(1 << k for k in range(3) if pbc[k]))
    cell = np.array([[3.1, 0.2, -0.4], [1.4, 2.9, 0.3], [-0.7, 0.8, 2.6]])
    x = unwrap(rng, rng.uniform(-2.0, 6.0, size=(10, 3)), cell, pbc)
    assert check_against_reference(backend, x, 3.7, cell, pbc) > 0


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_single_atom_sees_only_its_images(backend):
    x = np.array([[0.3, -0.2, 0.1]])
    assert check_against_reference(backend, x, 3.5, np.eye(3) * 2.2, [True] * 3) == 18
    assert check_against_reference(backend, x, 3.5, np.eye(3) * 2.2, [True, False, False]) == 2
    assert check_against_reference(backend, x, 3.0, None, None) == 0


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_empty_and_isolated(backend):
    for x in (np.zeros((0, 3)), np.ones((1, 3))):
        senders, receivers, shifts = BACKENDS[backend](x, 5.0, None, None)
        assert senders.shape == receivers.shape == (0,) and shifts.shape == (0, 3)
    senders, _, _ = BACKENDS[backend](np.zeros((0, 3)), 5.0, np.eye(3), [True] * 3)
    assert senders.shape == (0,)
    # Two atoms farther apart than the cutoff, the boundary itself excluded.
    senders, _, _ = BACKENDS[backend](np.array([[0.0, 0, 0], [2.0, 0, 0]]), 2.0, None, None)
    assert senders.shape == (0,)


def test_vacuum_molecule_is_fast_and_right():
    # Atoms spread over 10^4 Å: a dense bin grid would be enormous (neighbor_list hands over to
    # the sparse torch cell list).
    rng = np.random.default_rng(7)
    x = rng.uniform(0.0, 1e4, size=(40, 3))
    x[1] = x[0] + [1.0, 0.5, 0.0]
    x[2] = x[0] - [0.0, 2.0, 1.0]
    start = time.perf_counter()
    assert check_against_reference("matscipy", x, 3.0, None, None) == 6
    assert time.perf_counter() - start < 2.0


def test_water_sized_box_torch_matches_matscipy():
    # 1536 atoms at liquid-water density, cutoff 5 Å: the size the brief asks to stay cheap.
    rng = np.random.default_rng(3)
    length = (1536 / 0.1) ** (1 / 3)
    cell = np.eye(3) * length
    x = rng.uniform(0.0, length, size=(1536, 3))
    senders, receivers, shifts = neighbor_list(x, 5.0, cell, [True] * 3)
    s2, r2, sh2 = run_torch(x, 5.0, cell, [True] * 3, max_pairs_per_chunk=1 << 18)
    a = set(zip(receivers.tolist(), senders.tolist(), *shifts.T.tolist()))
    b = set(zip(r2.tolist(), s2.tolist(), *sh2.T.tolist()))
    assert a == b and len(a) == len(senders) == len(s2)
    assert 0.5 * 4 / 3 * np.pi * 125 * 0.1 < len(a) / 1536 < 1.5 * 4 / 3 * np.pi * 125 * 0.1


def test_torch_float32_keeps_dtype():
    rng = np.random.default_rng(11)
    x, cutoff, cell, pbc = case_skewed(rng)
    edge_index, shift = torch_neighbor_list(
        torch.as_tensor(x, dtype=torch.float32), cutoff, None,
        torch.as_tensor(cell, dtype=torch.float32)[None], torch.tensor([pbc]),
    )
    assert shift.dtype == torch.float32 and edge_index.dtype == torch.int64
    ref = brute_force(x, cutoff, cell, pbc)
    got = {(i, j, *s) for j, i, s in zip(*edge_index.tolist(), shift.long().tolist())}
    robust = {k for k, v in ref.items() if abs(np.linalg.norm(v) - cutoff) > 1e-4}
    assert robust <= got <= set(ref)


# --------------------------------------------------------------------------------------- batched
def test_torch_batched_structures_of_different_kinds():
    rng = np.random.default_rng(5)
    structures = [
        case_molecule(rng),
        case_skewed(rng),
        (np.zeros((0, 3)), 3.0, np.eye(3) * 4.0, [True] * 3),  # an empty structure
        case_tiny(rng),
        (rng.uniform(0, 5, size=(9, 3)), 3.0, np.array([[4.0, 0, 0], [1.0, 3.5, 0], [0, 0, 0]]),
         [True, True, False]),
    ]
    cutoff = 3.0
    positions, batch, cells, pbcs, expected = [], [], [], [], set()
    offset = 0
    for b, (x, _, cell, pbc) in enumerate(structures):
        cell = np.zeros((3, 3)) if cell is None else cell
        pbc = [False] * 3 if pbc is None else pbc
        for i, j, *s in brute_force(x, cutoff, cell, pbc):
            expected.add((i + offset, j + offset, *s))
        positions.append(x)
        batch += [b] * len(x)
        cells.append(cell)
        pbcs.append(pbc)
        offset += len(x)
    edge_index, shift = torch_neighbor_list(
        torch.as_tensor(np.concatenate(positions)), cutoff, torch.tensor(batch),
        torch.as_tensor(np.stack(cells)), torch.tensor(pbcs),
    )
    receivers = edge_index[1]
    assert bool((receivers[1:] >= receivers[:-1]).all())
    got = [(i, j, *s) for j, i, s in zip(*edge_index.tolist(), shift.long().tolist())]
    assert len(got) == len(set(got)) and set(got) == expected
    pos = torch.as_tensor(np.concatenate(positions))
    vec = pos[edge_index[0]] - pos[edge_index[1]] + torch.einsum(
        "ek,ekl->el", shift, torch.as_tensor(np.stack(cells))[torch.tensor(batch)[edge_index[1]]]
    )
    assert bool((vec.norm(dim=1) < cutoff).all())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_cuda_matches_cpu():
    rng = np.random.default_rng(9)
    x, cutoff, cell, pbc = case_skewed(rng)
    args = (cutoff, None, torch.as_tensor(cell)[None], torch.tensor([pbc]))
    ei_cpu, sh_cpu = torch_neighbor_list(torch.as_tensor(x), *args)
    ei_gpu, sh_gpu = torch_neighbor_list(torch.as_tensor(x, device="cuda"), *args)
    assert ei_gpu.device.type == "cuda" and sh_gpu.device.type == "cuda"
    a = {(j, i, *s) for j, i, s in zip(*ei_cpu.tolist(), sh_cpu.long().tolist())}
    b = {(j, i, *s) for j, i, s in zip(*ei_gpu.tolist(), sh_gpu.long().tolist())}
    assert a == b


# ------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_position_names_the_atom(backend, bad):
    x = np.random.default_rng(0).uniform(0, 3, size=(6, 3))
    x[4, 1] = bad
    with pytest.raises(ValueError, match="atom 4"):
        BACKENDS[backend](x, 2.0, None, None)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("cutoff", [0.0, -1.0, np.nan, np.inf])
def test_bad_cutoff(backend, cutoff):
    with pytest.raises(ValueError, match="cutoff"):
        BACKENDS[backend](np.zeros((2, 3)), cutoff, None, None)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize(
    "cell, pbc",
    [
        (np.zeros((3, 3)), [True] * 3),
        (np.array([[2.0, 0, 0], [4.0, 0, 0], [0, 0, 3.0]]), [True] * 3),  # parallel a and b
        (np.array([[2.0, 0, 0], [0, 2.0, 0], [1.0, 1.0, 0]]), [True] * 3),  # c in the ab plane
        (np.array([[2.0, 0, 0], [0, 0, 0], [0, 0, 3.0]]), [True, True, False]),  # b = 0, b periodic
        (np.array([[2.0, 0, 0], [np.nan, 0, 0], [0, 0, 3.0]]), [True, True, False]),
    ],
)
def test_singular_periodic_cell(backend, cell, pbc):
    with pytest.raises(ValueError, match="cell"):
        BACKENDS[backend](np.zeros((2, 3)), 2.0, cell, pbc)


def test_singular_cell_along_non_periodic_direction_is_fine():
    cell = np.array([[2.0, 0, 0], [0, 0, 0], [0, 0, 0]])
    for backend in BACKENDS:
        check_against_reference(backend, np.array([[0.0, 0, 0], [0.5, 1.0, 0]]), 2.5, cell, [True, False, False])


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="cell"):
        neighbor_list(np.zeros((2, 3)), 2.0, None, [True] * 3)
    with pytest.raises(ValueError, match="positions"):
        neighbor_list(np.zeros((2, 2)), 2.0)
    with pytest.raises(ValueError, match="cell"):
        neighbor_list(np.zeros((2, 3)), 2.0, np.eye(2), [True] * 3)
    with pytest.raises(ValueError, match="batch"):
        torch_neighbor_list(torch.zeros(2, 3), 2.0, torch.tensor([0, 1]), torch.zeros(1, 3, 3),
                            torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="images"):
        torch_neighbor_list(torch.zeros(1, 3), 100.0, None, torch.eye(3)[None] * 0.1,
                            torch.ones(1, 3, dtype=torch.bool))
