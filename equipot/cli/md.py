"""``equipot md MODEL STRUCTURE``: molecular dynamics with ASE and EquiCalc."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._common import add_model_argument, add_model_options, add_overwrite_option, structure_with_calculator

HELP = "run molecular dynamics (Langevin NVT or velocity-Verlet NVE) and write a trajectory"


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("structure", metavar="STRUCTURE", help="starting structure, any file ASE reads (last frame)")
    parser.add_argument("--steps", type=int, default=1000, help="number of MD steps")
    parser.add_argument("--dt", type=float, default=0.5, help="time step, fs")
    parser.add_argument("--temperature", type=float, default=300.0,
                        help="temperature, K: initial Maxwell-Boltzmann velocities and the Langevin bath")
    parser.add_argument("--thermostat", choices=("langevin", "nve"), default="langevin",
                        help="langevin (NVT) or nve (velocity Verlet, no thermostat)")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and Langevin noise")
    parser.add_argument("-o", "--output", default="md.traj",
                        help="trajectory file (.traj ASE trajectory, or .xyz/.extxyz)")
    parser.add_argument("--interval", type=int, default=10, help="write every this many steps")
    parser.add_argument("--log-interval", type=int, default=100,
                        help="print time, potential and kinetic energy, temperature (and for NVE the energy "
                             "drift so far) every this many steps; 0: only at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--skin", type=float, default=0.5, help="Verlet neighbour-list skin, Å")
    add_overwrite_option(parser)
    add_model_options(parser)


TRAJECTORY_SUFFIXES = (".traj", ".xyz", ".extxyz")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from ase import units
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    from ..safe_write import atomic_write
    from ._common import check_output, model_inputs

    if args.steps < 0 or args.dt <= 0 or args.interval < 1 or args.log_interval < 0:
        raise ValueError("--steps must be >= 0, --dt > 0 fs, --interval >= 1 and --log-interval >= 0")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0 K, got {args.temperature}")
    out = check_output(args.output, "--output", suffixes=TRAJECTORY_SUFFIXES,
                       inputs=(args.structure, *model_inputs(args.model)), overwrite=args.overwrite)
    atoms = structure_with_calculator(args, skin=args.skin)
    rng = np.random.default_rng(args.seed)
    if args.temperature > 0 and len(atoms) > 1:  # one atom: at rest once its centre of mass is fixed
        # thermalize_momenta replaces MaxwellBoltzmannDistribution from ASE 3.29 on
        thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
        thermalize(atoms, temperature_K=args.temperature, rng=rng)
        vd.Stationary(atoms)
        if not atoms.pbc.any():
            vd.ZeroRotation(atoms)
    dt = args.dt * units.fs
    nve = args.thermostat == "nve"
    if not nve:
        from ase.constraints import FixCom

        # fixcm=True is deprecated (it biases the NVT distribution); FixCom keeps the centre of mass instead
        atoms.set_constraint(FixCom())
        dyn = Langevin(atoms, dt, temperature_K=args.temperature, friction=args.friction / units.fs, rng=rng,
                       fixcm=False)
    else:
        dyn = VelocityVerlet(atoms, dt)
    with atomic_write(out, keep_suffix=True) as tmp:  # renamed onto --output when the run is complete
        report = _run_md(args, atoms, dyn, nve, tmp)
    print("\n".join(report))
    print(f"neighbour-list builds: {atoms.calc.neighbors.rebuilds}; trajectory written to {out}")
    return 0


def _run_md(args: argparse.Namespace, atoms, dyn, nve: bool, tmp: Path) -> list[str]:
    """Run the dynamics, writing the trajectory to ``tmp``; returns the lines that report the run."""
    import numpy as np
    from ase import units
    from tqdm.auto import tqdm

    writer = _trajectory_writer(tmp, atoms)
    dyn.attach(writer, interval=args.interval)
    totals: list[float] = []
    times: list[float] = []
    n = len(atoms)
    bar = tqdm(total=args.steps, unit="step", desc="md", dynamic_ncols=True, file=sys.stderr,
               disable=True if args.quiet else None)

    def temperature() -> str:
        """The temperature, or why there is none (one atom with its centre of mass fixed moves not at all)."""
        if atoms.get_number_of_degrees_of_freedom() < 1:
            return "n/a (no degrees of freedom)"
        return f"{atoms.get_temperature():7.1f} K"

    def drift() -> float:
        """Linear-fit drift of the total energy, meV/atom/ps (NVE only: a thermostat changes it on purpose)."""
        return float(np.polyfit(times, totals, 1)[0]) * 1e3 if len(totals) > 2 else 0.0

    def record() -> None:
        total = atoms.get_total_energy() / n
        if not np.isfinite(total) or not np.isfinite(atoms.get_kinetic_energy()):
            raise ValueError(f"the total energy became {total} eV/atom at step {dyn.nsteps}: the run blew up "
                             f"(--dt {args.dt} fs is far too large, or the structure is unphysical); no trajectory "
                             f"written")
        totals.append(total)
        times.append(dyn.get_time() / (1000 * units.fs))
        step = dyn.nsteps
        if step:
            bar.update(1)
        if args.log_interval and step % args.log_interval == 0:
            epot, ekin = atoms.get_potential_energy() / n, atoms.get_kinetic_energy() / n
            line = (f"step {step:>8d}  t {times[-1]:8.3f} ps  E_pot {epot:.6f}  E_kin {ekin:.6f} eV/atom  "
                    f"T {temperature()}")
            if nve:
                line += f"  drift {drift():+.3f} meV/atom/ps"
            tqdm.write(line, file=sys.stdout)

    dyn.attach(record, interval=1)  # ASE calls it at step 0 too
    t0 = time.perf_counter()
    dyn.run(args.steps)
    wall = time.perf_counter() - t0
    bar.close()
    if hasattr(writer, "close"):
        writer.close()
    summary = (f"total energy: start {totals[0]:.6f} eV/atom, end {totals[-1]:.6f} eV/atom, "
               f"temperature at end {temperature().strip()}")
    if nve:
        summary += f", drift {drift():.3f} meV/atom/ps (linear fit)"
    return [f"{args.steps} steps of {args.dt} fs ({args.thermostat}, {n} atoms) in {wall:.2f} s: "
            f"{args.steps / max(wall, 1e-9):.1f} steps/s", summary]


def _trajectory_writer(path: Path, atoms):
    if path.suffix == ".traj":
        from ase.io.trajectory import Trajectory

        return Trajectory(str(path), "w", atoms)
    import ase.io

    path.unlink(missing_ok=True)  # our own empty temporary file: ASE appends to it

    class _Append:
        def __call__(self) -> None:
            ase.io.write(str(path), atoms, append=True)

    return _Append()
