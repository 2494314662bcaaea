"""Generate labelled frames for a molecule: GFN2-xTB MD sampling, PBE/def2-SVP labels.

Writes a file in the revised-MD17 ``.npz`` layout, so ``equipot convert`` reads it like the
published rMD17 files::

    nuclear_charges [N] uint8        coords [M, N, 3] Å
    energies [M] kcal/mol            forces [M, N, 3] kcal/mol/Å      (PBE/def2-SVP, pyscf)
    old_indices [M] int64            MD step of each frame
    old_energies [M] kcal/mol        old_forces [M, N, 3] kcal/mol/Å  (GFN2-xTB labels of the same frame)

Sampling: Langevin MD with tblite's GFN2-xTB ASE calculator (default 500 K, 0.5 fs, friction
0.01/fs), an equilibration period, then one frame every ``--stride`` steps. Labelling: pyscf
restricted Kohn-Sham PBE/def2-SVP with density fitting
(``density_fit(auxbasis='def2-universal-jfit')``) and analytic gradients; each frame starts
from the previous frame's density matrix. The output is rewritten atomically after every
labelled frame, so an interrupted run keeps its frames; ``--resume`` continues it.

Cost: the DFT label dominates, about 5 s per ethanol frame (9 atoms) on one unloaded core
(10-13 SCF cycles); it grows roughly with the cube of the basis size (aspirin, 21 atoms, is
about 10x ethanol). On a loaded 2-core machine we measured 20-25 s per ethanol frame. The
xTB MD costs a few ms per step. ``--threads`` sets pyscf's OpenMP threads.

Consistency with rMD17: ``--validate rmd17_ethanol_train_01.npz --frames 3`` relabels
published frames; we measured a constant energy offset of 0.018 kcal/mol and a force MAE of
0.005 kcal/mol/Å (0.2 meV/Å) against the published PBE/def2-SVP labels (ORCA), far below the
errors of any potential trained on them.

Needs ``pip install tblite pyscf`` (not dependencies of equipot). Examples::

    python tools/generate_xtb_pyscf.py --molecule CH3CH2OH --frames 50 -o ethanol_gen.npz
    python tools/generate_xtb_pyscf.py --xyz my_molecule.xyz --frames 20 --temperature 400 -o mine.npz
    equipot convert ethanol_gen.npz -o ethanol_gen.h5 --level-of-theory "PBE/def2-SVP (pyscf, DF)"
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from ase import units

from equipot.data.units import BOHR, HARTREE, KCAL_MOL
from equipot.testing import thermalize

HARTREE_KCAL = HARTREE / KCAL_MOL  # kcal/mol per Hartree
HARTREE_BOHR_KCAL_A = HARTREE / BOHR / KCAL_MOL  # kcal/mol/Å per Hartree/Bohr


def _require() -> None:
    missing = []
    for name in ("tblite", "pyscf"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        sys.exit(f"this script needs {' and '.join(missing)}: pip install tblite pyscf")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--molecule", default="CH3CH2OH", help="ase.build.molecule name (g2 set)")
    src.add_argument("--xyz", help="starting geometry, any file ase.io reads (Å)")
    src.add_argument("--validate", metavar="RMD17.npz",
                     help="relabel the first --frames frames of an rMD17 file and compare with its labels")
    p.add_argument("-o", "--output", default="generated.npz", help="output .npz (rMD17 layout)")
    p.add_argument("--frames", type=int, default=10, help="frames to sample and label")
    p.add_argument("--temperature", type=float, default=500.0, help="MD temperature, K")
    p.add_argument("--timestep", type=float, default=0.5, help="MD time step, fs")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    p.add_argument("--equilibrate", type=int, default=400, help="MD steps before the first frame")
    p.add_argument("--stride", type=int, default=20, help="MD steps between frames")
    p.add_argument("--seed", type=int, default=0, help="random seed of the initial velocities and thermostat")
    p.add_argument("--charge", type=int, default=0, help="total charge, e")
    p.add_argument("--spin", type=int, default=0, help="number of unpaired electrons (2S)")
    p.add_argument("--basis", default="def2-svp", help="Gaussian basis set")
    p.add_argument("--xc", default="PBE", help="exchange-correlation functional")
    p.add_argument("--auxbasis", default="def2-universal-jfit", help="density-fitting auxiliary basis")
    p.add_argument("--threads", type=int, default=1, help="OpenMP threads for pyscf")
    p.add_argument("--resume", action="store_true", help="append to an existing output file")
    return p


class Labeller:
    """PBE/def2-SVP energies and forces with pyscf; reuses the last density as initial guess."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dm = None

    def __call__(self, numbers: np.ndarray, positions: np.ndarray) -> tuple[float, np.ndarray, int]:
        """Energy (kcal/mol), forces [n, 3] (kcal/mol/Å) and SCF cycles for one geometry in Å."""
        from pyscf import dft, gto

        a = self.args
        mol = gto.M(atom=[(int(z), tuple(p)) for z, p in zip(numbers, positions)], unit="Angstrom",
                    basis=a.basis, charge=a.charge, spin=a.spin, verbose=0)
        mf = (dft.RKS(mol) if a.spin == 0 else dft.UKS(mol)).density_fit(auxbasis=a.auxbasis)
        mf.xc = a.xc
        energy = mf.kernel(dm0=self.dm)
        if not mf.converged:
            raise RuntimeError("SCF did not converge")
        self.dm = mf.make_rdm1()
        grad = mf.nuc_grad_method().kernel()
        return energy * HARTREE_KCAL, -grad * HARTREE_BOHR_KCAL_A, int(getattr(mf, "cycles", -1))


def _save(path: Path, data: dict[str, list]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, nuclear_charges=np.asarray(data["nuclear_charges"], dtype=np.uint8),
             coords=np.asarray(data["coords"], dtype=np.float64).reshape(-1, len(data["nuclear_charges"]), 3),
             energies=np.asarray(data["energies"], dtype=np.float64),
             forces=np.asarray(data["forces"], dtype=np.float64).reshape(-1, len(data["nuclear_charges"]), 3),
             old_indices=np.asarray(data["old_indices"], dtype=np.int64),
             old_energies=np.asarray(data["old_energies"], dtype=np.float64),
             old_forces=np.asarray(data["old_forces"], dtype=np.float64).reshape(-1, len(data["nuclear_charges"]), 3))
    os.replace(tmp, path)


def validate(args: argparse.Namespace) -> int:
    ref = np.load(args.validate)
    label = Labeller(args)
    de, mae = [], []
    for k in range(min(args.frames, len(ref["energies"]))):
        t = time.perf_counter()
        e, f, cycles = label(ref["nuclear_charges"], ref["coords"][k])
        de.append(e - ref["energies"][k])
        mae.append(np.abs(f - ref["forces"][k]).mean())
        print(f"frame {k}: {time.perf_counter() - t:.1f} s, {cycles} SCF cycles, "
              f"E - E_ref = {de[-1]:+.4f} kcal/mol, force MAE {mae[-1]:.4f} kcal/mol/Å", flush=True)
    print(f"energy offset {np.mean(de):+.4f} ± {np.std(de):.4f} kcal/mol, "
          f"force MAE {np.mean(mae):.4f} kcal/mol/Å ({np.mean(mae) * KCAL_MOL * 1000:.2f} meV/Å)")
    return 0


def generate(args: argparse.Namespace) -> int:
    from ase.build import molecule
    from ase.constraints import FixCom
    from ase.io import read
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation
    from tblite.ase import TBLite

    out = Path(args.output)
    data: dict[str, list] = {k: [] for k in ("coords", "energies", "forces", "old_indices", "old_energies",
                                             "old_forces")}
    atoms = read(args.xyz) if args.xyz else molecule(args.molecule)
    step0 = 0
    if out.exists():
        if not args.resume:
            sys.exit(f"{out} exists; pass --resume to continue it or choose another -o")
        old = np.load(out)
        if not np.array_equal(old["nuclear_charges"], atoms.numbers):
            sys.exit(f"{out}: its atoms differ from the requested molecule")
        for key in data:
            data[key] = list(old[key])
        atoms.positions = old["coords"][-1]
        step0 = int(old["old_indices"][-1]) + 1
        print(f"resuming {out}: {len(data['energies'])} frames, from MD step {step0}")
    data["nuclear_charges"] = atoms.numbers.astype(np.uint8)
    atoms.calc = TBLite(method="GFN2-xTB", charge=args.charge, multiplicity=args.spin + 1, verbosity=0)
    rng = np.random.default_rng(args.seed + step0)
    thermalize(atoms, args.temperature, rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.set_constraint(FixCom())
    dyn = Langevin(atoms, timestep=args.timestep * units.fs, temperature_K=args.temperature,
                   friction=args.friction / units.fs, fixcm=False, rng=rng)
    label = Labeller(args)
    step = step0
    if step0 == 0:
        dyn.run(args.equilibrate)
        step = args.equilibrate
    t_start = time.perf_counter()
    todo = args.frames
    for k in range(todo):
        dyn.run(args.stride)
        step += args.stride
        xtb_e = atoms.get_potential_energy() / KCAL_MOL
        xtb_f = atoms.get_forces() / KCAL_MOL
        t = time.perf_counter()
        energy, forces, cycles = label(atoms.numbers, atoms.positions)
        data["coords"].append(atoms.positions.copy())
        data["energies"].append(energy)
        data["forces"].append(forces)
        data["old_indices"].append(step)
        data["old_energies"].append(xtb_e)
        data["old_forces"].append(xtb_f)
        _save(out, data)
        print(f"frame {k + 1}/{todo} (MD step {step}, T={atoms.get_temperature():.0f} K): "
              f"DFT {time.perf_counter() - t:.1f} s, {cycles} SCF cycles", flush=True)
    total = time.perf_counter() - t_start
    print(f"wrote {out}: {len(data['energies'])} frames, {total / max(todo, 1):.1f} s per frame "
          f"({args.threads} thread(s)); convert with: equipot convert {out} -o {out.with_suffix('.h5')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _require()
    from pyscf import lib

    lib.num_threads(args.threads)
    if args.frames < 1:
        sys.exit("--frames must be >= 1")
    return validate(args) if args.validate else generate(args)


if __name__ == "__main__":
    sys.exit(main())
