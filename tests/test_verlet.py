"""The Verlet skin list: every pair within the cutoff always covered, rebuilds only when needed."""
from __future__ import annotations

import numpy as np
import pytest

from equipot.neighbors import neighbor_list
from equipot.verlet import VerletList


def unwrap(rng, x, cell, pbc):
    """Move atoms by random lattice vectors along periodic directions (ASE-style wrapping, undone)."""
    return x + (rng.integers(-1, 2, size=x.shape) * np.asarray(pbc, bool)) @ cell


def pair_keys(senders, receivers, shifts):
    return set(zip(receivers.tolist(), senders.tolist(), *shifts.T.tolist()))


def assert_covers(verlet_lists, x, cutoff, cell, pbc):
    """Every pair within the cutoff is in the Verlet list, with the right shift."""
    exact = pair_keys(*neighbor_list(x, cutoff, cell, pbc))
    assert exact <= pair_keys(*verlet_lists)


@pytest.mark.parametrize("periodic", [False, True])
def test_verlet_rebuilds_only_when_needed(periodic):
    rng = np.random.default_rng(2)
    cutoff, skin = 3.0, 0.6
    cell = np.array([[6.0, 0, 0], [1.0, 5.5, 0], [0.5, -0.7, 6.2]]) if periodic else None
    pbc = [periodic] * 3
    numbers = rng.integers(1, 9, size=40)
    x = rng.uniform(0.0, 6.0, size=(40, 3))
    verlet = VerletList(cutoff, skin)
    lists = verlet.get(x, numbers, cell, pbc)
    assert verlet.rebuilds == 1
    assert pair_keys(*lists) == pair_keys(*neighbor_list(x, cutoff + skin, cell, pbc))
    reference = x.copy()
    expected = 1
    for _ in range(25):
        x = x + rng.normal(scale=0.05, size=x.shape)
        moved = np.linalg.norm(x - reference, axis=1).max()
        lists = verlet.get(x, numbers, cell, pbc)
        if moved > skin / 2:
            expected += 1
            reference = x.copy()
        assert verlet.rebuilds == expected
        assert_covers(lists, x, cutoff, cell, pbc)
        assert np.all(np.diff(lists[1]) >= 0)
    assert 1 < expected < 26  # both branches were exercised


def test_verlet_one_atom_moving_past_half_skin_rebuilds():
    rng = np.random.default_rng(4)
    x = rng.uniform(0.0, 5.0, size=(20, 3))
    numbers = np.ones(20, dtype=int)
    verlet = VerletList(2.5, 0.4)
    verlet.get(x, numbers)
    y = x.copy()
    y[7, 0] += 0.19
    verlet.get(y, numbers)
    assert verlet.rebuilds == 1
    y[7, 0] += 0.02  # now 0.21 > skin / 2 from the build positions
    verlet.get(y, numbers)
    assert verlet.rebuilds == 2
    verlet.get(y, numbers)
    assert verlet.rebuilds == 2


def test_verlet_rebuilds_on_topology_cell_or_pbc_change():
    rng = np.random.default_rng(6)
    x = rng.uniform(0.0, 5.0, size=(10, 3))
    numbers = np.full(10, 6)
    cell = np.eye(3) * 5.0
    verlet = VerletList(2.5, 0.5)
    verlet.get(x, numbers, cell, [True] * 3)
    changes = [
        (x, np.r_[7, numbers[1:]], cell, [True] * 3),
        (x, np.r_[7, numbers[1:]], cell * 1.01, [True] * 3),
        (x, np.r_[7, numbers[1:]], cell * 1.01, [True, True, False]),
        (x[:9], numbers[:9], cell * 1.01, [True, True, False]),
    ]
    for k, args in enumerate(changes, start=2):
        lists = verlet.get(*args)
        assert verlet.rebuilds == k
        assert_covers(lists, args[0], 2.5, args[2], args[3])


def test_verlet_survives_wrapping_across_the_boundary():
    # ASE may wrap atoms back into the cell between steps: a jump by a lattice vector.
    rng = np.random.default_rng(8)
    cell = np.array([[5.0, 0, 0], [2.0, 4.5, 0], [-1.0, 0.5, 4.8]])
    pbc = [True, True, True]
    x = rng.uniform(0.0, 1.0, size=(16, 3)) @ cell
    x[0] = 0.999 * cell[0] + 0.5 * cell[1] + 0.5 * cell[2]  # right at a face
    numbers = np.ones(16, dtype=int)
    verlet = VerletList(3.0, 0.5)
    built = [a.copy() for a in verlet.get(x, numbers, cell, pbc)]
    y = x + rng.normal(scale=0.03, size=x.shape)
    y[0] += 0.02 * cell[0] / np.linalg.norm(cell[0])  # crosses the face...
    y = unwrap(rng, y, cell, pbc)  # ...and every atom gets wrapped or unwrapped
    lists = verlet.get(y, numbers, cell, pbc)
    assert verlet.rebuilds == 1
    assert_covers(lists, y, 3.0, cell, pbc)
    # Same edges as at the build, each vector moved only by the atoms' small displacements.
    np.testing.assert_array_equal(lists[0], built[0])
    np.testing.assert_array_equal(lists[1], built[1])
    before = x[built[0]] - x[built[1]] + built[2] @ cell
    after = y[lists[0]] - y[lists[1]] + lists[2] @ cell
    assert np.abs(after - before).max() < 0.25


def test_verlet_zero_skin_and_bad_arguments():
    x = np.random.default_rng(1).uniform(0, 4, size=(5, 3))
    verlet = VerletList(2.0, 0.0)
    verlet.get(x, np.ones(5))
    verlet.get(x, np.ones(5))
    assert verlet.rebuilds == 1
    verlet.get(x + 1e-9, np.ones(5))
    assert verlet.rebuilds == 2
    with pytest.raises(ValueError, match="skin"):
        VerletList(2.0, -0.1)
    with pytest.raises(ValueError, match="cutoff"):
        VerletList(0.0, 0.5)
    with pytest.raises(ValueError, match="numbers"):
        verlet.get(x, np.ones(4))
    x[2] = np.nan
    with pytest.raises(ValueError, match="atom 2"):
        verlet.get(x, np.ones(5))
