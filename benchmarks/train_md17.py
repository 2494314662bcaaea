"""Train equipot and, when installed, MACE on the same revised-MD17 split with the same wall-clock budget.

The recipe, the data each model sees and what the budget counts are those of the harness
(``benchmarks/harness.py``): equipot is trained by ``equipot.training.train`` (what ``equipot
train`` runs), MACE (mace-torch) by the harness's loop with equipot's schedule and EMA classes.

Prints both force (meV/Å) and energy (meV) MAEs on the test frames, the steps each model
managed, and the ratio equipot / MACE; writes ``results.json`` in ``--out``.

MACE comes from the peers' environment (``bash benchmarks/peers_env.sh`` creates ``peers-venv``);
without it the script says so and trains equipot alone.

Usage::

    peers-venv/bin/python benchmarks/train_md17.py --molecule ethanol --budget 600
    python benchmarks/train_md17.py --budget 120 --n-test 200 model.hidden=32 model.grid_size=8
    python -m benchmarks.train_md17 --no-mace      # equipot only

Positional ``section.key=value`` arguments override the equipot config (see ``equipot train --help``).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

if not __package__:  # run as `python benchmarks/train_md17.py`: import the package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness

MODELS = ("equipot", "mace")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The harness settings plus which models to train and how (see ``--help``)."""
    p = harness.parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--no-mace", action="store_true", help="train only equipot")
    p.add_argument("--parallel", action="store_true",
                   help="train equipot and MACE at the same time, one process each (load hits both alike)")
    p.add_argument("--only", choices=MODELS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def mace_skip_reason(args: argparse.Namespace) -> str | None:
    """Why MACE is not trained in this run, or None."""
    if args.no_mace:
        return "MACE: skipped (--no-mace)"
    if not harness.mace_available():
        return "MACE: not installed (pip install mace-torch); equipot only"
    return None


def run_parallel(argv: list[str], out: Path, models: list[str]) -> dict:
    """Train each model in its own process, all at the same time; their results by name."""
    argv = [a for a in argv if a != "--parallel"]
    procs = {name: subprocess.Popen([sys.executable, __file__, *argv, "--only", name]) for name in models}
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = harness.prepare(args)
    out = Path(args.out)
    print(f"rMD17 {args.molecule}: {len(run.splits.train)} train / {len(run.splits.valid)} valid / "
          f"{len(run.test)} test frames, budget {args.budget:.0f} s per model, {torch.get_num_threads()} threads, "
          f"device {args.device}")
    if args.only:  # one half of --parallel: the parent collects the part file
        part = harness.run_model(args.only, args, run)
        (out / f"part_{args.only}.json").write_text(json.dumps(part))
        return 0
    results = {"molecule": args.molecule, "budget_s": args.budget, "n_train": len(run.splits.train),
               "n_valid": len(run.splits.valid), "n_test": len(run.test), "batch_size": args.batch_size,
               "lr": args.lr, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
               "cpus": torch.get_num_threads(), "torch": torch.__version__,
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    skip = mace_skip_reason(args)
    models = ["equipot"] if skip else list(MODELS)
    if args.parallel:
        results.update(run_parallel(sys.argv[1:] if argv is None else argv, out, models))
    else:
        for name in models:
            results[name] = harness.run_model(name, args, run)
    if skip:
        print(skip)
    print()
    print(f"{'model':<10}{'params':>10}{'steps':>8}{'F MAE meV/Å':>14}{'E MAE meV':>12}")
    for name in MODELS:
        if name in results:
            r = results[name]
            print(f"{name:<10}{r['parameters']:>10}{r['steps']:>8}{r['forces_mae_meV_A']:>14.2f}"
                  f"{r['energy_mae_meV']:>12.2f}")
    if "mace" in results:
        print_curves(results)
        ratio = results["equipot"]["forces_mae_meV_A"] / results["mace"]["forces_mae_meV_A"]
        results["force_mae_ratio_equipot_over_mace"] = ratio
        print(f"force MAE ratio equipot / MACE: {ratio:.3f} (same data, same {args.budget:.0f} s budget)")
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
