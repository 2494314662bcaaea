"""Accuracy at equal budget: equipot against MACE on revised MD17, and learning curves.

    python benchmarks/accuracy.py [--molecule ethanol] [--sizes 50 100 250 1000] [--seconds 600]
                                  [--models equipot mace-small] [--test-frames 1000] [--threads 2]
                                  [--dtype float32] [--quick] [--data ../shared/data/rmd17]

Reference data: the official revised-MD17 split 01 files (``rmd17_<molecule>_train_01.npz``,
1000 frames, and ``rmd17_<molecule>_test_01.npz``), PBE/def2-SVP, converted to eV and Å. For every
training-set size N in ``--sizes`` (nested subsets of one seeded permutation of the training file)
every model is trained for the same wall-clock budget (``--seconds`` of optimisation steps; data
preparation and evaluation are not counted), then its energy MAE (meV per molecule) and force
MAE (meV/Å, per component) are measured on the first ``--test-frames`` frames of the test file.

Both models get the same treatment: per-element reference energies by least squares on the N
training frames (subtracted from the targets, so both learn the same residual energy), scale =
RMS training force component, average neighbour count from the training frames, float32,
batches of 8, AdamW (lr 5e-3 decayed linearly to 5e-4 over the budget), loss
mean((dE / n_atoms)^2) + 100 mean(dF^2) in eV and eV/Å, neighbour lists built once beforehand.

- equipot: the default R3×S2 model of ``speed.py`` (``--equipot-options`` to change it), trained
  with a plain loop on ``Potential.forward(..., create_graph=True)`` (the loop is written out here
  rather than calling ``equipot train`` so both models run the identical schedule and clock).
- MACE: ``ScaleShiftMACE`` at the rMD17 settings (``peers.py``), its modules called directly in
  the same loop. Needs mace-torch (``benchmarks/peers_env.sh``); when it is missing the script
  says so and trains equipot alone.

Published for comparison (not this budget): MACE, ethanol, 950 frames, ~days of GPU training:
2.1 meV/Å force MAE. ``--quick``: sizes 50 and 250, 20 s each, 200 test frames.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import PeerUnavailable, default_dtype, mace_model  # noqa: E402
from speed import DEFAULTS  # noqa: E402

from equipot import AtomicGraph, build_potential  # noqa: E402
from equipot.data.units import KCAL_MOL  # noqa: E402
from equipot.neighbors import neighbor_list  # noqa: E402

CUTOFF = 5.0
FORCE_WEIGHT = 100.0
DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rmd17"


@dataclass
class Frames:
    """Frames of one molecule: numbers [n], positions [M, n, 3] Å, energy [M] eV, forces [M, n, 3] eV/Å."""

    numbers: np.ndarray
    positions: np.ndarray
    energy: np.ndarray
    forces: np.ndarray


def load_rmd17(path: Path) -> Frames:
    """A revised-MD17 ``.npz`` (kcal/mol, Å) in eV and Å."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: revised-MD17 file not found (see --data)")
    with np.load(path) as d:
        return Frames(d["nuclear_charges"].astype(np.int64), d["coords"].astype(np.float64),
                      d["energies"] * KCAL_MOL, d["forces"] * KCAL_MOL)


@dataclass
class Reference:
    """What both models are given: per-element energies (eV), scale (eV/Å), mean neighbour count."""

    elements: list[int]
    e0: np.ndarray
    scale: float
    avg_num_neighbors: float

    @classmethod
    def fit(cls, frames: Frames, idx: np.ndarray) -> "Reference":
        elements = sorted(set(frames.numbers.tolist()))
        counts = np.array([[np.sum(frames.numbers == z) for z in elements]] * len(idx), dtype=float)
        # One molecule: the least-squares reference is the minimum-norm split of the mean energy.
        e0, *_ = np.linalg.lstsq(counts, frames.energy[idx], rcond=None)
        scale = float(np.sqrt(np.mean(frames.forces[idx] ** 2)))
        n_edges = [len(neighbor_list(frames.positions[k], CUTOFF)[0]) for k in idx[:50]]
        return cls(elements, e0, scale, float(np.mean(n_edges)) / len(frames.numbers))

    def residual(self, frames: Frames) -> np.ndarray:
        """Energies minus the per-element references, [M] eV."""
        index = {z: s for s, z in enumerate(self.elements)}
        return frames.energy - sum(self.e0[index[int(z)]] for z in frames.numbers)


class EquipotLearner:
    """An equipot Potential; neighbour lists of each frame set are built once by :meth:`prepare`."""

    def __init__(self, ref: Reference, dtype: torch.dtype, options: dict):
        torch.manual_seed(0)
        backbone = options.get("backbone", "ponita")
        self.label = f"equipot-{backbone}"
        opts = {k: v for k, v in options.items() if k != "backbone"}
        self.model = build_potential(backbone, elements=ref.elements, cutoff=CUTOFF, scale=ref.scale,
                                     avg_num_neighbors=ref.avg_num_neighbors, **opts).to(dtype)
        self.dtype = dtype
        self.sets: dict[str, tuple[Frames, list]] = {}

    def prepare(self, key: str, frames: Frames) -> None:
        self.sets[key] = (frames, [neighbor_list(x, CUTOFF) for x in frames.positions])

    def predict(self, key: str, idx: np.ndarray, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies [B] (residual, eV) and forces [B * n, 3] (eV/Å) of frames ``idx`` of set ``key``."""
        frames, edges = self.sets[key]
        n, b_count = len(frames.numbers), len(idx)
        lists = [edges[k] for k in idx]
        senders = np.concatenate([s + b * n for b, (s, _, _) in enumerate(lists)])
        receivers = np.concatenate([r + b * n for b, (_, r, _) in enumerate(lists)])
        graph = AtomicGraph(
            positions=torch.as_tensor(frames.positions[idx].reshape(-1, 3), dtype=self.dtype),
            numbers=torch.as_tensor(np.tile(frames.numbers, b_count)),
            batch=torch.arange(b_count).repeat_interleave(n),
            cell=torch.zeros(b_count, 3, 3, dtype=self.dtype),
            pbc=torch.zeros(b_count, 3, dtype=torch.bool),
            edge_index=torch.as_tensor(np.stack([senders, receivers])),
            edge_shift=torch.as_tensor(np.concatenate([sh for _, _, sh in lists]), dtype=self.dtype),
            ptr=torch.arange(b_count + 1) * n,
        )
        out = self.model(graph, compute_forces=True, create_graph=create_graph)
        return out["energy"], out["forces"]


class MaceLearner:
    """MACE (``peers.mace_model``); its AtomicData of each frame set are built once by :meth:`prepare`."""

    def __init__(self, ref: Reference, dtype: torch.dtype, kind: str):
        try:
            from mace import data as mace_data
            from mace.tools import AtomicNumberTable, torch_geometric
        except ImportError as exc:
            raise PeerUnavailable(f"MACE needs mace-torch, not importable here ({exc})") from None
        self.label = kind
        self.dtype = dtype
        self._data_module = mace_data
        self._batch_cls = torch_geometric.Batch
        self._table = AtomicNumberTable(ref.elements)
        self.model = mace_model(kind, dtype, ref.elements, r_max=CUTOFF, avg_num_neighbors=ref.avg_num_neighbors,
                                scale=ref.scale)
        self.sets: dict[str, list] = {}

    def prepare(self, key: str, frames: Frames) -> None:
        md = self._data_module
        with default_dtype(self.dtype):  # AtomicData takes the default dtype
            self.sets[key] = [
                md.AtomicData.from_config(
                    md.Configuration(atomic_numbers=frames.numbers, positions=x, properties={}, property_weights={},
                                     pbc=(False,) * 3, cell=np.zeros((3, 3))),
                    z_table=self._table, cutoff=CUTOFF)
                for x in frames.positions
            ]

    def predict(self, key: str, idx: np.ndarray, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self._batch_cls.from_data_list([self.sets[key][k] for k in idx])
        out = self.model(batch.to_dict(), training=create_graph, compute_force=True)
        return out["energy"], out["forces"]


def train(learner, frames: Frames, target_e: np.ndarray, idx: np.ndarray, seconds: float, batch_size: int,
          lr: float, seed: int) -> dict:
    """AdamW on energies and forces of the "train" set for ``seconds`` of optimisation steps.

    Returns ``{"steps": optimiser steps, "epochs": completed passes over idx}``."""
    rng = np.random.default_rng(seed)
    model = learner.model
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    n_atoms = len(frames.numbers)
    e_t = torch.as_tensor(target_e, dtype=torch.float64)
    f_t = torch.as_tensor(frames.forces, dtype=torch.float64)
    model.train(True)
    # One untimed forward/backward without a step: lazy set-up (first autograd pass, e3nn code
    # generation) is not what the budget should measure.
    energy, forces = learner.predict("train", idx[:batch_size], create_graph=True)
    (energy.sum() + forces.sum()).backward()
    opt.zero_grad(set_to_none=True)
    steps, epochs, elapsed = 0, 0, 0.0
    while elapsed < seconds:
        order = rng.permutation(idx)
        for start in range(0, len(order), batch_size):
            t0 = time.perf_counter()
            batch = order[start:start + batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * max(0.1, 1.0 - elapsed / seconds)
            energy, forces = learner.predict("train", batch, create_graph=True)
            loss = (((energy.double() - e_t[batch]) / n_atoms) ** 2).mean() + FORCE_WEIGHT * (
                (forces.double() - f_t[batch].reshape(-1, 3)) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            elapsed += time.perf_counter() - t0
            if elapsed >= seconds:
                break
        else:
            epochs += 1
    model.train(False)
    return {"steps": steps, "epochs": epochs}


def evaluate(learner, frames: Frames, target_e: np.ndarray, batch_size: int = 50) -> tuple[float, float]:
    """Energy MAE (meV per molecule) and force MAE (meV/Å per component) on the "test" set."""
    e_err, f_err = [], []
    for start in range(0, len(frames.energy), batch_size):
        idx = np.arange(start, min(start + batch_size, len(frames.energy)))
        energy, forces = learner.predict("test", idx, create_graph=False)
        e_err.append(np.abs(energy.detach().double().numpy() - target_e[idx]))
        f_err.append(np.abs(forces.detach().double().numpy() - frames.forces[idx].reshape(-1, 3)).ravel())
    return 1e3 * float(np.concatenate(e_err).mean()), 1e3 * float(np.concatenate(f_err).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecule", default="ethanol")
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="folder with the rmd17_*_01.npz files")
    parser.add_argument("--sizes", nargs="+", type=int, default=[50, 100, 250, 1000], help="training frames")
    parser.add_argument("--seconds", type=float, default=600.0, help="training budget per model and size, s")
    parser.add_argument("--models", nargs="+", default=["equipot", "mace-small"],
                        help="equipot and/or mace-small, mace-medium")
    parser.add_argument("--equipot-options", type=json.loads, default=None,
                        help='JSON, e.g. \'{"backbone": "ponita", "hidden": 32, "layers": 2}\'')
    parser.add_argument("--test-frames", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="sizes 50 and 250, 20 s each, 200 test frames")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.seconds, args.test_frames = [50, 250], 20.0, 200
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    train_frames = load_rmd17(args.data / f"rmd17_{args.molecule}_train_01.npz")
    test_all = load_rmd17(args.data / f"rmd17_{args.molecule}_test_01.npz")
    test = Frames(test_all.numbers, test_all.positions[:args.test_frames], test_all.energy[:args.test_frames],
                  test_all.forces[:args.test_frames])
    if max(args.sizes) > len(train_frames.energy):
        raise ValueError(f"--sizes up to {max(args.sizes)} but the training file has {len(train_frames.energy)} frames")
    options = {"backbone": "ponita", **DEFAULTS["ponita"], **(args.equipot_options or {})}
    order = np.random.default_rng(args.seed).permutation(len(train_frames.energy))
    print(f"# rMD17 {args.molecule}: {len(train_frames.energy)} train / {len(test.energy)} test frames, "
          f"budget {args.seconds:.0f} s per model and size, {args.dtype}, threads={args.threads}, "
          f"equipot options {options}")
    rows = []
    for size in args.sizes:
        idx = order[:size]
        ref = Reference.fit(train_frames, idx)
        target_train, target_test = ref.residual(train_frames), ref.residual(test)
        for name in args.models:
            try:
                if name == "equipot":
                    learner = EquipotLearner(ref, dtype, options)
                elif name.startswith("mace-"):
                    learner = MaceLearner(ref, dtype, name)
                else:
                    raise ValueError(f"unknown model {name!r}")
            except PeerUnavailable as exc:
                print(f"# {name} skipped: {exc}")
                continue
            learner.prepare("train", train_frames)
            learner.prepare("test", test)
            stats = train(learner, train_frames, target_train, idx, args.seconds, args.batch_size, args.lr,
                          args.seed)
            e_mae, f_mae = evaluate(learner, test, target_test)
            n_params = sum(p.numel() for p in learner.model.parameters())
            rows.append((learner.label, size, n_params, stats["steps"], stats["epochs"], e_mae, f_mae))
            print(f"{learner.label:16s} N={size:5d} params={n_params:8d} steps={stats['steps']:6d} "
                  f"epochs={stats['epochs']:4d}  E MAE {e_mae:8.2f} meV  F MAE {f_mae:8.2f} meV/Å", flush=True)
    print(f"\n| model | train frames | parameters | steps in {args.seconds:.0f} s | epochs | "
          f"energy MAE (meV) | force MAE (meV/Å) |")
    print("|---|---|---|---|---|---|---|")
    for label, size, n_params, steps, epochs, e_mae, f_mae in rows:
        print(f"| {label} | {size} | {n_params} | {steps} | {epochs} | {e_mae:.1f} | {f_mae:.1f} |")


if __name__ == "__main__":
    main()
