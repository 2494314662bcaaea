"""Benchmark systems: the same ones as ../shared/bench/systems.py (biphenyl, C60, water boxes),
rebuilt here so the scripts run outside the team's checkout. Water boxes: n_side**3 molecules on a
3.1 Å cubic grid (1.0 g/cm^3), random orientations from a seeded generator, periodic."""
from __future__ import annotations

from typing import Iterator

import numpy as np
from ase import Atoms
from ase.build import molecule


def water_box(n_side: int, seed: int = 0) -> Atoms:
    """Periodic box of n_side**3 water molecules at ~1 g/cm^3."""
    rng = np.random.default_rng(seed)
    base = molecule("H2O")
    base.positions -= base.get_center_of_mass()
    spacing = 3.1
    pos, num = [], []
    for i in range(n_side):
        for j in range(n_side):
            for k in range(n_side):
                q = rng.normal(size=4)
                a, b, c, d = q / np.linalg.norm(q)
                rot = np.array([
                    [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                    [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                    [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]])
                pos.append(base.positions @ rot.T + spacing * np.array([i, j, k]))
                num.extend(base.numbers)
    atoms = Atoms(numbers=num, positions=np.concatenate(pos), cell=[spacing * n_side] * 3, pbc=True)
    atoms.wrap()
    return atoms


def systems(water_sides: tuple[int, ...] = (4, 8)) -> Iterator[tuple[str, Atoms]]:
    """(name, atoms): biphenyl (22 atoms), C60, and water boxes of 192 and 1536 atoms."""
    yield "biphenyl-22", molecule("biphenyl")
    yield "C60-60", molecule("C60")
    for n in water_sides:
        a = water_box(n)
        yield f"water-{len(a)}", a
