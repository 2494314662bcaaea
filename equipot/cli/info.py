"""``equipot info FILE``: what an equipot HDF5 dataset holds."""
from __future__ import annotations

import argparse
import json

HELP = "describe an equipot HDF5 dataset: frames, elements, atoms per frame, properties, units, splits, energies"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="equipot HDF5 file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from ..data.summary import format_summary, summarize

    summary = summarize(args.file)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
