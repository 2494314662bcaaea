"""All registered backbones side by side at a comparable parameter count.

    python benchmarks/backbones.py [--seconds 120] [--params 100000] [--train-frames 500]
                                   [--test-frames 1000] [--threads 2] [--backbones ...] [--quick]

For every backbone in ``equipot.available_backbones()`` (or ``--backbones``):

1. size: ``hidden`` is chosen so that the parameter count is closest to ``--params`` (other
   options at the backbone's defaults, as in ``BASE_OPTIONS``, or grown with ``hidden`` as in
   ``SIZE_RULES``); the count is printed.
2. symmetry: relative rotation and reflection errors of energy and forces
   (:func:`equipot.testing.transform_errors`, float64, worst of 3 random transforms each) on
   the first revised-MD17 aspirin frame.
3. speed: ms per energy+forces call of the model (forward + autograd backward, float32,
   neighbour list built once beforehand and not timed; median of ``--repeats``) on aspirin
   (21 atoms) and on a periodic water box at 1 g/cm^3 (``water_box(8)``: 512 molecules,
   1536 atoms). Backbones that reject periodic input are reported as such.
4. accuracy: the same wall-clock budget (``--seconds``) of training by the equal-budget harness
   (``benchmarks/harness.py``: ``equipot.training.train``) on ``--train-frames`` frames of the
   revised-MD17 ethanol ``train_01`` split (50 more validate), float32, batch 8, AdamW 2e-3 with
   weight decay 1e-5, loss = (ΔE/atom)^2 + 10 (ΔF)^2 in eV, eV/Å; then force (meV/Å) and energy
   (meV) MAE on ``--test-frames`` seeded ethanol test frames. Per-element reference energies are
   fitted by least squares and the scale is the RMS training force, the same for every backbone.

Prints a markdown table. ``--quick`` is a smoke run: tiny budget, few frames, a 192-atom water
box instead of 1536. Data: ``../shared/data/rmd17`` beside the repository (or ``--data``),
converted to HDF5 into ``--out``.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

if not __package__:  # run as `python benchmarks/backbones.py`: import the package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness
from benchmarks.common import CUTOFF, DEFAULT_DATA, DEFAULT_OUT, ELEMENTS, rmd17_h5, water_box
from equipot import AtomicGraph, Potential, available_backbones, build_potential
from equipot.data import H5Dataset
from equipot.testing import transform_errors

ALL_BACKBONES = ("ponita", "lieconv", "frame_averaging", "ga_attention", "grepsnet")
# options held fixed while `hidden` is sized to the parameter target
BASE_OPTIONS: dict[str, dict] = {
    "ponita": {"layers": 3, "grid_size": 12},
    "lieconv": {},
    "frame_averaging": {},
    "ga_attention": {"layers": 3, "heads": 4, "references": 4},
    "grepsnet": {"layers": 3},
}
HIDDEN_CHOICES = range(8, 257, 8)
# options that grow with `hidden` (G-RepsNet: vector/tensor channels at a quarter of the scalars,
# the ratio of its defaults; otherwise the tensor channels alone would fill the budget)
SIZE_RULES = {
    "grepsnet": lambda hidden: {"hidden": hidden, "tensor_channels": max(4, hidden // 4)},
}


def count_params(model: torch.nn.Module) -> int:
    """Number of parameters (weights) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def sized_options(backbone: str, target: int) -> tuple[dict, int]:
    """Backbone options whose parameter count is closest to ``target``, and that count."""
    base = dict(BASE_OPTIONS.get(backbone, {}))
    best: tuple[int, dict, int] | None = None
    for hidden in HIDDEN_CHOICES:
        options = {**base, **SIZE_RULES.get(backbone, lambda h: {"hidden": h})(hidden)}
        try:
            n = count_params(build_potential(backbone, elements=list(ELEMENTS), cutoff=CUTOFF, **options))
        except (ValueError, TypeError):
            continue
        if best is None or abs(n - target) < best[0]:
            best = (abs(n - target), options, n)
        if n > target:
            break
    if best is None:  # no `hidden` option: the backbone's defaults
        n = count_params(build_potential(backbone, elements=list(ELEMENTS), cutoff=CUTOFF, **base))
        return base, n
    return best[1], best[2]


def symmetry_errors(model: Potential, atoms: Atoms, seed: int = 0) -> dict[str, float]:
    """Worst relative energy and force errors of 3 random rotations and 3 reflections (float64)."""
    model = model.double().eval()
    rng = np.random.default_rng(seed)
    out = {}
    for label, reflect in (("rot", False), ("refl", True)):
        errs = [transform_errors(model, atoms, rng, reflect=reflect) for _ in range(3)]
        out[f"{label}_E"] = max(e["energy"] for e in errs)
        out[f"{label}_F"] = max(e["forces"] for e in errs)
    return out


def time_call(model: Potential, atoms: Atoms, repeats: int) -> float:
    """Median ms per energy+forces call (float32); raises ValueError if the backbone rejects the input."""
    model = model.float().eval()
    graph = AtomicGraph.from_atoms(atoms, CUTOFF, dtype=torch.float32)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        model(graph, compute_forces=True)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[1:])


def train_and_test(backbone: str, options: dict, args: argparse.Namespace) -> dict:
    """Train one backbone with the harness on ethanol (see the module docstring, item 4).

    Returns the harness result: ``forces_mae_meV_A``, ``energy_mae_meV``, ``steps``, ``epochs``,
    ``train_time_s`` (s)."""
    setting = harness.settings(
        molecule="ethanol", data_dir=str(args.data), out=str(args.out), budget=args.seconds,
        n_train=args.train_frames, n_test=args.test_frames, seed=args.seed, batch_size=args.batch_size, lr=2e-3,
        forces_weight=10.0,
        overrides=["train.dtype=float32", "train.weight_decay=1e-5",
                   *harness.model_overrides({"backbone": backbone, **options})])
    return harness.run_model("equipot", setting, harness.prepare(setting, label=f"equipot_{backbone}"))


def fmt(x: float | None, spec: str = ".1f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="training wall-clock budget per backbone (s)")
    parser.add_argument("--params", type=int, default=100_000, help="target parameter count of every backbone")
    parser.add_argument("--train-frames", type=int, default=500, help="ethanol training frames (of 1000)")
    parser.add_argument("--test-frames", type=int, default=1000, help="ethanol test frames (of 1000)")
    parser.add_argument("--batch-size", type=int, default=8, help="structures per training step")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per system (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--backbones", nargs="+", default=None, help="default: all registered")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the revised MD17 npz files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the HDF5 files and the runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 5 s budget, 40/40 frames, 1 repeat, 192-atom water box")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.train_frames, args.test_frames, args.repeats = 5.0, 40, 40, 1
    torch.set_num_threads(args.threads)

    registered = available_backbones()
    wanted = args.backbones or list(ALL_BACKBONES) + [b for b in registered if b not in ALL_BACKBONES]
    notes = [f"{b}: not registered (module missing or failed to import), skipped"
             for b in wanted if b not in registered]
    wanted = [b for b in wanted if b in registered]

    first = H5Dataset(rmd17_h5("aspirin", args.data, args.out), split="train")[0]
    aspirin = Atoms(numbers=first.numbers, positions=first.positions)
    water = water_box(4 if args.quick else 8)
    print(f"# threads={args.threads} budget={args.seconds:g} s/backbone target params={args.params} "
          f"train frames={args.train_frames} test frames={args.test_frames} water atoms={len(water)}", flush=True)

    rows = []
    for backbone in wanted:
        options, n_params = sized_options(backbone, args.params)
        print(f"# {backbone}: options {options}, {n_params} parameters", flush=True)
        torch.manual_seed(args.seed)
        model = build_potential(backbone, elements=list(ELEMENTS), cutoff=CUTOFF, **options)
        sym = symmetry_errors(model, aspirin, args.seed)
        ms_mol = time_call(model, aspirin, args.repeats)
        try:
            ms_water = time_call(model, water, args.repeats)
        except (ValueError, NotImplementedError) as exc:
            ms_water = None
            notes.append(f"{backbone}: periodic water box skipped ({str(exc).splitlines()[0]})")
        print(f"#   symmetry {sym}, {ms_mol:.1f} ms aspirin, {fmt(ms_water)} ms water", flush=True)
        fit = train_and_test(backbone, options, args)
        print(f"#   trained {fit['steps']} steps ({fit['epochs']} epochs) in {fit['train_time_s']:.0f} s: "
              f"force MAE {fit['forces_mae_meV_A']:.1f} meV/Å, energy MAE {fit['energy_mae_meV']:.1f} meV",
              flush=True)
        rows.append((backbone, options, n_params, sym, ms_mol, ms_water, fit))

    print()
    print(f"| backbone | options | params | rot. err E / F | refl. err E / F | ms aspirin-21 | "
          f"ms water-{len(water)} (PBC) | steps in {args.seconds:g} s | ethanol force MAE (meV/Å) | "
          "energy MAE (meV) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for backbone, options, n_params, sym, ms_mol, ms_water, fit in rows:
        opts = ", ".join(f"{k}={v}" for k, v in options.items())
        print(f"| {backbone} | {opts} | {n_params} | {sym['rot_E']:.1e} / {sym['rot_F']:.1e} | "
              f"{sym['refl_E']:.1e} / {sym['refl_F']:.1e} | {ms_mol:.1f} | {fmt(ms_water)} | {fit['steps']} | "
              f"{fit['forces_mae_meV_A']:.1f} | {fit['energy_mae_meV']:.1f} |")
    for note in notes:
        print(f"- {note}")
    print("- errors relative (|dE|/max(1,|E|), max|dF|/max(1,max|F|)), float64, aspirin, worst of 3; "
          "times float32, model only (neighbour list excluded), median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
