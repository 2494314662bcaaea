"""``equipot export MODEL``: the model as a ``torch.export`` program (see :mod:`equipot.export`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_model_argument, add_model_options, device_of, dtype_of, load_model_file

HELP = "export a model as a torch.export program (.pt2) giving energy and forces, loadable without equipot"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("The program maps positions [N,3] Å, numbers [N], edge_index [2,E] (sender, receiver; "
                     "pairs closer than the model's cutoff), edge_shift [E,3] (cell shifts), cell [B,3,3] Å and "
                     "batch [N] to energy [B] eV and forces [N,3] eV/Å. Load it with torch.export.load(path)"
                     ".module(); the model's cutoff and elements are in the extra file 'equipot.json'.")
    add_model_argument(parser)
    parser.add_argument("-o", "--output", default=None, metavar="OUT.pt2",
                        help="output file (default: MODEL with the suffix .pt2)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip comparing the exported program with the model on a test batch")
    add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    import time

    from ..export import export_model
    from ._common import check_output

    source = Path(args.model)
    if args.output:
        out = Path(args.output)
    else:
        out = source / "model.pt2" if source.is_dir() else source.with_suffix(".pt2")
    check_output(out, "--output", suffixes=(".pt2",))
    if out.resolve() == source.resolve():
        raise ValueError(f"--output {out} would overwrite the model file")
    model = load_model_file(args.model, args.threads)
    t0 = time.perf_counter()
    export_model(model, out, dtype_of(args.dtype), str(device_of(args.device)), check=not args.no_check)
    checked = "" if args.no_check else " (checked against the model on a test batch)"
    print(f"exported {args.model} to {out} in {time.perf_counter() - t0:.1f} s{checked}")
    print(f"load with torch.export.load('{out}').module()(positions, numbers, edge_index, edge_shift, cell, batch)"
          f" -> (energy [B] eV, forces [N,3] eV/Å)")
    return 0
