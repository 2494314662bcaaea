"""Time and memory of one energy+force call against the number of atoms (torch scatter path).

    python benchmarks/scaling.py [--backbone ponita] [--dtype float32] [--sides 3 4 5 6 8 10 12]
                                 [--max-seconds 60] [--repeats 3] [--threads 2] [--quick]

Periodic water boxes at 1 g/cm^3 (``benchmarks.common.water_box(n)``, 3 n^3 atoms: 81, 192, 375, ...) are
evaluated by the model directly (``Potential.forward`` with forces: forward + autograd backward)
with ``EQUIPOT_SCATTER_BACKEND=torch``, the neighbour list built beforehand (its time is reported
in its own column). Each size runs in a fresh process so its peak memory is its own (CPU: peak
RSS growth over the RSS after the graph was built; CUDA: max allocated). Sizes grow until a call
takes longer than ``--max-seconds`` or, on CUDA, no longer fits in memory ("the largest that
fits"). The RSS high-water mark is reset before the calls (Linux ``/proc/self/clear_refs``).
The exponent b of a least-squares fit time ~ N^b (and memory ~ N^b) over the sizes with
N >= 300 is printed: b close to 1 is linear scaling. ``--quick``: sizes 81 to 648, 2 repeats.
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

import numpy as np
import torch

if not __package__:  # run as `python benchmarks/scaling.py`: import the package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import current_rss_mb, peak_mb, reset_peak, untrained_model, water_box
from equipot import AtomicGraph


def measure(backbone: str, dtype: str, n_side: int, repeats: int, threads: int, device: str) -> dict:
    """One size: ms per energy+forces call (median), neighbour-list ms, edges and peak memory (MB)."""
    os.environ["EQUIPOT_SCATTER_BACKEND"] = "torch"
    torch.set_num_threads(threads)
    model = untrained_model(backbone).to(device=device, dtype=getattr(torch, dtype))
    atoms = water_box(n_side)
    t0 = time.perf_counter()
    graph = AtomicGraph.from_atoms(atoms, model.cutoff, dtype=getattr(torch, dtype), device=device)
    nl_ms = 1e3 * (time.perf_counter() - t0)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    reset_peak(device)
    base = 0.0 if cuda else current_rss_mb()
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        out = model(graph, compute_forces=True)
        out["forces"].sum().item()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        del out
    return {"atoms": len(atoms), "edges": graph.num_edges, "ms": 1e3 * statistics.median(times[1:]),
            "nl_ms": nl_ms, "mb": max(peak_mb(device) - base, 0.0)}


def fit_exponent(n: list[float], y: list[float]) -> float:
    """b of the least-squares fit log y = a + b log n."""
    return float(np.polyfit(np.log(n), np.log(y), 1)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ponita")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sides", nargs="+", type=int, default=[3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32],
                        help="water boxes of n^3 molecules (3 n^3 atoms), in increasing order")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop after a call slower than this")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per size (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="sizes 81..648 atoms, 2 repeats")
    args = parser.parse_args(argv)
    sides = [3, 4, 5, 6] if args.quick else args.sides
    repeats = 2 if args.quick else args.repeats
    print(f"# {args.backbone} {args.dtype} device={args.device} threads={args.threads} scatter=torch "
          f"repeats={repeats}")
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for n_side in sides:
        try:
            with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                row = pool.submit(measure, args.backbone, args.dtype, n_side, repeats, args.threads,
                                  args.device).result()
        except Exception as exc:  # CUDA out of memory (or a dead worker): the previous size was the largest
            print(f"# {3 * n_side ** 3} atoms: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            break
        rows.append(row)
        print(f"{row['atoms']:7d} atoms {row['edges']:9d} edges {row['ms']:10.1f} ms "
              f"({1e3 * row['ms'] / row['atoms']:.1f} µs/atom)  neighbours {row['nl_ms']:8.1f} ms  "
              f"{row['mb']:8.1f} MB", flush=True)
        if row["ms"] > 1e3 * args.max_seconds:
            print(f"# stopping: a call took longer than --max-seconds={args.max_seconds}")
            break
    print("\n| atoms | edges | ms/call | µs/atom | neighbour list ms | peak MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['atoms']} | {r['edges']} | {r['ms']:.1f} | {1e3 * r['ms'] / r['atoms']:.1f} | "
              f"{r['nl_ms']:.1f} | {r['mb']:.0f} |")
    big = [r for r in rows if r["atoms"] >= 300]
    if len(big) >= 2:
        n = [r["atoms"] for r in big]
        b_time = fit_exponent(n, [r["ms"] for r in big])
        mem = [(r["atoms"], r["mb"]) for r in big if r["mb"] > 0]
        b_mem = fit_exponent(*zip(*mem)) if len(mem) >= 2 else float("nan")
        print(f"\nfit over {n[0]}..{n[-1]} atoms: time ~ N^{b_time:.2f}, memory ~ N^{b_mem:.2f} "
              f"(1.00 = linear); largest measured: {rows[-1]['atoms']} atoms")
    else:
        print("\nfewer than two sizes with >= 300 atoms: no fit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
