"""ms per energy+force call through the ASE calculator, equipot against its peers in the same run.

    python benchmarks/speed.py [--device cpu|cuda] [--dtype float32 float64] [--backbones ponita ...]
                               [--peers mace-small mace-medium nequip schnet | --peers none]
                               [--repeats 6] [--threads 2] [--quick] [--no-isolate] [--largest]

For every system (biphenyl-22, C60, water 192 and 1536 atoms; ``--quick`` leaves out the 1536-atom
box and times 3 calls) and every equipot backbone, dtype and scatter backend available on the
device, prints the median ms per call (positions are moved by 1e-3 Å before each call so every
call recomputes; the equipot skin keeps the neighbour list between calls, "skin=0" rebuilds it
every call like the peers do) and the peak memory of the calls (CUDA: max allocated; CPU: growth
of the RSS high-water mark, reset before each system, over the RSS before the calls; each model
runs in its own process unless ``--no-isolate``). The peers (MACE small and
medium, NequIP, SchNet at the MD17 settings of their papers, see ``benchmarks/peers.py``) are timed in the
same run when importable; a missing one is named and skipped. Install them in their own
environment with ``bash benchmarks/peers_env.sh VENV`` and run this script with
``VENV/bin/python``. ``--backbones all`` times every registered backbone.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

if not __package__:  # run as `python benchmarks/speed.py`: import the package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import current_rss_mb, peak_mb, reset_peak, systems, untrained_model, water_box
from benchmarks.peers import PEERS, PeerUnavailable, peer_calculator
from equipot import EquiCalc, Potential, available_backbones


def scatter_backends(device: str) -> list[str]:
    """The scatter backends that run on ``device`` (``torch`` at least)."""
    try:
        from equipot.ops import available_backends
    except ImportError:
        return ["torch"]
    return list(available_backends(device))


def time_calc(calc: Calculator, atoms: Atoms, repeats: int, device: str) -> tuple[float, float]:
    """Median ms per energy+forces call (first call not counted) and peak memory (MB) of the calls.

    CPU: growth of the RSS high-water mark over the RSS before the calls (Linux; it includes
    memory the allocator keeps cached). CUDA: max allocated during the calls."""
    atoms = atoms.copy()
    atoms.calc = calc
    cuda = device.startswith("cuda")
    reset_peak(device)
    base = 0.0 if cuda else current_rss_mb()
    times = []
    for _ in range(repeats + 1):
        atoms.positions += 1e-3
        t0 = time.perf_counter()
        atoms.get_forces()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[1:]), max(peak_mb(device) - base, 0.0)


def run_job(job: dict) -> list[tuple]:
    """Time one model (an equipot backbone or a peer) in one dtype on every system.

    Returns rows ``(system, atoms, model, dtype, variant, ms, peak MB)``; a system that fails
    gives a row with ms = None and the error in ``variant``.
    """
    torch.set_num_threads(job["threads"])
    device, dtype, rows = job["device"], job["dtype"], []
    if job["kind"] == "peer":
        calcs = [("-", lambda: peer_calculator(job["name"], dtype, device))]
        label = job["name"]
    else:
        os.environ["EQUIPOT_SCATTER_BACKEND"] = job["backend"]
        model = untrained_model(job["name"])
        skin = job["skin"]
        calcs = [(f"{job['backend']}/skin={skin}",
                  lambda: EquiCalc(model, device=device, dtype=getattr(torch, dtype), skin=skin))]
        label = f"equipot-{job['name']}"
    for variant, make in calcs:  # one per job, so the CPU peak RSS belongs to this calculator
        calc = make()
        for name, atoms in systems(job["water_sides"]):
            try:
                ms, mem = time_calc(calc, atoms, job["repeats"], device)
            except (ValueError, RuntimeError, NotImplementedError) as exc:
                rows.append((name, len(atoms), label, dtype, f"{variant}: {str(exc).splitlines()[0][:80]}", None, None))
                continue
            rows.append((name, len(atoms), label, dtype, variant, ms, mem))
    return rows


def run_isolated(job: dict, isolate: bool) -> list[tuple]:
    """:func:`run_job`, in a fresh process when ``isolate`` (so the CPU peak RSS is the job's own)."""
    if not isolate:
        return run_job(job)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(run_job, job).result()


def print_table(rows: list[tuple]) -> None:
    """Markdown table of :func:`run_job` rows: ms per call, peak MB, ratio to MACE-small in the same dtype."""
    print("\n| system | atoms | model | dtype | variant | ms/call | peak MB | ms / MACE-small |")
    print("|---|---|---|---|---|---|---|---|")
    for name, n, model, dtype, variant, ms, mem in rows:
        if ms is None:
            print(f"| {name} | {n} | {model} | {dtype} | {variant} | failed | | |")
            continue
        ref = next((r[5] for r in rows if r[0] == name and r[2] == "mace-small" and r[3] == dtype and r[5]), None)
        ratio = f"{ms / ref:.2f}" if ref else "n/a"
        print(f"| {name} | {n} | {model} | {dtype} | {variant} | {ms:.1f} | {mem:.0f} | {ratio} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--backbones", nargs="+", default=["ponita"], help="equipot backbones, or 'all'")
    parser.add_argument("--peers", nargs="+", default=list(PEERS), help="peer models, or 'none'")
    parser.add_argument("--repeats", type=int, default=6, help="timed calls per system (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="3 calls, no 1536-atom box")
    parser.add_argument("--no-isolate", action="store_true",
                        help="time every model in this process (faster; CPU peak memory then only grows)")
    parser.add_argument("--skins", nargs="+", type=float, default=[0.5, 0.0],
                        help="equipot Verlet skins to time, Å (0 rebuilds the neighbour list every call)")
    parser.add_argument("--no-mace", action="store_true", help="skip the MACE peers")
    parser.add_argument("--largest", action="store_true",
                        help="also grow water boxes until one no longer fits (CUDA) and report the largest")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = args.device
    backbones = available_backbones() if args.backbones == ["all"] else args.backbones
    peers = [] if args.peers == ["none"] else [p for p in args.peers if not (args.no_mace and p.startswith("mace"))]
    repeats = 3 if args.quick else args.repeats
    water_sides = (4,) if args.quick else (4, 8)
    backends = scatter_backends(device)
    isolate = not args.no_isolate
    print(f"# device={device} threads={args.threads} scatter backends={backends} "
          f"backbones available={available_backbones()} repeats={repeats} isolated={isolate}")
    common = dict(device=device, threads=args.threads, repeats=repeats, water_sides=water_sides)
    jobs = []
    for backbone in backbones:
        if backbone not in available_backbones():
            print(f"# {backbone}: not available, skipped")
            continue
        for dtype in args.dtype:
            for backend in backends:
                for skin in args.skins:
                    jobs.append(dict(common, kind="equipot", name=backbone, dtype=dtype, backend=backend, skin=skin))
    for peer in peers:
        try:
            peer_calculator(peer, "float64", "cpu")  # fail fast, and say why, when the peer is missing
        except PeerUnavailable as exc:
            print(f"# peer {peer} skipped: {exc}")
            continue
        jobs.extend(dict(common, kind="peer", name=peer, dtype=dtype) for dtype in args.dtype)
    rows = []
    for job in jobs:
        try:
            new = run_isolated(job, isolate)
        except Exception as exc:  # one broken model must not end the run
            print(f"# {job['name']} {job['dtype']}: failed: {type(exc).__name__}: {exc}")
            continue
        for row in new:
            name, n, model, dtype, variant, ms, mem = row
            text = "failed" if ms is None else f"{ms:9.1f} ms  {mem:8.1f} MB"
            print(f"{name:12s} {n:5d} {model:24s} {dtype} {variant}: {text}", flush=True)
        rows.extend(new)
    print_table(rows)
    if args.largest and device.startswith("cuda"):
        model = untrained_model("ponita")
        for backend in backends:
            os.environ["EQUIPOT_SCATTER_BACKEND"] = backend
            side = largest_fitting(lambda n: fits_on_gpu(model, water_box(n), device), start=8)
            atoms = len(water_box(side)) if side else 0
            print(f"largest water box that fits ({backend}, float32, energy+forces): {atoms} atoms "
                  f"(water_box({side}))")
    return 0


def largest_fitting(fits: Callable[[int], bool], start: int) -> int:
    """Largest n >= 1 with ``fits(n)`` (assumed monotone): grow n by ~1.26 (x2 in volume) from
    ``start`` until it fails, then bisect between the last fit (0 if even ``start`` fails) and the
    first failure; 0 if none fits."""
    lo, hi = 0, start
    while fits(hi):
        lo, hi = hi, int(hi * 1.26) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def fits_on_gpu(model: Potential, atoms: Atoms, device: str) -> bool:
    """Whether two energy+force calls on ``atoms`` run without a CUDA out-of-memory error."""
    try:
        time_calc(EquiCalc(model, device=device, dtype=torch.float32), atoms, 1, device)
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
