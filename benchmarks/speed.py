"""ms per energy+force call through the ASE calculator, equipot against MACE in the same run.

    python benchmarks/speed.py [--device cpu|cuda] [--dtype float32 float64] [--backbones ponita ...]
                               [--repeats 6] [--threads 2] [--largest]

For every system (biphenyl-22, C60, water 192 and 1536 atoms) and every equipot backbone, dtype and
scatter backend available on the device, prints the median ms per call (positions are moved by
1e-3 Å before each call so every call recomputes; the equipot skin keeps the neighbour list
between calls, "skin=0" rebuilds it every call like the peers do) and the peak memory (CUDA:
max allocated; CPU: growth of the process's peak RSS). MACE (mace-torch) is timed in the same run
when it is importable; otherwise the script says so and goes on. Peers are best installed in their
own environment: ``python -m venv peers && peers/bin/pip install torch==2.13.0 mace-torch`` then
run this script with that environment's python after ``pip install -e .`` of equipot there.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from systems import systems, water_box  # noqa: E402

from equipot import EquiCalc, available_backbones, build_potential  # noqa: E402

# Per-backbone settings of comparable size (~100-150k parameters); ponita is the default model.
DEFAULTS = {
    "ponita": dict(hidden=64, layers=3, grid_size=12),
    "lieconv": {},
    "frame_averaging": {},
    "ga_attention": {},
    "grepsnet": {},
}


def scatter_backends(device: str) -> list[str]:
    try:
        from equipot.ops import available_backends
    except ImportError:
        return ["torch"]
    return list(available_backends(device))


def peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_calc(calc, atoms, repeats: int, device: str) -> tuple[float, float]:
    atoms = atoms.copy()
    atoms.calc = calc
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base = peak_mb(device)
    times = []
    for _ in range(repeats):
        atoms.positions += 1e-3
        t0 = time.perf_counter()
        atoms.get_forces()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    mem = peak_mb(device) - (0 if device.startswith("cuda") else base)
    return 1e3 * statistics.median(times[1:]), mem


def mace_calc(kind: str, dtype: str, device: str):
    import numpy as np
    from e3nn import o3
    from mace import modules
    from mace.calculators import MACECalculator

    hidden = {"mace-small": "96x0e", "mace-medium": "128x0e+128x1o"}[kind]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))  # MACE builds its modules in the default dtype
    try:
        model = modules.ScaleShiftMACE(
            r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
            interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            num_interactions=2, num_elements=3, hidden_irreps=o3.Irreps(hidden),
            MLP_irreps=o3.Irreps("16x0e"), gate=torch.nn.functional.silu,
            atomic_energies=np.zeros(3), avg_num_neighbors=20.0, atomic_numbers=[1, 6, 8],
            correlation=3, radial_type="bessel", atomic_inter_scale=1.0, atomic_inter_shift=0.0)
        return MACECalculator(models=model, device=device, default_dtype=dtype)
    finally:
        torch.set_default_dtype(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--backbones", nargs="+", default=["ponita"])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-mace", action="store_true", help="skip MACE even when installed")
    parser.add_argument("--largest", action="store_true",
                        help="also grow water boxes until one no longer fits (CUDA) and report the largest")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    rows = []
    backends = scatter_backends(device)
    print(f"# device={device} threads={args.threads} scatter backends={backends} "
          f"backbones available={available_backbones()}")
    for name, atoms in systems():
        for backbone in args.backbones:
            if backbone not in available_backbones():
                print(f"# {backbone}: not available, skipped")
                continue
            model = build_potential(backbone, elements=[1, 6, 8], cutoff=5.0, **DEFAULTS.get(backbone, {}))
            for dtype in args.dtype:
                for backend in backends:
                    os.environ["EQUIPOT_SCATTER_BACKEND"] = backend
                    for skin in (0.5, 0.0):
                        try:
                            calc = EquiCalc(model, device=device, dtype=getattr(torch, dtype), skin=skin)
                            ms, mem = time_calc(calc, atoms, args.repeats, device)
                        except (ValueError, RuntimeError) as exc:
                            print(f"# {backbone} {name}: {str(exc).splitlines()[0]}")
                            continue
                        rows.append((name, len(atoms), f"equipot-{backbone}", dtype, f"{backend}/skin={skin}", ms, mem))
                        print(f"{name:12s} {len(atoms):5d} equipot-{backbone:16s} {dtype} {backend}/skin={skin}: "
                              f"{ms:9.1f} ms  {mem:8.1f} MB", flush=True)
        os.environ.pop("EQUIPOT_SCATTER_BACKEND", None)
        if args.no_mace:
            continue
        for kind in ("mace-small", "mace-medium"):
            for dtype in args.dtype:
                try:
                    calc = mace_calc(kind, dtype, device)
                except ImportError:
                    print("# MACE (mace-torch) not installed: peer column skipped")
                    args.no_mace = True
                    break
                ms, mem = time_calc(calc, atoms, args.repeats, device)
                rows.append((name, len(atoms), kind, dtype, "-", ms, mem))
                print(f"{name:12s} {len(atoms):5d} {kind:24s} {dtype} -: {ms:9.1f} ms  {mem:8.1f} MB", flush=True)
            if args.no_mace:
                break
    print("\n| system | atoms | model | dtype | backend | ms/call | peak MB | ratio to MACE-small |")
    print("|---|---|---|---|---|---|---|---|")
    for name, n, model, dtype, backend, ms, mem in rows:
        ref = next((r[5] for r in rows if r[0] == name and r[2] == "mace-small" and r[3] == dtype), None)
        ratio = f"{ms / ref:.2f}" if ref else "n/a"
        print(f"| {name} | {n} | {model} | {dtype} | {backend} | {ms:.1f} | {mem:.0f} | {ratio} |")
    if args.largest and device.startswith("cuda"):
        model = build_potential("ponita", elements=[1, 6, 8], cutoff=5.0, **DEFAULTS["ponita"])
        for backend in backends:
            os.environ["EQUIPOT_SCATTER_BACKEND"] = backend
            largest, n_side = 0, 8
            while True:
                atoms = water_box(n_side)
                try:
                    time_calc(EquiCalc(model, device=device, dtype=torch.float32), atoms, 2, device)
                except torch.cuda.OutOfMemoryError:
                    break
                largest, n_side = len(atoms), int(n_side * 1.26) + 1
                torch.cuda.empty_cache()
            print(f"largest water box that fits ({backend}, float32): {largest} atoms")


if __name__ == "__main__":
    main()
