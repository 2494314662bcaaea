"""``equipot demo``: train, test, MD, relax and plot on data shipped with equipot (see :mod:`equipot.demo`)."""
from __future__ import annotations

import argparse

HELP = ("the main job in one command on shipped data: train a small model on revised-MD17 ethanol for a minute "
        "or two, test it, run MD and a relaxation, write the plots")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="equipot-demo", metavar="DIR",
                        help="folder for everything the demo writes (must not exist, or be empty)")
    parser.add_argument("--time", type=float, default=90.0, help="training time, s")
    parser.add_argument("--md-steps", type=int, default=200, help="NVE steps of 0.5 fs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: every core)")


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(args.output, seconds=args.time, md_steps=args.md_steps, threads=args.threads)
    return 0
