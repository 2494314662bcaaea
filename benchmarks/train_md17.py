"""Train equipot and, when installed, MACE on the same revised-MD17 split with the same wall-clock budget.

Both models see the same training frames (``--n-train`` of the official ``train_01`` split, drawn with
``--seed``), the same validation frames (``--n-valid``, used to pick the best EMA weights) and are
tested on the same frames of the official ``test_01`` split. Both are trained with the same recipe:
AdamW (AMSGrad), linear warm-up then ReduceLROnPlateau, gradient clipping, EMA of the weights,
loss = energy_weight * (ΔE/atom)^2 + forces_weight * (ΔF)^2, reference energies by least squares,
scale = RMS of the training forces. equipot is trained by ``equipot.training.train`` (what
``equipot train`` runs); MACE (mace-torch) by the same loop written out here with equipot's
schedule and EMA classes. The budget counts training and validation time, not set-up or testing.

Prints both force and energy MAEs on the test frames, the steps each model managed, and the
ratio equipot / MACE; writes ``results.json`` in ``--out``.

MACE comes from the peers' environment (``bash benchmarks/peers_env.sh`` creates ``peers-venv``);
without it the script says so and trains equipot alone.

Usage::

    peers-venv/bin/python benchmarks/train_md17.py --molecule ethanol --budget 600
    python benchmarks/train_md17.py --budget 120 --n-test 200 model.hidden=32 model.grid_size=8
    python benchmarks/train_md17.py --no-mace      # equipot only

Positional ``section.key=value`` arguments override the equipot config (see ``equipot train --help``).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from equipot.data import H5Dataset, convert_rmd17  # noqa: E402
from equipot.potentials import load_model  # noqa: E402
from equipot.training import load_config, train  # noqa: E402
from equipot.training.data import build_splits  # noqa: E402
from equipot.training.ema import EMA  # noqa: E402
from equipot.training.evaluate import evaluate  # noqa: E402
from equipot.training.schedule import LRSchedule  # noqa: E402

DEFAULT_DATA = REPO / ".." / "shared" / "data" / "rmd17"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("overrides", nargs="*", help="equipot config overrides section.key=value")
    p.add_argument("--molecule", default="ethanol", help="rMD17 molecule")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder with rmd17_<mol>_{train,test}_01.npz")
    p.add_argument("--out", default="runs/bench_md17", help="output folder (HDF5 file, runs, results.json)")
    p.add_argument("--budget", type=float, default=600.0, help="wall-clock training budget per model, s")
    p.add_argument("--n-train", type=int, default=950, help="training frames (of the train_01 split)")
    p.add_argument("--n-valid", type=int, default=50, help="validation frames (of the train_01 split)")
    p.add_argument("--n-test", type=int, default=1000, help="test frames (of the test_01 split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/validation split and of both runs")
    p.add_argument("--batch-size", type=int, default=5, help="structures per step")
    p.add_argument("--lr", type=float, default=5e-3, help="peak learning rate (both models)")
    p.add_argument("--cutoff", type=float, default=5.0, help="cutoff radius, Å (both models)")
    p.add_argument("--energy-weight", type=float, default=1.0, help="weight of (ΔE/atom)^2, 1/(eV/atom)^2")
    p.add_argument("--forces-weight", type=float, default=100.0, help="weight of (ΔF)^2, 1/(eV/Å)^2")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="torch device for both models")
    p.add_argument("--no-mace", action="store_true", help="train only equipot")
    p.add_argument("--parallel", action="store_true",
                   help="train equipot and MACE at the same time, one process each (load hits both alike)")
    p.add_argument("--only", choices=("equipot", "mace"), help=argparse.SUPPRESS)
    p.add_argument("--max-steps", type=int, default=None, help="also stop both models after this many steps")
    p.add_argument("--mace-hidden", default="32x0e + 32x1o", help="MACE hidden irreps")
    p.add_argument("--mace-max-ell", type=int, default=3, help="MACE spherical-harmonics order")
    p.add_argument("--mace-correlation", type=int, default=3, help="MACE body order - 1")
    p.add_argument("--mace-interactions", type=int, default=2, help="MACE message-passing layers")
    return p.parse_args(argv)


def prepare_data(args) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    h5 = out / f"rmd17_{args.molecule}.h5"
    if not h5.exists():
        src = Path(args.data_dir)
        files = [src / f"rmd17_{args.molecule}_{s}_01.npz" for s in ("train", "test")]
        for f in files:
            if not f.exists():
                raise SystemExit(f"missing {f} (give --data-dir)")
        convert_rmd17(files, h5, keep_old=False)
    return h5


def equipot_config(args, h5: Path):
    overrides = [
        f"data.train_file={h5}", "data.train_split=train", f"data.valid_size={args.n_valid}",
        f"data.n_train={args.n_train}", f"data.seed={args.seed}", f"data.batch_size={args.batch_size}",
        f"model.cutoff={args.cutoff}", f"train.seed={args.seed}", f"train.lr={args.lr}",
        f"train.energy_weight={args.energy_weight}", f"train.forces_weight={args.forces_weight}",
        f"train.max_time={args.budget}", "train.epochs=1000000", f"train.device={args.device}",
        f"train.run_dir={Path(args.out) / f'equipot_{datetime.now():%Y%m%d_%H%M%S}'}",
        "train.checkpoint_every=0", "train.progress=false",
        *([f"train.max_steps={args.max_steps}"] if args.max_steps else []), *args.overrides,
    ]
    return load_config(None, overrides)


def run_equipot(config, test: H5Dataset, device: str) -> dict:
    t0 = time.perf_counter()
    summary = train(config, log=lambda line: print("  [equipot]", line, flush=True))
    wall = time.perf_counter() - t0
    model = load_model(Path(config.train.run_dir) / "model.pt").to(device)
    result = evaluate(model, test, batch_size=20, device=device)
    with open(Path(config.train.run_dir) / "metrics.csv") as f:
        curve = [(int(row["step"]), float(row["forces_mae"]) * 1e3) for row in csv.DictReader(f)]
    return {
        "valid_curve": curve,
        "forces_mae_meV_A": result.metrics["forces_mae"] * 1e3,
        "energy_mae_meV": result.metrics["energy_mae"] * 1e3,
        "steps": summary["steps"], "epochs": summary["epochs"], "train_time_s": summary["time_s"],
        "wall_s": round(wall, 1), "parameters": sum(p.numel() for p in model.parameters()),
        "config": {"backbone": model.config.backbone, **_resolved_options(model)},
    }


def _resolved_options(model) -> dict:
    from dataclasses import asdict

    from equipot.potentials import get_backbone

    return asdict(get_backbone(model.config.backbone)[1](**model.config.backbone_options))


# --------------------------------------------------------------------------- MACE


def mace_available() -> bool:
    try:
        import mace  # noqa: F401
        from mace import modules  # noqa: F401
    except Exception:
        return False
    return True


def _frames(dataset: H5Dataset) -> list:
    return [dataset[k] for k in range(len(dataset))]


def _fit_e0(frames, elements: list[int]) -> np.ndarray:
    counts = np.array([[np.sum(f.numbers == z) for z in elements] for f in frames], dtype=float)
    energies = np.array([f.energy for f in frames])
    return np.linalg.lstsq(counts, energies, rcond=None)[0]


def run_mace(args, train_ds: H5Dataset, valid_ds: H5Dataset, test: H5Dataset) -> dict:
    """Train MACE with the same recipe and budget as equipot (see the module docstring)."""
    from e3nn import o3
    from mace import data as mdata
    from mace import modules, tools
    from mace.tools import torch_geometric

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # MACE builds its data in the default dtype
    try:
        device = torch.device(args.device)
        train_frames, valid_frames, test_frames = _frames(train_ds), _frames(valid_ds), _frames(test)
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
        e0 = _fit_e0(train_frames, elements)
        avg_neighbors = float(np.mean([d.edge_index.shape[1] / d.num_nodes for d in train_data]))
        rms_forces = float(np.sqrt(np.mean(np.concatenate([f.forces.ravel() for f in train_frames]) ** 2)))
        torch.manual_seed(args.seed)
        interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        model = modules.ScaleShiftMACE(
            r_max=args.cutoff, num_bessel=8, num_polynomial_cutoff=5, max_ell=args.mace_max_ell,
            interaction_cls=interaction, interaction_cls_first=interaction,
            num_interactions=args.mace_interactions, num_elements=len(elements),
            hidden_irreps=o3.Irreps(args.mace_hidden), MLP_irreps=o3.Irreps("16x0e"), atomic_energies=e0,
            avg_num_neighbors=avg_neighbors, atomic_numbers=elements, correlation=args.mace_correlation,
            gate=torch.nn.functional.silu, atomic_inter_scale=rms_forces, atomic_inter_shift=0.0,
        ).to(device)
        g = torch.Generator().manual_seed(args.seed)
        loader = torch_geometric.dataloader.DataLoader(train_data, batch_size=args.batch_size, shuffle=True,
                                                       generator=g)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, amsgrad=True, weight_decay=0.0)
        schedule = LRSchedule(opt, args.lr, warmup_steps=50, kind="plateau", factor=0.8, patience=5, min_lr=1e-6)
        ema = EMA(model, 0.99)

        def predict(m, batch, training):
            batch = batch.to(device)
            out = m(batch.to_dict(), training=training, compute_force=True)
            return batch, out

        def validate(m) -> float:
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
                schedule.set_step(step)
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
            abs_f += float((out["forces"] - batch.forces).abs().sum())
            n_f += batch.forces.numel()
            abs_e += float((out["energy"] - batch.energy).abs().sum())
            n_e += batch.num_graphs
        return {
            "valid_curve": curve,
            "forces_mae_meV_A": abs_f / n_f * 1e3, "energy_mae_meV": abs_e / n_e * 1e3, "steps": step,
            "epochs": epoch, "train_time_s": round(train_time, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "config": {"hidden_irreps": args.mace_hidden, "max_ell": args.mace_max_ell,
                       "correlation": args.mace_correlation, "num_interactions": args.mace_interactions},
        }
    finally:
        torch.set_default_dtype(previous)


def run_parallel(argv: list[str], out: Path) -> dict:
    """Run the equipot and the MACE part as two processes at the same time; their results."""
    argv = [a for a in argv if a != "--parallel"]
    procs = {name: subprocess.Popen([sys.executable, __file__, *argv, "--only", name]) for name in ("equipot", "mace")}
    results = {}
    for name, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"the {name} process failed (exit code {proc.returncode})")
        results[name] = json.loads((out / f"part_{name}.json").read_text())
    return results


def print_curves(results: dict) -> None:
    """Validation force MAE of both models at the steps where both validated (equal-step view)."""
    ours, theirs = dict(results["equipot"]["valid_curve"]), dict(results["mace"]["valid_curve"])
    common = sorted(set(ours) & set(theirs))
    if common:
        print("validation force MAE (meV/Å) at equal steps:")
        print("  step    " + "".join(f"{s:>8}" for s in common))
        print("  equipot " + "".join(f"{ours[s]:>8.1f}" for s in common))
        print("  MACE    " + "".join(f"{theirs[s]:>8.1f}" for s in common))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    h5 = prepare_data(args)
    config = equipot_config(args, h5)
    splits = build_splits(config.data)
    test = H5Dataset(h5, split="test")
    if args.n_test < len(test):
        test = test.subset(np.sort(np.random.default_rng(args.seed).permutation(len(test))[:args.n_test]))
    print(f"rMD17 {args.molecule}: {len(splits.train)} train / {len(splits.valid)} valid / {len(test)} test frames, "
          f"budget {args.budget:.0f} s per model, {torch.get_num_threads()} threads, device {args.device}")
    results = {"molecule": args.molecule, "budget_s": args.budget, "n_train": len(splits.train),
               "n_valid": len(splits.valid), "n_test": len(test), "batch_size": args.batch_size, "lr": args.lr,
               "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
               "cpus": torch.get_num_threads(), "torch": torch.__version__,
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if args.parallel:
        results.update(run_parallel(argv if argv is not None else sys.argv[1:], Path(args.out)))
    elif args.only:
        part = run_equipot(config, test, args.device) if args.only == "equipot" else run_mace(
            args, splits.train, splits.valid, test)
        (Path(args.out) / f"part_{args.only}.json").write_text(json.dumps(part))
        return 0
    else:
        results["equipot"] = run_equipot(config, test, args.device)
    if args.parallel:
        pass
    elif args.no_mace:
        print("MACE: skipped (--no-mace)")
    elif not mace_available():
        print("MACE: not installed (pip install mace-torch); equipot only")
    else:
        results["mace"] = run_mace(args, splits.train, splits.valid, test)
    print()
    print(f"{'model':<10}{'params':>10}{'steps':>8}{'F MAE meV/Å':>14}{'E MAE meV':>12}")
    for name in ("equipot", "mace"):
        if name in results:
            r = results[name]
            print(f"{name:<10}{r['parameters']:>10}{r['steps']:>8}{r['forces_mae_meV_A']:>14.2f}"
                  f"{r['energy_mae_meV']:>12.2f}")
    if "mace" in results:
        print_curves(results)
        ratio = results["equipot"]["forces_mae_meV_A"] / results["mace"]["forces_mae_meV_A"]
        results["force_mae_ratio_equipot_over_mace"] = ratio
        print(f"force MAE ratio equipot / MACE: {ratio:.3f} (same data, same {args.budget:.0f} s budget)")
    out = Path(args.out) / "results.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
