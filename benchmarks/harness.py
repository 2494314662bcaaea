"""The equal-budget training harness: equipot and MACE on the same revised-MD17 frames, the same
recipe and the same wall-clock budget.

Both models see the same training frames (``n_train`` of the official ``train_01`` split, drawn
with ``seed``), the same validation frames (``n_valid`` of the rest, used to pick the best EMA
weights) and are tested on the same ``n_test`` frames of the official ``test_01`` split. The
recipe: AdamW (AMSGrad), linear warm-up then a cosine decay to the end of the budget (equipot's
default when a time or step budget is set), gradient clipping, EMA of the weights,
loss = energy_weight * (ΔE/atom)^2 + forces_weight * (ΔF)^2 (eV, eV/Å), reference
energies by least squares, scale = RMS of the training forces. equipot is trained by
:func:`equipot.training.train` (what ``equipot train`` runs); MACE, which equipot's trainer
cannot drive, by :func:`run_mace`, the same loop written out with equipot's schedule and EMA
classes. The budget counts training and validation time, not set-up or testing.

Front-ends: ``train_md17.py`` (equipot against MACE), ``accuracy.py`` (learning curve over
training-set sizes), ``backbones.py`` (the accuracy column of the backbone table). Each builds
its settings with :func:`settings` (or :func:`parser`), then calls :func:`prepare` and the
``run_*`` functions, whose results are dicts with MAEs in meV/Å (forces, per component) and meV
(energy, per structure).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import CUTOFF, DEFAULT_DATA, DEFAULT_OUT, rmd17_h5, sample
from benchmarks.peers import MACE_HIDDEN, default_dtype, mace_model
from equipot import load_model
from equipot.data import H5Dataset
from equipot.potentials.base import element_counts
from equipot.training import Config, evaluate, load_config, train
from equipot.training.data import Splits, build_splits
from equipot.training.ema import EMA
from equipot.training.schedule import LRSchedule


def parser(**kwargs) -> argparse.ArgumentParser:
    """The harness settings as command-line options (``kwargs`` go to ``ArgumentParser``)."""
    p = argparse.ArgumentParser(**kwargs)
    p.add_argument("overrides", nargs="*", help="equipot config overrides section.key=value")
    p.add_argument("--molecule", default="ethanol", help="rMD17 molecule")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder with rmd17_<mol>_{train,test}_01.npz")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (HDF5 file, runs, results.json)")
    p.add_argument("--budget", type=float, default=600.0, help="wall-clock training budget per model, s")
    p.add_argument("--n-train", type=int, default=950, help="training frames (of the train_01 split)")
    p.add_argument("--n-valid", type=int, default=50, help="validation frames (of the train_01 split)")
    p.add_argument("--n-test", type=int, default=1000, help="test frames (of the test_01 split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/validation split and of both runs")
    p.add_argument("--batch-size", type=int, default=5, help="structures per step")
    p.add_argument("--lr", type=float, default=5e-3, help="peak learning rate (both models)")
    p.add_argument("--cutoff", type=float, default=CUTOFF, help="cutoff radius, Å (both models)")
    p.add_argument("--energy-weight", type=float, default=1.0, help="weight of (ΔE/atom)^2, 1/(eV/atom)^2")
    p.add_argument("--forces-weight", type=float, default=100.0, help="weight of (ΔF)^2, 1/(eV/Å)^2")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="torch device for both models")
    p.add_argument("--max-steps", type=int, default=None, help="also stop both models after this many steps")
    p.add_argument("--mace-hidden", default=MACE_HIDDEN["mace-train"], help="MACE hidden irreps")
    p.add_argument("--mace-max-ell", type=int, default=3, help="MACE spherical-harmonics order")
    p.add_argument("--mace-correlation", type=int, default=3, help="MACE body order - 1")
    p.add_argument("--mace-interactions", type=int, default=2, help="MACE message-passing layers")
    p.add_argument("--mace-dtype", default="float64", choices=("float32", "float64"), help="MACE dtype")
    return p


def settings(**values) -> argparse.Namespace:
    """The harness defaults (those of :func:`parser`) with ``values`` replacing some of them.

    Raises:
        TypeError: a name that is not a harness setting.
    """
    args = parser().parse_args([])
    unknown = sorted(set(values) - set(vars(args)))
    if unknown:
        raise TypeError(f"not harness settings: {', '.join(unknown)}")
    vars(args).update(values)
    return args


def model_overrides(options: dict) -> list[str]:
    """``model.<key>=<value>`` config overrides for model options (``backbone`` names the backbone)."""
    return [f"model.{key}={json.dumps(value)}" for key, value in options.items()]


@dataclass
class Prepared:
    """The data of one harness run: the HDF5 file, equipot's config and the frames of each role."""

    h5: Path
    config: Config
    splits: Splits
    test: H5Dataset


def equipot_config(args: argparse.Namespace, h5: Path, label: str = "equipot") -> Config:
    """equipot's training config for the harness settings; the run goes to ``out/<label>_<time>``."""
    overrides = [
        f"data.train_file={h5}", "data.train_split=train", f"data.valid_size={args.n_valid}",
        f"data.n_train={args.n_train}", f"data.seed={args.seed}", f"data.batch_size={args.batch_size}",
        f"model.cutoff={args.cutoff}", f"train.seed={args.seed}", f"train.lr={args.lr}",
        f"train.energy_weight={args.energy_weight}", f"train.forces_weight={args.forces_weight}",
        f"train.max_time={args.budget}", "train.epochs=1000000", f"train.device={args.device}",
        f"train.run_dir={Path(args.out) / f'{label}_{datetime.now():%Y%m%d_%H%M%S}'}",
        "train.checkpoint_every=0", "train.progress=false",
        *([f"train.max_steps={args.max_steps}"] if args.max_steps else []),
        *([f"train.threads={args.threads}"] if args.threads else []), *args.overrides,
    ]
    return load_config(None, overrides)


def prepare(args: argparse.Namespace, label: str = "equipot") -> Prepared:
    """Convert the molecule once (see :func:`benchmarks.common.rmd17_h5`) and split its frames."""
    h5 = rmd17_h5(args.molecule, args.data_dir, args.out)
    config = equipot_config(args, h5, label)
    return Prepared(h5, config, build_splits(config.data), sample(H5Dataset(h5, split="test"), args.n_test, args.seed))


def run_equipot(config: Config, test: H5Dataset, device: str) -> dict:
    """Train equipot with ``equipot.training.train``; test MAEs (meV/Å, meV), steps, curve, size."""
    t0 = time.perf_counter()
    summary = train(config, log=lambda line: print("  [equipot]", line, flush=True))
    wall = time.perf_counter() - t0
    dtype = getattr(torch, config.train.dtype)
    model = load_model(Path(config.train.run_dir) / "model.pt").to(device, dtype)
    result = evaluate(model, test, batch_size=20, device=device, dtype=dtype)
    with open(Path(config.train.run_dir) / "metrics.csv") as f:
        curve = [(int(row["step"]), float(row["forces_mae"]) * 1e3) for row in csv.DictReader(f)]
    return {
        "valid_curve": curve,
        "forces_mae_meV_A": result.metrics["forces_mae"] * 1e3,
        "energy_mae_meV": result.metrics["energy_mae"] * 1e3,
        "steps": summary["steps"], "epochs": summary["epochs"], "train_time_s": summary["time_s"],
        "wall_s": round(wall, 1), "parameters": sum(p.numel() for p in model.parameters()),
        "config": model.config.to_flat(),
    }


def mace_available() -> bool:
    """Whether mace-torch imports here (it lives in the peers' environment)."""
    try:
        from mace import modules  # noqa: F401
    except Exception:  # a broken install fails in many ways; any of them means "no MACE"
        return False
    return True


def run_mace(args: argparse.Namespace, train_ds: H5Dataset, valid_ds: H5Dataset, test: H5Dataset) -> dict:
    """Train MACE (``peers.mace_model`` at the ``--mace-*`` settings) with the harness recipe and
    budget; the same result keys as :func:`run_equipot`."""
    from mace import data as mdata
    from mace import tools
    from mace.tools import torch_geometric

    with default_dtype(getattr(torch, args.mace_dtype)):  # MACE builds its data in the default dtype
        device = torch.device(args.device)
        train_frames, valid_frames, test_frames = ([ds[k] for k in range(len(ds))] for ds in (train_ds, valid_ds, test))
        elements = sorted({int(z) for f in train_frames for z in f.numbers})
        z_table = tools.get_atomic_number_table_from_zs(elements)

        def to_data(frames):
            out = []
            for f in frames:
                cfg = mdata.Configuration(atomic_numbers=f.numbers, positions=f.positions,
                                          properties={"energy": f.energy, "forces": f.forces},
                                          property_weights={"energy": 1.0, "forces": 1.0})
                out.append(mdata.AtomicData.from_config(cfg, z_table=z_table, cutoff=args.cutoff))
            return out

        train_data, valid_data, test_data = to_data(train_frames), to_data(valid_frames), to_data(test_frames)
        e0 = np.linalg.lstsq(element_counts(train_ds.numbers_per_frame(), elements), train_ds.energies(),
                             rcond=None)[0]
        avg_neighbors = float(np.mean([d.edge_index.shape[1] / d.num_nodes for d in train_data]))
        rms_forces = float(np.sqrt(np.mean(np.concatenate([f.forces.ravel() for f in train_frames]) ** 2)))
        model = mace_model(
            dtype=args.mace_dtype, elements=elements, r_max=args.cutoff, avg_num_neighbors=avg_neighbors,
            atomic_energies=e0, scale=rms_forces, seed=args.seed, hidden=args.mace_hidden,
            max_ell=args.mace_max_ell, correlation=args.mace_correlation, num_interactions=args.mace_interactions,
        ).to(device)
        g = torch.Generator().manual_seed(args.seed)
        loader = torch_geometric.dataloader.DataLoader(train_data, batch_size=args.batch_size, shuffle=True,
                                                       generator=g)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, amsgrad=True, weight_decay=0.0)
        # equipot's default for a time or step budget: cosine to min_lr at the end of the budget
        schedule = LRSchedule(opt, args.lr, warmup_steps=50, kind="cosine", min_lr=1e-6)
        ema = EMA(model, 0.99)

        def predict(m, batch, training):
            batch = batch.to(device)
            out = m(batch.to_dict(), training=training, compute_force=True)
            return batch, out

        def validate(m) -> tuple[float, float]:
            """(loss, force MAE in eV/Å) on the validation frames."""
            m.eval()
            total = count = abs_f = n_f = 0.0
            vl = torch_geometric.dataloader.DataLoader(valid_data, batch_size=20, shuffle=False)
            for batch in vl:
                batch, out = predict(m, batch, False)
                n = (batch.ptr[1:] - batch.ptr[:-1]).double()
                e = float((((out["energy"].detach() - batch.energy) / n) ** 2).mean())
                f = float(((out["forces"].detach() - batch.forces) ** 2).mean())
                total += (args.energy_weight * e + args.forces_weight * f) * batch.num_graphs
                count += batch.num_graphs
                abs_f += float((out["forces"].detach() - batch.forces).abs().sum())
                n_f += batch.forces.numel()
            return total / count, abs_f / n_f

        step, epoch, best, best_state, curve = 0, 0, math.inf, None, []
        t0 = time.perf_counter()
        done = False
        while not done:
            epoch += 1
            model.train()
            for batch in loader:
                step += 1
                elapsed = (time.perf_counter() - t0) / args.budget  # fraction of the budget, as equipot's trainer
                schedule.set_step(step, max(elapsed, step / args.max_steps if args.max_steps else 0.0))
                batch, out = predict(model, batch, True)
                n = (batch.ptr[1:] - batch.ptr[:-1]).double()
                loss = (args.energy_weight * (((out["energy"] - batch.energy) / n) ** 2).mean()
                        + args.forces_weight * ((out["forces"] - batch.forces) ** 2).mean())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                opt.step()
                ema.update(model)
                if time.perf_counter() - t0 >= args.budget or (args.max_steps and step >= args.max_steps):
                    done = True
                    break
            score, valid_f = validate(ema.shadow)
            curve.append((step, valid_f * 1e3))
            schedule.observe(score)
            if score < best:
                best, best_state = score, copy.deepcopy(ema.shadow.state_dict())
            print(f"  [mace] epoch {epoch} step {step} valid loss {score:.4g} "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        train_time = time.perf_counter() - t0
        ema.shadow.load_state_dict(best_state)
        final = ema.shadow.eval()
        abs_f = n_f = abs_e = n_e = 0.0
        tl = torch_geometric.dataloader.DataLoader(test_data, batch_size=20, shuffle=False)
        for batch in tl:
            batch, out = predict(final, batch, False)
            abs_f += float((out["forces"].detach() - batch.forces).abs().sum())
            n_f += batch.forces.numel()
            abs_e += float((out["energy"].detach() - batch.energy).abs().sum())
            n_e += batch.num_graphs
        return {
            "valid_curve": curve,
            "forces_mae_meV_A": abs_f / n_f * 1e3, "energy_mae_meV": abs_e / n_e * 1e3, "steps": step,
            "epochs": epoch, "train_time_s": round(train_time, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "config": {"hidden_irreps": args.mace_hidden, "max_ell": args.mace_max_ell,
                       "correlation": args.mace_correlation, "num_interactions": args.mace_interactions},
        }


def run_model(name: str, args: argparse.Namespace, run: Prepared) -> dict:
    """Train ``equipot`` or ``mace`` on the prepared data (see :func:`run_equipot`)."""
    if name == "equipot":
        return run_equipot(run.config, run.test, args.device)
    if name == "mace":
        return run_mace(args, run.splits.train, run.splits.valid, run.test)
    raise ValueError(f"unknown model {name!r}; the harness trains 'equipot' and 'mace'")
