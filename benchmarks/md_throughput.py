"""Steps per second of Langevin MD through each calculator on the 192-atom water box.

    python benchmarks/md_throughput.py [--steps 1000] [--dtype float32] [--backbones ponita ...]
                                       [--peers mace-small ... | --peers none] [--threads 2] [--quick]

Runs ``--steps`` steps of Langevin dynamics (ASE ``Langevin``, 0.5 fs, 300 K, friction
0.01 / fs, seeded) on the periodic 192-atom water box of ``benchmarks/common.py`` through every equipot
backbone asked for, once with the Verlet skin (0.5 Å: the neighbour list is rebuilt only when an
atom has moved more than 0.25 Å) and once without (skin 0: rebuilt every step, as the peers do),
and through each peer calculator (``benchmarks/peers.py``; a missing peer is named and skipped). Prints
steps/s, ns/day at 0.5 fs, the neighbour-list builds for equipot, and whether the run stayed
finite. One untimed step comes first so model set-up is not counted. ``--quick`` runs 20 steps.
The models are untrained, so the dynamics are not physical; the cost per step is what is measured.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.calculators.calculator import Calculator
from ase.md.langevin import Langevin

if not __package__:  # run as `python benchmarks/md_throughput.py`: import the package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import untrained_model, water_box
from benchmarks.peers import PEERS, PeerUnavailable, peer_calculator
from equipot import EquiCalc, available_backbones
from equipot.testing import thermalize

TIMESTEP_FS = 0.5


def run_md(calc: Calculator, steps: int, seed: int = 0) -> tuple[float, bool]:
    """(steps per second, finite) of ``steps`` Langevin steps of water-192 through ``calc``."""
    atoms = water_box(4)
    atoms.calc = calc
    thermalize(atoms, 300.0, np.random.default_rng(seed))
    dyn = Langevin(atoms, timestep=TIMESTEP_FS * units.fs, temperature_K=300.0, friction=0.01 / units.fs,
                   rng=np.random.default_rng(seed), fixcm=False)
    dyn.run(1)  # set-up (first neighbour list, lazy initialisation) is not timed
    t0 = time.perf_counter()
    dyn.run(steps)
    elapsed = time.perf_counter() - t0
    finite = bool(np.isfinite(atoms.positions).all() and np.isfinite(atoms.get_forces()).all())
    return steps / elapsed, finite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="timed MD steps per calculator")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbones", nargs="+", default=["ponita"], help="equipot backbones, or 'all'")
    parser.add_argument("--peers", nargs="+", default=list(PEERS), help="peer models, or 'none'")
    parser.add_argument("--skins", nargs="+", type=float, default=[0.5, 0.0], help="equipot Verlet skins, Å")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="20 steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = 20 if args.quick else args.steps
    dtype = getattr(torch, args.dtype)
    backbones = available_backbones() if args.backbones == ["all"] else args.backbones
    print(f"# water-192, Langevin {TIMESTEP_FS} fs 300 K, {steps} steps, {args.dtype}, device={args.device}, "
          f"threads={args.threads}")
    rows = []
    for backbone in backbones:
        if backbone not in available_backbones():
            print(f"# {backbone}: not available, skipped")
            continue
        model = untrained_model(backbone)
        for skin in args.skins:
            calc = EquiCalc(model, device=args.device, dtype=dtype, skin=skin)
            try:
                rate, finite = run_md(calc, steps)
            except (ValueError, RuntimeError) as exc:
                print(f"# equipot-{backbone} skin={skin}: {str(exc).splitlines()[0]}")
                continue
            rows.append((f"equipot-{backbone}", f"skin={skin}", rate, calc.neighbors.rebuilds, finite))
            print(f"equipot-{backbone:16s} skin={skin}: {rate:8.2f} steps/s  builds={calc.neighbors.rebuilds}",
                  flush=True)
    for peer in [] if args.peers == ["none"] else args.peers:
        try:
            calc = peer_calculator(peer, args.dtype, args.device)
        except PeerUnavailable as exc:
            print(f"# peer {peer} skipped: {exc}")
            continue
        rate, finite = run_md(calc, steps)
        rows.append((peer, "own list, every step", rate, None, finite))
        print(f"{peer:24s}: {rate:8.2f} steps/s", flush=True)
    ns_per_step = TIMESTEP_FS * 1e-6
    print("\n| calculator | neighbour list | steps/s | ns/day | list builds | finite |")
    print("|---|---|---|---|---|---|")
    for name, variant, rate, builds, finite in rows:
        ns_day = rate * 86400 * ns_per_step
        print(f"| {name} | {variant} | {rate:.2f} | {ns_day:.3f} | {'-' if builds is None else builds} | {finite} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
