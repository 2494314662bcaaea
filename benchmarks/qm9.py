"""Train equipot and SchNet (SchNetPack) on the same QM9 split, with the same wall-clock budget
and one CPU thread each, for a few targets; write a table of test MAEs.

For each target (default U0, homo, gap, mu) and each model, one process trains on the file's
``train`` split (``--n-train`` molecules of it, seeded), keeps the weights with the best MAE on
``--n-valid`` molecules of the ``valid`` split, and is tested on ``--n-test`` molecules of the
``test`` split. The budget counts training and validation time, not set-up or testing. The table
also gives the MAE of predicting the training mean, the bar any model must clear.

- equipot: ``equipot.training.train`` (what ``equipot train`` runs) with the property recipe:
  the target's readout and standardisation (``equipot.training.targets``), its default learning
  rate and batch size, ``train.property=<target>``, the default R3×S2 model at a 5 Å cutoff
  (``--equipot-options``).
- SchNet: SchNetPack's QM9 setting (Schütt et al. 2018; schnetpack ``configs/experiment/qm9*.yaml``):
  128 features, 6 interactions, 20 Gaussians, cosine cutoff 5 Å, Adam 5e-4, batch 100, MSE on
  the standardised target; readouts as in SchNetPack: an atomwise sum over atoms with QM9's
  atomrefs removed and the per-atom mean and spread standardised for U0, an atomwise mean for
  HOMO and the gap, ``DipoleMoment`` (latent charges made neutral, magnitude) for mu. The loop is
  written out here (schnetpack's own trainer is PyTorch Lightning), as MACE's is in harness.py.

SchNet runs in the peers' environment (``bash benchmarks/peers_env.sh VENV``); ``--peer-python``
names its interpreter (default ``/work/peers-venv/bin/python`` or ``peers-venv/bin/python``).
Without it the table has equipot alone and says why.

Usage::

    python benchmarks/qm9.py --data qm9.h5 --budget 180 --targets U0,homo,gap,mu --out runs/bench_qm9
    python benchmarks/qm9.py --data qm9.h5 --budget 60 --n-train 2000 --models equipot

Units: the file's (eV for U0, HOMO and the gap, reported in meV; Debye for mu).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

if not __package__:  # run as `python benchmarks/qm9.py`: import the package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
MODELS = ("equipot", "schnet")
#: (factor, label) of the reported errors per stored unit
REPORT = {"eV": (1000.0, "meV")}
#: e·Å in Debye (CODATA 2018)
DEBYE_PER_EA = 4.803204712570263
PEER_PYTHONS = (Path("/work/peers-venv/bin/python"), REPO / "peers-venv" / "bin" / "python")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="equipot HDF5 file of QM9 with splits train, valid, test")
    p.add_argument("--targets", default="U0,homo,gap,mu", help="comma-separated QM9 properties")
    p.add_argument("--models", default="equipot,schnet", help="comma-separated: equipot, schnet")
    p.add_argument("--budget", type=float, default=180.0, help="training wall-clock per model and target, s")
    p.add_argument("--n-train", type=int, default=10000, help="training molecules (of split train)")
    p.add_argument("--n-valid", type=int, default=500, help="validation molecules (of split valid)")
    p.add_argument("--n-test", type=int, default=2000, help="test molecules (of split test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets and of both models")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per model")
    p.add_argument("--valid-every", type=float, default=20.0, help="SchNet: validate every this many seconds")
    p.add_argument("--equipot-valid-steps", type=int, default=0,
                   help="equipot: also validate every this many steps (train.valid_every_steps; 0: only "
                        "once per epoch, as `equipot train` does by default)")
    p.add_argument("--out", default="runs/bench_qm9", help="output folder (runs, results.json, results.md)")
    p.add_argument("--peer-python", default=None, help="python of the peers' environment (for SchNet)")
    p.add_argument("--equipot-options", default="cutoff=5.0",
                   help="equipot model options, key=value,... (default: the default model, SchNet's cutoff)")
    p.add_argument("--equipot-train", default="",
                   help="equipot train-section values, key=value,... (e.g. lr=3e-3,data.batch_size=16; "
                        "default: the property recipe of equipot train)")
    p.add_argument("--only", choices=MODELS, help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------ the data
def data_section(args: argparse.Namespace) -> dict:
    """equipot's ``data`` config of the benchmark: the train and valid splits, capped (seeded)."""
    return {"train_file": str(Path(args.data).resolve()), "train_split": "train", "valid_split": "valid",
            "n_train": args.n_train, "n_valid": args.n_valid, "seed": args.seed}


def subsets(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Frame indices (into the file) of the train/valid/test molecules both models use: those
    that equipot's ``build_splits`` picks, and ``--n-test`` of the test split (seeded)."""
    from equipot.data import H5Dataset
    from equipot.training.config import DataSection
    from equipot.training.data import build_splits

    splits = build_splits(DataSection(**data_section(args)))
    test = H5Dataset(args.data, split="test").indices
    if args.n_test < len(test):
        test = np.sort(np.random.default_rng(args.seed).choice(test, args.n_test, replace=False))
    return {"train": splits.train.indices, "valid": splits.valid.indices, "test": test}


def mean_baseline(data: str, target: str, frames: dict[str, np.ndarray]) -> float:
    """Test MAE of predicting the training mean of ``target`` (its stored unit)."""
    from equipot.data import H5Dataset

    train = H5Dataset(data, indices=frames["train"]).property_values(target)
    test = H5Dataset(data, indices=frames["test"]).property_values(target)
    return float(np.mean(np.abs(test - train.mean())))


# ------------------------------------------------------------------------------------- equipot
def run_equipot(args: argparse.Namespace, target: str, frames: dict[str, np.ndarray], out: Path) -> dict:
    """Train an equipot property model on ``target``; its test MAE (stored unit), steps, size."""
    import torch

    from equipot import load_model
    from equipot.data import H5Dataset
    from equipot.training import evaluate, train
    from equipot.training.config import apply_overrides, config_from_dict

    options = dict(item.split("=", 1) for item in args.equipot_options.split(",") if item)
    model = {k: _number(v) for k, v in options.items()}
    values = {
        "model": model,
        "data": data_section(args),
        "train": {"property": target, "max_time": args.budget, "threads": args.threads, "seed": args.seed,
                  "run_dir": str(out / f"equipot_{target}"), "dtype": "float32", "progress": False,
                  "device": "cpu", "monitor": f"{target}_mae", "checkpoint_every": 0, "epochs": 100000,
                  "valid_every_steps": args.equipot_valid_steps or None},
    }
    # the CLI's own section.key=value parser and type checks (a bare key is a train key)
    variants = [item if "." in item.split("=", 1)[0] else f"train.{item}"
                for item in args.equipot_train.split(",") if item]
    config = config_from_dict(apply_overrides(values, variants))
    run_dir = Path(config.train.run_dir)
    if run_dir.exists():  # a fresh run each time (the benchmark is not resumable)
        import shutil

        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    summary = train(config, log=lambda line: print(f"  [equipot {target}]", line, flush=True))
    wall = time.perf_counter() - t0
    best = load_model(Path(config.train.run_dir) / "model.pt").to("cpu", torch.float32)
    test = H5Dataset(args.data, indices=frames["test"], in_memory=True)
    result = evaluate(best, test, 64, "cpu", torch.float32, property_name=target)
    return {"test_mae": result.metrics[f"{target}_mae"], "steps": summary["steps"], "train_time_s": summary["time_s"],
            "wall_s": round(wall, 1), "parameters": sum(p.numel() for p in best.parameters()),
            "readout": best.config.target_readout, "lr": config.train.lr, "batch_size": config.data.batch_size}


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# -------------------------------------------------------------------------------------- SchNet
def schnet_inputs(numbers: list[np.ndarray], positions: list[np.ndarray], cutoff: float) -> dict:
    """SchNetPack's input dict of a batch of molecules (all pairs within ``cutoff``, no cell)."""
    import torch

    z, r, idx_m, idx_i, idx_j, n_atoms = [], [], [], [], [], []
    start = 0
    for m, (num, pos) in enumerate(zip(numbers, positions)):
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        i, j = np.nonzero((d < cutoff) & ~np.eye(len(num), dtype=bool))
        z.append(num)
        r.append(pos)
        idx_m.append(np.full(len(num), m))
        idx_i.append(i + start)
        idx_j.append(j + start)
        n_atoms.append(len(num))
        start += len(num)
    n_pairs = sum(len(i) for i in idx_i)
    return {
        "_atomic_numbers": torch.as_tensor(np.concatenate(z), dtype=torch.long),
        "_positions": torch.as_tensor(np.concatenate(r), dtype=torch.float32),
        "_idx_m": torch.as_tensor(np.concatenate(idx_m), dtype=torch.long),
        "_idx_i": torch.as_tensor(np.concatenate(idx_i), dtype=torch.long),
        "_idx_j": torch.as_tensor(np.concatenate(idx_j), dtype=torch.long),
        "_offsets": torch.zeros(n_pairs, 3, dtype=torch.float32),
        "_n_atoms": torch.as_tensor(n_atoms, dtype=torch.long),
        "_cell": torch.zeros(len(numbers), 3, 3, dtype=torch.float32),
        "_pbc": torch.zeros(len(numbers), 3, dtype=torch.bool),
    }


def run_schnet(args: argparse.Namespace, target: str, frames: dict[str, np.ndarray], out: Path,
               cutoff: float = 5.0, batch_size: int = 100, lr: float = 5e-4) -> dict:
    """Train SchNet (SchNetPack) on ``target``; its test MAE (stored unit), steps, size."""
    import torch

    from benchmarks.peers import _import_schnetpack
    from equipot.data import H5Dataset

    spk = _import_schnetpack()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    sets = {}
    for name, idx in frames.items():
        ds = H5Dataset(args.data, indices=idx, in_memory=True)
        mols = [ds[k] for k in range(len(ds))]
        sets[name] = ([f.numbers.astype(np.int64) for f in mols], [f.positions.astype(np.float64) for f in mols],
                      ds.property_values(target).astype(np.float64))
    numbers, _, y = sets["train"]
    counts = np.array([len(n) for n in numbers], dtype=np.float64)
    kind = {"mu": "dipole", "homo": "intensive", "lumo": "intensive", "gap": "intensive"}.get(target, "extensive")
    refs = np.zeros(119)
    atomrefs = H5Dataset(args.data).atomrefs()
    if kind == "extensive" and target in atomrefs:
        refs = atomrefs[target][0]
    ref_sum = {name: np.array([refs[n].sum() for n in s[0]]) for name, s in sets.items()}
    if kind == "extensive":
        per_atom = (y - ref_sum["train"]) / counts
        mean, std = float(per_atom.mean()), float(per_atom.std()) or 1.0
    elif kind == "intensive":
        mean, std = float(y.mean()), float(y.std()) or 1.0
    else:
        mean, std = 0.0, float(np.abs(y).std()) or 1.0

    representation = spk.representation.SchNet(
        n_atom_basis=128, n_interactions=6, radial_basis=spk.nn.GaussianRBF(n_rbf=20, cutoff=cutoff),
        cutoff_fn=spk.nn.CosineCutoff(cutoff))
    if kind == "dipole":
        head = spk.atomistic.DipoleMoment(n_in=128, predict_magnitude=True, dipole_key="y")
    else:
        head = spk.atomistic.Atomwise(n_in=128, output_key="y",
                                      aggregation_mode="sum" if kind == "extensive" else "avg")
    model = spk.model.NeuralNetworkPotential(representation=representation,
                                             input_modules=[spk.atomistic.PairwiseDistances()],
                                             output_modules=[head])
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def predict(name: str, idx: np.ndarray) -> torch.Tensor:
        """Predictions (stored unit) of molecules ``idx`` of set ``name``."""
        num, pos, _ = sets[name]
        batch = schnet_inputs([num[k] for k in idx], [pos[k] for k in idx], cutoff)
        raw = model(batch)["y"].reshape(-1).double()
        if kind == "dipole":  # charges in e: the magnitude in e·Å, in Debye
            return raw * DEBYE_PER_EA
        n = torch.as_tensor(np.array([len(num[k]) for k in idx], dtype=np.float64))
        base = torch.as_tensor(ref_sum[name][idx]) + (mean * n if kind == "extensive" else mean)
        return base + std * raw

    def mae(name: str) -> float:
        model.eval()
        errs = []
        with torch.no_grad():
            for s in range(0, len(sets[name][2]), 200):
                idx = np.arange(s, min(s + 200, len(sets[name][2])))
                errs.append(np.abs(predict(name, idx).numpy() - sets[name][2][idx]))
        model.train()
        return float(np.concatenate(errs).mean())

    best, best_state, steps, elapsed, next_valid = np.inf, None, 0, 0.0, args.valid_every
    order, pos_in_epoch = rng.permutation(len(y)), 0
    while elapsed < args.budget:
        t0 = time.perf_counter()
        if pos_in_epoch + batch_size > len(order):
            order, pos_in_epoch = rng.permutation(len(y)), 0
        idx = order[pos_in_epoch:pos_in_epoch + batch_size]
        pos_in_epoch += batch_size
        loss = torch.mean(((predict("train", idx) - torch.as_tensor(y[idx])) / std) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        elapsed += time.perf_counter() - t0
        if elapsed >= next_valid or elapsed >= args.budget:
            t0 = time.perf_counter()
            score = mae("valid")
            if score < best:
                best, best_state = score, {k: v.clone() for k, v in model.state_dict().items()}
            print(f"  [schnet {target}] step {steps} valid MAE {score:.5g} ({elapsed:.0f} s)", flush=True)
            elapsed += time.perf_counter() - t0
            next_valid = elapsed + args.valid_every
    model.load_state_dict(best_state)
    return {"test_mae": mae("test"), "steps": steps, "train_time_s": round(elapsed, 1), "parameters": params,
            "readout": kind, "lr": lr, "batch_size": batch_size}


# ------------------------------------------------------------------------------------ front end
def peer_python(args: argparse.Namespace) -> str | None:
    if args.peer_python:
        return args.peer_python
    return next((str(p) for p in PEER_PYTHONS if p.exists()), None)


def run_part(argv: list[str], model: str, target: str, python: str, out: Path) -> dict:
    """One model on one target in its own process (its own interpreter and thread count)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    part = out / f"part_{model}_{target}.json"
    part.unlink(missing_ok=True)
    code = subprocess.call([python, str(Path(__file__).resolve()), *argv, "--only", model, "--target", target], env=env)
    if code != 0 or not part.exists():
        return {"error": f"exit code {code}"}
    return json.loads(part.read_text())


def table(results: dict, units: dict[str, str], models: list[str]) -> str:
    """The results as a Markdown table (test MAE per target and model, and the mean predictor)."""
    head = "| target | unit | training mean | " + " | ".join(models) + " |"
    lines = [head, "|" + "---|" * (3 + len(models))]
    for target, row in results["targets"].items():
        factor, unit = REPORT.get(units.get(target, ""), (1.0, units.get(target, "")))
        cells = []
        for m in models:
            r = row.get(m, {})
            cells.append(f"{r['test_mae'] * factor:.4g} ({r['steps']} steps)" if "test_mae" in r
                         else r.get("error", "-"))
        lines.append(f"| {target} | {unit} | {row['mean_baseline'] * factor:.4g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = subsets(args)
    if args.only:
        import torch

        torch.set_num_threads(args.threads)
        run = run_equipot if args.only == "equipot" else run_schnet
        result = run(args, args.target, frames, out)
        (out / f"part_{args.only}_{args.target}.json").write_text(json.dumps(result))
        return 0
    from equipot.data import H5Dataset

    units = H5Dataset(args.data).units()
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown model {unknown[0]!r} (choose from {', '.join(MODELS)})")
    peer = peer_python(args) if "schnet" in models else None
    results = {"data": str(args.data), "n_train": len(frames["train"]), "n_valid": len(frames["valid"]),
               "n_test": len(frames["test"]), "budget_s": args.budget, "threads": args.threads,
               "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "load_before": os.getloadavg(), "targets": {}}
    for target in [t for t in args.targets.split(",") if t]:
        row = results["targets"][target] = {"mean_baseline": mean_baseline(args.data, target, frames)}
        for model in models:
            if model == "schnet" and peer is None:
                row[model] = {"error": "no peers' python (bash benchmarks/peers_env.sh VENV; --peer-python)"}
                continue
            print(f"== {model} on {target} ({args.budget:.0f} s, {args.threads} thread(s))", flush=True)
            row[model] = run_part(argv, model, target, peer if model == "schnet" else sys.executable, out)
    results["load_after"] = os.getloadavg()
    text = table(results, units, models)
    print(text)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(
        f"QM9, {results['n_train']} training / {results['n_valid']} validation / {results['n_test']} test molecules, "
        f"{args.budget:.0f} s and {args.threads} thread(s) per model, {results['date']}, load "
        f"{results['load_before'][0]:.2f} -> {results['load_after'][0]:.2f}\n\n{text}\n")
    print(f"results written to {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
