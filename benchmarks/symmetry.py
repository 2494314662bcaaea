"""Rotation error of a trained R3×S2 model on revised-MD17 test frames, per inference grid.

For each of ``--frames`` test frames and ``--rotations`` random rotations R (float64, eval mode):
the force error RMS(R^T F(R x) - F(x)) / RMS(F(x)) and the energy error |E(R x) - E(x)| (meV).
Prints mean and worst of both per grid, the test force MAE on those frames, and the time per
energy+forces call; ``--json`` writes the table.

Usage::

    python benchmarks/symmetry.py runs/ethanol/model.pt --molecule ethanol \\
        --grids train icosahedron:12 dodecahedron:20 repulsion:32 geodesic:42 fibonacci:96
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

if not __package__:  # run as `python benchmarks/symmetry.py`: import the package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_DATA, DEFAULT_OUT, rmd17_h5, sample
from equipot import AtomicGraph, Potential, load_model
from equipot.data import Frame, H5Dataset
from equipot.potentials.ponita import set_inference_grid
from equipot.potentials.sphere import orientation_grid, quadrature_error
from equipot.testing import random_rotation


def sample_test_frames(molecule: str, data_dir: Path, out: Path, n: int, seed: int) -> list[Frame]:
    """``n`` frames (seeded) of the official ``test_01`` split of a revised-MD17 molecule (eV, Å)."""
    test = sample(H5Dataset(rmd17_h5(molecule, data_dir, out), split="test"), n, seed)
    return [test[k] for k in range(len(test))]


def _predict(model: Potential, numbers: np.ndarray, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces [n, 3] (eV/Å) of one molecule (positions in Å), float64."""
    graph = AtomicGraph.from_structures([(numbers, positions, None, None)], model.cutoff, dtype=torch.float64)
    out = model(graph, compute_forces=True)
    return float(out["energy"][0].detach()), out["forces"].detach().numpy()


def rotation_errors(model: Potential, frames: list[Frame], rotations: int, seed: int) -> dict:
    """Mean/worst force error (RMS ΔF / RMS F) and energy error (meV) over frames × rotations."""
    rng = np.random.default_rng(seed)
    f_err, e_err, abs_f, n_f = [], [], 0.0, 0
    for frame in frames:
        e0, f0 = _predict(model, frame.numbers, frame.positions)
        abs_f += float(np.abs(f0 - frame.forces).sum())
        n_f += f0.size
        for _ in range(rotations):
            rot = random_rotation(rng)
            e1, f1 = _predict(model, frame.numbers, frame.positions @ rot.T)
            f_err.append(float(np.sqrt(np.mean((f1 @ rot - f0) ** 2)) / np.sqrt(np.mean(f0**2))))
            e_err.append(abs(e1 - e0) * 1e3)
    return {"force_rel_mean": float(np.mean(f_err)), "force_rel_worst": float(np.max(f_err)),
            "energy_meV_mean": float(np.mean(e_err)), "energy_meV_worst": float(np.max(e_err)),
            "test_force_mae_meV_A": abs_f / n_f * 1e3}


def call_time(model: Potential, frame: Frame, repeats: int = 5) -> float:
    """Median seconds of one energy+forces call on ``frame`` in the model's dtype."""
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        _predict(model, frame.numbers, frame.positions)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def parse_grid(text: str) -> tuple[str | None, int | None]:
    """``train`` -> (None, None); ``NAME:SIZE`` -> (NAME, SIZE); ``NAME`` -> (NAME, None)."""
    if text == "train":
        return None, None
    name, _, size = text.partition(":")
    return name, int(size) if size else None


def measure(model_path: str | Path, molecule: str, grids: list[str], frames: int = 20, rotations: int = 3,
            seed: int = 0, data_dir: Path = DEFAULT_DATA, out: Path = DEFAULT_OUT) -> list[dict]:
    """One row per grid (see the module docstring)."""
    base = load_model(model_path).double().eval()
    data = sample_test_frames(molecule, Path(data_dir), Path(out), frames, seed)
    rows = []
    for text in grids:
        model = copy.deepcopy(base)
        name, size = parse_grid(text)
        if name is not None or size is not None:
            set_inference_grid(model, name, size)
        row = {"grid": text, "points": int(model.backbone.eval_grid.shape[0]),
               **rotation_errors(model, data, rotations, seed), "ms_per_call": call_time(model, data[0]) * 1e3}
        rows.append(row)
        print(f"{text:<16}{row['points']:>5}  F {row['force_rel_mean'] * 100:6.2f} % (worst "
              f"{row['force_rel_worst'] * 100:6.2f} %)  E {row['energy_meV_mean']:7.3f} meV (worst "
              f"{row['energy_meV_worst']:7.3f})  test F MAE {row['test_force_mae_meV_A']:7.2f} meV/Å  "
              f"{row['ms_per_call']:6.1f} ms", flush=True)
    return rows


QUADRATURE_GRIDS = ("fibonacci:12", "icosahedron:12", "fibonacci:20", "dodecahedron:20", "repulsion:20",
                    "repulsion:24", "fibonacci:32", "repulsion:32", "geodesic:42", "repulsion:48", "geodesic:92")


def quadrature_table(grids: Sequence[str] = QUADRATURE_GRIDS, degrees: Sequence[int] = range(1, 13)) -> str:
    """Markdown table: each grid's quadrature error (%, see ``quadrature_error``) by degree."""
    lines = ["| grid | points | " + " | ".join(f"l={d}" for d in degrees) + " |",
             "|---|---:|" + "---:|" * len(degrees)]
    for text in grids:
        name, size = parse_grid(text)
        grid = orientation_grid(name, size)
        errs = [quadrature_error(grid, d) * 100 for d in degrees]
        lines.append(f"| {name} | {size} | " + " | ".join("0" if e < 5e-3 else f"{e:.1f}" for e in errs) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", help="equipot model file (ponita backbone)")
    p.add_argument("--quadrature-table", action="store_true", help="print the grids' quadrature errors and exit")
    p.add_argument("--molecule", default="ethanol")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the converted HDF5 file")
    p.add_argument("--grids", nargs="+", default=["train"], help="train, or NAME:SIZE (e.g. repulsion:24)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--rotations", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    if args.quadrature_table:
        print(quadrature_table())
        return 0
    if args.model is None:
        p.error("give a model file (or --quadrature-table)")
    torch.set_num_threads(args.threads)
    rows = measure(args.model, args.molecule, args.grids, args.frames, args.rotations, args.seed,
                   Path(args.data_dir), Path(args.out))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
