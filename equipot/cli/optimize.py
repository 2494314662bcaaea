"""``equipot optimize MODEL STRUCTURE``: geometry (and cell) relaxation with ASE and EquiCalc."""
from __future__ import annotations

import argparse
import time

from ._common import add_model_argument, add_model_options, add_overwrite_option, structure_with_calculator

HELP = "relax a structure with FIRE or BFGS (and its cell with --cell, FrechetCellFilter)"


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("structure", metavar="STRUCTURE", help="structure, any file ASE reads (last frame)")
    parser.add_argument("--fmax", type=float, default=0.05, help="convergence: largest force, eV/Å")
    parser.add_argument("--steps", type=int, default=500, help="maximum optimiser steps")
    parser.add_argument("--optimizer", choices=("FIRE", "BFGS"), default="FIRE", help="ASE optimiser")
    parser.add_argument("--cell", action="store_true",
                        help="also relax the cell (FrechetCellFilter; needs a periodic structure)")
    parser.add_argument("--pressure", type=float, default=0.0, help="external pressure with --cell, GPa")
    parser.add_argument("-o", "--output", default="relaxed.extxyz", help="relaxed structure file (any ASE format)")
    parser.add_argument("--trajectory", default=None, help="optimisation trajectory (.traj), optional")
    add_overwrite_option(parser)
    add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from ase import units
    from ase.optimize import BFGS, FIRE

    from ._common import check_output, model_inputs

    if args.fmax <= 0 or args.steps < 0:
        raise ValueError("--fmax must be > 0 eV/Å and --steps >= 0")
    inputs = (args.structure, *model_inputs(args.model))
    check_output(args.output, "--output", ase_format=True, inputs=inputs, overwrite=args.overwrite)
    if args.trajectory is not None:
        check_output(args.trajectory, "--trajectory", suffixes=(".traj",), inputs=inputs, overwrite=args.overwrite)
    atoms = structure_with_calculator(args)
    target = atoms
    if args.cell:
        if not atoms.pbc.all():
            raise ValueError(f"{args.structure}: --cell needs a structure periodic in all three directions")
        from ase.filters import FrechetCellFilter

        target = FrechetCellFilter(atoms, scalar_pressure=args.pressure * units.GPa)
    e0 = atoms.get_potential_energy()
    cls = FIRE if args.optimizer == "FIRE" else BFGS
    opt = cls(target, trajectory=args.trajectory, logfile=None)
    t0 = time.perf_counter()
    converged = opt.run(fmax=args.fmax, steps=args.steps)
    wall = time.perf_counter() - t0
    e1 = atoms.get_potential_energy()
    fmax = float(np.sqrt((target.get_forces() ** 2).sum(axis=1)).max())
    from ..data.extxyz import write_structures

    write_structures(args.output, [atoms])
    status = "converged" if converged else f"NOT converged in {args.steps} steps"
    print(f"{args.optimizer}{' + cell' if args.cell else ''}: {status} after {opt.get_number_of_steps()} steps "
          f"({wall:.2f} s); energy {e0:.6f} -> {e1:.6f} eV, max force {fmax:.4f} eV/Å")
    if args.cell:
        print(f"cell lengths {np.round(atoms.cell.lengths(), 5).tolist()} Å, volume {atoms.get_volume():.4f} Å^3")
    print(f"relaxed structure written to {args.output}")
    return 0 if converged else 2
