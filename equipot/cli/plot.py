"""``equipot plot RUN_DIR``: PNG learning curves and parity plots of a training run."""
from __future__ import annotations

import argparse

HELP = "write PNG learning curves (metrics.csv) and parity plots (predictions_*.npz) of a training run"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="training run directory")
    parser.add_argument("-o", "--output", default=None, metavar="DIR",
                        help="folder for the PNG files (default: RUN_DIR/plots)")
    parser.add_argument("--dpi", type=int, default=120, help="resolution of the PNG files, dots per inch")


def run(args: argparse.Namespace) -> int:

    from ..training.plots import plot_run

    out = plot_run(args.run_dir, args.output, dpi=args.dpi)
    for path in out:
        print(path)
    return 0 if out else 1
