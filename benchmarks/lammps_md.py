"""LAMMPS MD through equipot's ML-IAP interface vs ASE + EquiCalc: steps/s, NVE drift, the largest box.

    python benchmarks/lammps_md.py --lammps PREFIX [--sides 8 16] [--ranks 1 2] [--steps 3] [--r3-only]
    python benchmarks/lammps_md.py --lammps PREFIX --nve [--steps 400] [--side 4]
    python benchmarks/lammps_md.py --lammps PREFIX --largest [--memory-gb 16] [--r3-only]

PREFIX is a LAMMPS built by ``tools/build_lammps.sh`` (default: $EQUIPOT_LAMMPS). The model is
the same untrained ponita for H, C, O with a 5 Å cutoff in both programs (``--hidden`` 16,
``--layers`` 3, the default orientation grid, or ``--r3-only``), float64 unless ``--dtype``.

Speed (default): NVE (velocity Verlet, 0.5 fs, velocities for 300 K) on the water boxes of
``benchmarks/common.py`` (side 8: 1 536 atoms, 16: 12 288 atoms): in LAMMPS on each ``--ranks``
count (processor grid along z, ``comm_modify cutoff`` = layers × cutoff + 1 Å skin), timed by
LAMMPS's loop time of ``run STEPS`` after a ``run 1`` (start-up, model loading and the first
call not counted); in ASE (VelocityVerlet + EquiCalc, Verlet skin 0.5 Å) STEPS steps after one
untimed step. Both use ``--cores`` cores: torch threads = cores / ranks. Peak memory: the
largest sum of the resident memory of the ranks (sampled every 0.2 s) and the peak RSS of the
ASE process.

``--nve``: the same NVE run in LAMMPS (1 and 2 ranks) and ASE from LAMMPS's initial velocities
(the water box of side ``--side``, STEPS steps); the drift of the total energy per atom per ps
(least-squares slope) and its largest excursion, side by side.

``--largest``: one force call (``run 0``) on growing water boxes (sides 8, 12, 16) in LAMMPS on
one rank, a straight-line fit of peak memory against atoms, then the largest side the fit puts
under ``--memory-gb``, run for ``--steps`` steps.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.md.verlet import VelocityVerlet

if not __package__:  # run as `python benchmarks/lammps_md.py`: import the package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CUTOFF, ELEMENTS, current_rss_mb, peak_mb, reset_peak, untrained_model, water_box
from equipot import EquiCalc, save_model
from equipot.interfaces.lammps import ghost_cutoff, write_lammps_model
from equipot.interfaces.lammps_run import LAMMPSInstall, loop_times, read_dump, thermo_table, write_data
from equipot.testing import thermalize

TIMESTEP_FS = 0.5
SKIN = 1.0
SEED = 4928459


def lammps_input(ranks: int, hops: int, body: str) -> str:
    """Water box NVE input: the file names are those :func:`prepare` writes."""
    symbols = " ".join({1: "H", 6: "C", 8: "O"}[z] for z in ELEMENTS)
    return f"""units metal
atom_style atomic
boundary p p p
processors 1 1 {ranks}
read_data water.data
pair_style mliap unified model.pkl 1
pair_coeff * * {symbols}
neighbor {SKIN} bin
comm_modify cutoff {ghost_cutoff(hops, CUTOFF, SKIN):g}
velocity all create 300.0 {SEED} mom yes rot no dist gaussian
fix nve all nve
timestep {TIMESTEP_FS / 1000}
thermo_style custom step pe ke etotal
thermo_modify format float %.17g
{body}"""


def prepare(folder: Path, args: argparse.Namespace, side: int):
    """Model file, LAMMPS model file and water box data file in ``folder``; (atoms, model path, hops)."""
    options = dict(hidden=args.hidden, layers=args.layers, grid_size=12, r3_only=args.r3_only)
    model = untrained_model("ponita", options)
    save_model(model, folder / "model.pt")
    adapter = write_lammps_model(folder / "model.pt", folder / "model.pkl", dtype=args.dtype)
    atoms = water_box(side)
    write_data(atoms, folder / "water.data", ELEMENTS)
    return atoms, folder / "model.pt", adapter.hops


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _rss_mb(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0) / 1024
        except OSError:
            pass
    return total


def run_lammps(lmp: LAMMPSInstall, text: str, folder: Path, ranks: int, threads: int):
    """(completed process, peak MB of all ranks together), sampling /proc every 0.2 s."""
    peak = [0.0]
    done = threading.Event()

    def sample():
        me = os.getpid()
        while not done.wait(0.2):
            pids = [p for p in _descendants(me) if p != me]
            peak[0] = max(peak[0], _rss_mb(pids))

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        result = lmp.run(text, folder, ranks, threads)
    finally:
        done.set()
        watcher.join()
    if result.returncode != 0:
        raise RuntimeError(f"LAMMPS failed:\n{result.stdout[-2000:]}")
    return result, peak[0]


def ase_md(atoms, model_path: Path, args: argparse.Namespace, steps: int, velocities: np.ndarray | None = None):
    """(steps/s of steps 2 .. ``steps``, peak MB, total energies [steps + 1] eV) of ASE velocity
    Verlet with EquiCalc, from ``velocities`` (Å/ps, LAMMPS's) or a 300 K Maxwell-Boltzmann draw."""
    torch.set_num_threads(args.cores)
    atoms = atoms.copy()
    atoms.calc = EquiCalc(model_path, dtype=getattr(torch, args.dtype))
    if velocities is None:
        thermalize(atoms, 300.0, np.random.default_rng(SEED))
    else:
        atoms.set_velocities(velocities / (1000 * units.fs))  # LAMMPS metal units: Å/ps
    dyn = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    reset_peak("cpu")
    energies = [atoms.get_total_energy()]
    dyn.run(1)  # the first step (neighbour list, lazy set-up) is not timed
    energies.append(atoms.get_total_energy())
    t0 = time.perf_counter()
    for _ in range(steps - 1):
        dyn.run(1)
        energies.append(atoms.get_total_energy())
    rate = (steps - 1) / (time.perf_counter() - t0) if steps > 1 else float("nan")
    return rate, peak_mb("cpu"), np.array(energies)


def speed(lmp: LAMMPSInstall, args: argparse.Namespace) -> None:
    print(f"# NVE {TIMESTEP_FS} fs, {args.steps} timed steps, ponita hidden {args.hidden} layers {args.layers} "
          f"{'r3_only' if args.r3_only else 'grid 12 (eval 32)'}, {args.dtype}, {args.cores} cores")
    print("| atoms | program | ranks x threads | steps/s | s/step | peak MB |\n|---:|---|---|---:|---:|---:|")
    for side in args.sides:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            atoms, model_path, hops = prepare(folder, args, side)
            for ranks in args.ranks:
                threads = max(1, args.cores // ranks)
                result, peak = run_lammps(lmp, lammps_input(ranks, hops, f"thermo {args.steps}\nrun 1\n"
                                                            f"run {args.steps}\n"), folder, ranks, threads)
                seconds, steps = loop_times(result.stdout)[-1]
                print(f"| {len(atoms)} | LAMMPS | {ranks} x {threads} | {steps / seconds:.4f} | {seconds / steps:.2f} "
                      f"| {peak:.0f} |", flush=True)
            if not args.no_ase:
                rate, peak, _ = ase_md(atoms, model_path, args, args.steps + 1)
                print(f"| {len(atoms)} | ASE + EquiCalc | 1 x {args.cores} | {rate:.4f} | {1 / rate:.2f} | "
                      f"{peak:.0f} |", flush=True)


def nve(lmp: LAMMPSInstall, args: argparse.Namespace) -> None:
    steps = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        atoms, model_path, hops = prepare(folder, args, args.side)
        n = len(atoms)
        traces = {}
        for ranks in (1, 2):
            body = (f"dump v all custom {steps} v.dump id vx vy vz\ndump_modify v sort id format float %.17g\n"
                    f"thermo 1\nrun {steps}\n")
            t0 = time.perf_counter()
            result, _ = run_lammps(lmp, lammps_input(ranks, hops, body), folder, ranks, max(1, args.cores // ranks))
            traces[f"LAMMPS, {ranks} rank{'s' * (ranks > 1)}"] = (thermo_table(result.stdout)[:, 3],
                                                                  time.perf_counter() - t0)
            if ranks == 1:
                velocities = read_dump(folder / "v.dump")[:, 1:4]
        t0 = time.perf_counter()
        _, _, energies = ase_md(atoms, model_path, args, steps, velocities)
        traces["ASE + EquiCalc"] = (energies, time.perf_counter() - t0)
    t_ps = np.arange(steps + 1) * TIMESTEP_FS / 1000
    print(f"# NVE water-{n}, {steps} steps of {TIMESTEP_FS} fs ({t_ps[-1]:.3f} ps) from the same velocities (300 K), "
          f"{args.dtype}, ponita hidden {args.hidden} layers {args.layers}{' r3_only' if args.r3_only else ''}")
    print("| program | drift (eV/atom/ps) | max abs(E - E0) (eV/atom) | E0 (eV) | wall s |\n|---|---:|---:|---:|---:|")
    for name, (e, wall) in traces.items():
        slope = np.polyfit(t_ps, e / n, 1)[0]
        print(f"| {name} | {slope:.3e} | {np.abs(e - e[0]).max() / n:.3e} | {e[0]:.6f} | {wall:.0f} |")
    base = traces["LAMMPS, 1 rank"][0]
    for name, (e, _) in traces.items():
        print(f"# max |E - E(LAMMPS 1 rank)| per atom, {name}: {np.abs(e - base).max() / n:.2e} eV")


def largest(lmp: LAMMPSInstall, args: argparse.Namespace) -> None:
    print(f"# one force call on one rank ({args.cores} threads), ponita hidden {args.hidden} layers {args.layers}"
          f"{' r3_only' if args.r3_only else ''}, {args.dtype}; peak = sum of ranks' RSS")
    print("| side | atoms | s for run 0 (start-up included) | peak MB |\n|---:|---:|---:|---:|")
    sizes, peaks = [], []
    for side in args.sides:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            atoms, _, hops = prepare(folder, args, side)
            t0 = time.perf_counter()
            _, peak = run_lammps(lmp, lammps_input(1, hops, "run 0\n"), folder, 1, args.cores)
            print(f"| {side} | {len(atoms)} | {time.perf_counter() - t0:.0f} | {peak:.0f} |", flush=True)
            sizes.append(len(atoms))
            peaks.append(peak)
    slope, intercept = np.polyfit(sizes, peaks, 1)
    budget = args.memory_gb * 1024
    side = int(((budget - intercept) / slope / 3) ** (1 / 3))
    print(f"# fit: {intercept:.0f} MB + {slope * 1000:.1f} MB per 1000 atoms -> side {side} ({3 * side ** 3} atoms) "
          f"under {args.memory_gb:g} GB")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        atoms, _, hops = prepare(folder, args, side)
        result, peak = run_lammps(lmp, lammps_input(1, hops, f"thermo 1\nrun 0\nrun {args.steps}\n"), folder, 1,
                                  args.cores)
        seconds, steps = loop_times(result.stdout)[-1]
        print(f"| {side} | {len(atoms)} | {seconds / steps:.0f} s/step ({steps} steps) | {peak:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lammps", default=os.environ.get("EQUIPOT_LAMMPS"), metavar="PREFIX",
                        help="LAMMPS prefix built by tools/build_lammps.sh (default $EQUIPOT_LAMMPS)")
    parser.add_argument("--nve", action="store_true", help="NVE drift, LAMMPS (1, 2 ranks) and ASE")
    parser.add_argument("--largest", action="store_true", help="the largest water box that fits in --memory-gb")
    parser.add_argument("--sides", nargs="+", type=int, default=None,
                        help="water box sides (3 side^3 atoms); default 8 16 (speed), 8 12 16 (--largest)")
    parser.add_argument("--side", type=int, default=4, help="water box side for --nve (4: 192 atoms)")
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2], help="MPI ranks (speed)")
    parser.add_argument("--steps", type=int, default=3, help="timed MD steps (--nve: steps of the run)")
    parser.add_argument("--cores", type=int, default=2, help="cores shared by the ranks; torch threads per rank")
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--r3-only", action="store_true", help="distances only (no orientation grid)")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--memory-gb", type=float, default=16.0, help="memory for --largest, GB")
    parser.add_argument("--no-ase", action="store_true", help="speed: LAMMPS only")
    args = parser.parse_args(argv)
    if not args.lammps:
        parser.error("give --lammps PREFIX (a LAMMPS built by tools/build_lammps.sh) or set EQUIPOT_LAMMPS")
    lmp = LAMMPSInstall(Path(args.lammps))
    if not lmp.usable():
        parser.error(f"--lammps {args.lammps}: no bin/lmp and bin/mpirun there")
    if args.sides is None:
        args.sides = [8, 12, 16] if args.largest else [8, 16]
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, "
          f"rss {current_rss_mb():.0f} MB")
    if args.nve:
        nve(lmp, args)
    elif args.largest:
        largest(lmp, args)
    else:
        speed(lmp, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
