"""equipot against a peer, energy+forces call by call in one process (same load on both).

For biphenyl (22 atoms) and water boxes (``--sides``; default the 192-atom box), alternates one call of equipot's
calculator and one of the peer's (each after moving every atom by 1e-3 Å, so every call
recomputes), ``--calls`` times after one warm-up each, and prints the median ms of both and
their ratio. equipot is a model file (``--model``) or the default R3×S2 model built untrained
with ``key=value`` options (timings do not depend on the weights).

    peers-venv/bin/python benchmarks/interleaved.py --peer mace-small --dtype float32 --threads 1
    peers-venv/bin/python benchmarks/interleaved.py eval_grid_size=32 widening=2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from ase import Atoms
from ase.calculators.calculator import Calculator

if not __package__:  # run as `python benchmarks/interleaved.py`: import the package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import systems, untrained_model
from benchmarks.peers import peer_calculator
from equipot import EquiCalc, load_model


def one_call(calc: Calculator, atoms: Atoms) -> float:
    """Seconds of one energy+forces call after moving every atom by 1e-3 Å (so it recomputes)."""
    atoms.positions += 1e-3
    atoms.calc = calc
    t0 = time.perf_counter()
    atoms.get_forces()
    return time.perf_counter() - t0


def interleaved(calc_a: Calculator, calc_b: Calculator, atoms: Atoms, calls: int) -> tuple[float, float]:
    """Median seconds per call of two calculators, alternated call by call on copies of ``atoms``."""
    a, b = atoms.copy(), atoms.copy()
    one_call(calc_a, a), one_call(calc_b, b)
    times_a, times_b = [], []
    for _ in range(calls):
        times_a.append(one_call(calc_a, a))
        times_b.append(one_call(calc_b, b))
    return statistics.median(times_a), statistics.median(times_b)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("options", nargs="*", help="ponita options key=value for the untrained default model")
    p.add_argument("--model", help="equipot model file instead of an untrained default model")
    p.add_argument("--peer", default="mace-small")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sides", type=int, nargs="+", default=[4], help="water boxes of side**3 molecules")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model:
        model = load_model(args.model)
    else:
        options = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.options)}
        model = untrained_model("ponita", options)
    dtype = getattr(torch, args.dtype)
    ours = EquiCalc(model, dtype=dtype)
    peer = peer_calculator(args.peer, args.dtype, "cpu")
    print(f"{'system':<14}{'equipot ms':>12}{args.peer + ' ms':>16}{'ratio':>8}   ({args.dtype}, "
          f"{args.threads} thread(s), {args.calls} interleaved calls each)")
    for name, atoms in systems(tuple(args.sides)):
        t_ours, t_peer = interleaved(ours, peer, atoms, args.calls)
        print(f"{name:<14}{t_ours * 1e3:>12.1f}{t_peer * 1e3:>16.1f}{t_ours / t_peer:>8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
