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
4. accuracy: the same wall-clock budget (``--seconds``) of AdamW on energies + forces
   (``create_graph=True``) on ``--train-frames`` revised-MD17 ethanol training frames
   (float32, batch 8, loss = mean((dE/N)^2) + 10 mean(dF^2) in eV, eV/Å), then force and energy
   MAE on the ethanol test frames. Per-element reference energies are fitted by least squares
   and the scale is set to the RMS training force, the same for every backbone.

Prints a markdown table. ``--quick`` is a smoke run: tiny budget, few frames, a 192-atom water
box instead of 1536. Data: ``../shared/data/rmd17`` beside the repository (or ``--data``).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from equipot import AtomicGraph, available_backbones, build_potential
from equipot.data.units import KCAL_MOL
from equipot.testing import transform_errors

ELEMENTS = [1, 6, 8]
CUTOFF = 5.0
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


def water_box(n_side: int) -> Atoms:
    """Periodic water box of n_side^3 molecules from benchmarks/systems.py (beside this script)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from systems import water_box as build

    return build(n_side)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def sized_options(backbone: str, target: int) -> tuple[dict, int]:
    """Backbone options whose parameter count is closest to ``target``, and that count."""
    base = dict(BASE_OPTIONS.get(backbone, {}))
    best: tuple[int, dict, int] | None = None
    for hidden in HIDDEN_CHOICES:
        options = {**base, **SIZE_RULES.get(backbone, lambda h: {"hidden": h})(hidden)}
        try:
            n = count_params(build_potential(backbone, elements=ELEMENTS, cutoff=CUTOFF, **options))
        except (ValueError, TypeError):
            continue
        if best is None or abs(n - target) < best[0]:
            best = (abs(n - target), options, n)
        if n > target:
            break
    if best is None:  # no `hidden` option: the backbone's defaults
        n = count_params(build_potential(backbone, elements=ELEMENTS, cutoff=CUTOFF, **base))
        return base, n
    return best[1], best[2]


def load_rmd17(path: Path, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(numbers [A], positions [M, A, 3] Å, energies [M] eV, forces [M, A, 3] eV/Å), M = n random frames."""
    if not path.is_file():
        raise FileNotFoundError(f"revised MD17 file {path} not found (use --data)")
    d = np.load(path)
    idx = np.arange(len(d["energies"]))
    if n is not None and n < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))
    return (d["nuclear_charges"].astype(np.int64), d["coords"][idx], d["energies"][idx] * KCAL_MOL,
            d["forces"][idx] * KCAL_MOL)


def make_graph(numbers: np.ndarray, positions: np.ndarray, dtype: torch.dtype) -> AtomicGraph:
    return AtomicGraph.from_structures([(numbers, p, None, None) for p in positions], CUTOFF, dtype=dtype)


def symmetry_errors(model, atoms: Atoms, seed: int = 0) -> dict[str, float]:
    model = model.double().eval()
    rng = np.random.default_rng(seed)
    out = {}
    for label, reflect in (("rot", False), ("refl", True)):
        errs = [transform_errors(model, atoms, rng, reflect=reflect) for _ in range(3)]
        out[f"{label}_E"] = max(e["energy"] for e in errs)
        out[f"{label}_F"] = max(e["forces"] for e in errs)
    return out


def time_call(model, atoms: Atoms, repeats: int) -> float:
    """Median ms per energy+forces call (float32); raises ValueError if the backbone rejects the input."""
    model = model.float().eval()
    graph = AtomicGraph.from_atoms(atoms, CUTOFF, dtype=torch.float32)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        model(graph, compute_forces=True)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[1:])


def train_and_test(model, train, test, seconds: float, batch_size: int, seed: int) -> dict[str, float]:
    """AdamW on energies + forces for ``seconds`` of wall clock; MAE on the test frames."""
    numbers, pos, energy, forces = train
    model = model.float()
    model.fit_atomic_energies([numbers] * len(energy), energy)
    model.set_reference(scale=float(np.sqrt(np.mean(forces**2))), shift=0.0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-5)
    rng = np.random.default_rng(seed)
    n_atoms = len(numbers)
    steps, epochs = 0, 0
    start = time.perf_counter()
    model.train()
    while time.perf_counter() - start < seconds:
        order = rng.permutation(len(energy))
        epochs += 1
        for b in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[b: b + batch_size]
            graph = make_graph(numbers, pos[idx], torch.float32)
            out = model(graph, compute_forces=True, create_graph=True)
            e_ref = torch.as_tensor(energy[idx])
            f_ref = torch.as_tensor(forces[idx].reshape(-1, 3), dtype=torch.float32)
            loss = ((out["energy"] - e_ref) / n_atoms).pow(2).mean().float() + 10.0 * (out["forces"] - f_ref).pow(
                2).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
    elapsed = time.perf_counter() - start
    model.eval()
    t_numbers, t_pos, t_energy, t_forces = test
    e_err, f_err = [], []
    for b in range(0, len(t_energy), 50):
        graph = make_graph(t_numbers, t_pos[b: b + 50], torch.float32)
        out = model(graph, compute_forces=True)
        e_err.append(np.abs(out["energy"].detach().numpy() - t_energy[b: b + 50]))
        f_err.append(np.abs(out["forces"].detach().numpy() - t_forces[b: b + 50].reshape(-1, 3)))
    return {
        "steps": steps,
        "epochs": epochs,
        "train_s": elapsed,
        "force_mae": 1e3 * float(np.concatenate(f_err).mean()),
        "energy_mae": 1e3 * float(np.concatenate(e_err).mean()),
    }


def fmt(x: float | None, spec: str = ".1f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="training wall-clock budget per backbone (s)")
    parser.add_argument("--params", type=int, default=100_000, help="target parameter count of every backbone")
    parser.add_argument("--train-frames", type=int, default=500, help="ethanol training frames (of 1000)")
    parser.add_argument("--test-frames", type=int, default=1000, help="ethanol test frames (of 1000)")
    parser.add_argument("--batch-size", type=int, default=8, help="structures per training step")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per system (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--backbones", nargs="+", default=None, help="default: all registered")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
                        / "rmd17", help="folder with the revised MD17 npz files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 5 s budget, 40/40 frames, 1 repeat, 192-atom water box")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.train_frames, args.test_frames, args.repeats = 5.0, 40, 40, 1
    torch.set_num_threads(args.threads)

    registered = available_backbones()
    wanted = args.backbones or list(ALL_BACKBONES) + [b for b in registered if b not in ALL_BACKBONES]
    notes = [f"{b}: not registered (module missing or failed to import), skipped"
             for b in wanted if b not in registered]
    wanted = [b for b in wanted if b in registered]

    asp_numbers, asp_pos, _, _ = load_rmd17(args.data / "rmd17_aspirin_train_01.npz", None, args.seed)
    aspirin = Atoms(numbers=asp_numbers, positions=asp_pos[0])
    water = water_box(4 if args.quick else 8)
    train = load_rmd17(args.data / "rmd17_ethanol_train_01.npz", args.train_frames, args.seed)
    test = load_rmd17(args.data / "rmd17_ethanol_test_01.npz", args.test_frames, args.seed)
    print(f"# threads={args.threads} budget={args.seconds:g} s/backbone target params={args.params} "
          f"train frames={len(train[2])} test frames={len(test[2])} water atoms={len(water)}", flush=True)

    rows = []
    for backbone in wanted:
        options, n_params = sized_options(backbone, args.params)
        print(f"# {backbone}: options {options}, {n_params} parameters", flush=True)
        torch.manual_seed(args.seed)
        model = build_potential(backbone, elements=ELEMENTS, cutoff=CUTOFF, **options)
        sym = symmetry_errors(model, aspirin, args.seed)
        ms_mol = time_call(model, aspirin, args.repeats)
        try:
            ms_water = time_call(model, water, args.repeats)
        except (ValueError, NotImplementedError) as exc:
            ms_water = None
            notes.append(f"{backbone}: periodic water box skipped ({str(exc).splitlines()[0]})")
        print(f"#   symmetry {sym}, {ms_mol:.1f} ms aspirin, {fmt(ms_water)} ms water", flush=True)
        torch.manual_seed(args.seed)
        model = build_potential(backbone, elements=ELEMENTS, cutoff=CUTOFF, **options)
        fit = train_and_test(model, train, test, args.seconds, args.batch_size, args.seed)
        print(f"#   trained {fit['steps']} steps ({fit['epochs']} epochs) in {fit['train_s']:.0f} s: "
              f"force MAE {fit['force_mae']:.1f} meV/Å, energy MAE {fit['energy_mae']:.1f} meV", flush=True)
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
              f"{fit['force_mae']:.1f} | {fit['energy_mae']:.1f} |")
    for note in notes:
        print(f"- {note}")
    print("- errors relative (|dE|/max(1,|E|), max|dF|/max(1,max|F|)), float64, aspirin, worst of 3; "
          "times float32, model only (neighbour list excluded), median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
