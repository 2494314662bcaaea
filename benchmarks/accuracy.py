"""Learning curve at equal wall-clock budget: equipot against MACE on revised MD17, one training-set size at a time.

    python benchmarks/accuracy.py [--molecule ethanol] [--sizes 50 100 250 950] [--seconds 600]
                                  [--models equipot mace-small] [--test-frames 1000] [--threads 2]
                                  [--dtype float32] [--quick] [--data ../shared/data/rmd17]

A front-end of the equal-budget harness (``benchmarks/harness.py``, also behind
``train_md17.py``): for every training-set size N in ``--sizes`` (nested subsets of one seeded
permutation of the ``train_01`` split; ``--valid-frames`` further frames of it validate) every
model is trained with the harness recipe for ``--seconds`` (training and validation time), then
its energy MAE (meV per molecule) and force MAE (meV/Å, per component) are measured on
``--test-frames`` seeded frames of the ``test_01`` split. equipot is the default R3×S2 model of the speed benchmarks
(``benchmarks.common.BACKBONE_OPTIONS``; ``--equipot-options`` changes it) trained by
``equipot.training.train``; ``mace-small``/``mace-medium`` are MACE at the widths of
``benchmarks/peers.py``, trained by the harness's MACE loop. MACE needs mace-torch
(``benchmarks/peers_env.sh``); when it is missing the script says so and trains equipot alone.

Published for comparison (not this budget): MACE, ethanol, 950 frames, ~days of GPU training:
2.1 meV/Å force MAE. ``--quick``: sizes 50 and 250, 20 s each, 200 test frames.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

if not __package__:  # run as `python benchmarks/accuracy.py`: import the package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness
from benchmarks.common import BACKBONE_OPTIONS, DEFAULT_DATA, DEFAULT_OUT
from benchmarks.peers import MACE_HIDDEN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecule", default="ethanol")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the rmd17_*_01.npz files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the HDF5 file and the runs")
    parser.add_argument("--sizes", nargs="+", type=int, default=[50, 100, 250, 950], help="training frames")
    parser.add_argument("--seconds", type=float, default=600.0, help="training budget per model and size, s")
    parser.add_argument("--models", nargs="+", default=["equipot", "mace-small"],
                        help="equipot and/or mace-small, mace-medium")
    parser.add_argument("--equipot-options", type=json.loads, default=None,
                        help='JSON, e.g. \'{"backbone": "ponita", "hidden": 32, "layers": 2}\'')
    parser.add_argument("--valid-frames", type=int, default=50, help="validation frames (of train_01, not trained)")
    parser.add_argument("--test-frames", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-3, help="peak learning rate")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="sizes 50 and 250, 20 s each, 200 test frames")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.seconds, args.test_frames = [50, 250], 20.0, 200
    for name in args.models:
        if name != "equipot" and name not in MACE_HIDDEN:
            parser.error(f"unknown model {name!r}: equipot or one of {', '.join(MACE_HIDDEN)}")
    torch.set_num_threads(args.threads)
    options = {"backbone": "ponita", **BACKBONE_OPTIONS["ponita"], **(args.equipot_options or {})}
    print(f"# rMD17 {args.molecule}: budget {args.seconds:.0f} s per model and size, {args.dtype}, "
          f"threads={args.threads}, equipot options {options}")
    rows = []
    for size in args.sizes:
        setting = harness.settings(
            molecule=args.molecule, data_dir=str(args.data), out=str(args.out), budget=args.seconds, n_train=size,
            n_valid=args.valid_frames, n_test=args.test_frames, seed=args.seed, batch_size=args.batch_size,
            lr=args.lr, mace_dtype=args.dtype,
            overrides=[f"train.dtype={args.dtype}", *harness.model_overrides(options)])
        run = harness.prepare(setting, label=f"equipot_n{size}")
        if len(run.splits.train) < size:
            raise SystemExit(f"--sizes {size}: the train_01 split has only {len(run.splits.train)} frames "
                             f"besides the {setting.n_valid} validation frames")
        for name in args.models:
            if name == "equipot":
                label, result = f"equipot-{options['backbone']}", harness.run_model("equipot", setting, run)
            elif harness.mace_available():
                setting.mace_hidden = MACE_HIDDEN[name]
                label, result = name, harness.run_model("mace", setting, run)
            else:
                print(f"# {name} skipped: mace-torch is not importable here (see benchmarks/peers_env.sh)")
                continue
            rows.append((label, size, result))
            print(f"{label:16s} N={size:5d} params={result['parameters']:8d} steps={result['steps']:6d} "
                  f"epochs={result['epochs']:4d}  E MAE {result['energy_mae_meV']:8.2f} meV  "
                  f"F MAE {result['forces_mae_meV_A']:8.2f} meV/Å", flush=True)
    print(f"\n| model | train frames | parameters | steps in {args.seconds:.0f} s | epochs | "
          f"energy MAE (meV) | force MAE (meV/Å) |")
    print("|---|---|---|---|---|---|---|")
    for label, size, r in rows:
        print(f"| {label} | {size} | {r['parameters']} | {r['steps']} | {r['epochs']} | "
              f"{r['energy_mae_meV']:.1f} | {r['forces_mae_meV_A']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
