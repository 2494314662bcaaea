"""Physics checks every backbone must pass; used by the test-suite and by users adding a backbone.

All functions take a :class:`~equipot.potentials.Potential` in float64 and ``ase.Atoms``, and
return the measured error so tests can state their own tolerance.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms

from .graph import AtomicGraph
from .potentials.base import Potential


def random_rotation(rng: np.random.Generator, reflect: bool = False) -> np.ndarray:
    """A uniformly random 3×3 rotation (times -1, an improper rotation, when ``reflect``)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if reflect else q


def predict(model: Potential, atoms: Atoms | list[Atoms], stress: bool = False) -> dict[str, np.ndarray]:
    """Energy [B] (eV), forces [N, 3] (eV/Å) and optionally stress [B, 3, 3] of atoms, in the model's dtype."""
    dtype = next(model.parameters()).dtype
    graph = AtomicGraph.from_atoms(atoms, model.cutoff, dtype=dtype)
    out = model(graph, compute_forces=True, compute_stress=stress)
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def transform_errors(model: Potential, atoms: Atoms, rng: np.random.Generator, reflect: bool = False) -> dict:
    """Energy and force errors under a random rotation (or reflection), translation and permutation.

    Returns ``{"energy": |E' - E| / max(1, |E|), "forces": max |F' - R F| / max(1, max |F|)}``
    for the combined transformation (relative errors, dimensionless).
    """
    ref = predict(model, atoms)
    rot = random_rotation(rng, reflect)
    perm = rng.permutation(len(atoms))
    moved = atoms.copy()
    moved.positions = (atoms.positions @ rot.T + rng.normal(size=3) * 3.0)[perm]
    moved.numbers = atoms.numbers[perm]
    if atoms.pbc.any():
        moved.cell = atoms.cell.array @ rot.T
    out = predict(model, moved)
    f_expect = (ref["forces"] @ rot.T)[perm]
    e_scale = max(1.0, abs(float(ref["energy"][0])))
    f_scale = max(1.0, float(np.abs(ref["forces"]).max()))
    return {
        "energy": abs(float(out["energy"][0] - ref["energy"][0])) / e_scale,
        "forces": float(np.abs(out["forces"] - f_expect).max()) / f_scale,
    }


def finite_difference_force_error(model: Potential, atoms: Atoms, h: float = 1e-4, atoms_to_check: int = 4) -> float:
    """max |F_autograd + dE/dx (central difference, step h Å)| over a few atoms (eV/Å)."""
    forces = predict(model, atoms)["forces"]
    worst = 0.0
    for k in range(min(atoms_to_check, len(atoms))):
        for d in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[k, d] += h
            minus.positions[k, d] -= h
            e_p = predict(model, plus)["energy"][0]
            e_m = predict(model, minus)["energy"][0]
            worst = max(worst, abs(-(e_p - e_m) / (2 * h) - forces[k, d]))
    return worst


def finite_difference_stress_error(model: Potential, atoms: Atoms, h: float = 1e-5) -> float:
    """max |σ_autograd - (1/V) dE/dε (central difference of a symmetric strain ε)| (eV/Å^3)."""
    stress = predict(model, atoms, stress=True)["stress"][0]
    volume = atoms.get_volume()
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                eps = np.zeros((3, 3))
                eps[a, b] += 0.5 * sign * h
                eps[b, a] += 0.5 * sign * h
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                energies.append(predict(model, strained)["energy"][0])
            fd[a, b] = (energies[0] - energies[1]) / (2 * h) / volume
    return float(np.abs(fd - stress).max())


def batch_independence_error(model: Potential, atoms: Atoms, other: Atoms, other_changed: Atoms) -> float:
    """|E(atoms | batched with other) - E(atoms | batched with other_changed)| (eV)."""
    e1 = predict(model, [atoms, other])["energy"][0]
    e2 = predict(model, [atoms, other_changed])["energy"][0]
    return abs(float(e1 - e2))


def thermalize(atoms: Atoms, temperature_k: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_k`` (K), across ASE versions."""
    from ase.md import velocitydistribution as vd

    if hasattr(vd, "thermalize_momenta"):
        vd.thermalize_momenta(atoms, temperature_K=temperature_k, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=rng)


def nve_drift(model: Potential, atoms: Atoms, steps: int = 200, dt_fs: float = 0.5, temperature_k: float = 300.0,
              seed: int = 0) -> dict[str, float]:
    """Run velocity-Verlet NVE and return the total-energy drift.

    Returns ``{"drift": eV/atom/ps from a linear fit, "fluctuation": std of E_tot per atom (eV),
    "temperature_k": mean kinetic temperature (K)}``; a mean far above ``temperature_k`` / 2 says
    the trajectory fell out of the model's potential well (bonds broke, atoms collapsed).
    """
    from ase import units
    from ase.md.velocitydistribution import Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet

    from .calculators.ase import EquiCalc

    atoms = atoms.copy()
    atoms.calc = EquiCalc(model, dtype=next(model.parameters()).dtype)
    thermalize(atoms, temperature_k, np.random.default_rng(seed))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    totals, temperatures = [], []

    def record() -> None:
        totals.append(atoms.get_total_energy())
        temperatures.append(atoms.get_temperature())

    dyn.attach(record, interval=1)
    dyn.run(steps)
    totals = np.asarray(totals) / len(atoms)
    t_ps = np.arange(len(totals)) * dt_fs / 1000.0
    slope = np.polyfit(t_ps, totals, 1)[0]
    return {"drift": float(abs(slope)), "fluctuation": float(totals.std()),
            "temperature_k": float(np.mean(temperatures))}
