"""``equipot export MODEL``: the model as a ``torch.export`` program (see :mod:`equipot.export`), or
with ``--lammps`` the file LAMMPS's ``pair_style mliap unified`` loads
(see :mod:`equipot.interfaces.lammps`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_model_argument, add_model_options, device_of, dtype_of, load_model_file, require_potential

HELP = ("export a model as a torch.export program (.pt2) giving energy and forces, loadable without equipot, "
        "or with --lammps for LAMMPS (pair_style mliap unified, .pkl)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("The program maps positions [N,3] Å, numbers [N], edge_index [2,E] (sender, receiver; "
                     "pairs closer than the model's cutoff), edge_shift [E,3] (cell shifts), cell [B,3,3] Å and "
                     "batch [N] to energy [B] eV and forces [N,3] eV/Å. Load it with torch.export.load(path)"
                     ".module(); the model's cutoff and elements are in the extra file 'equipot.json'.")
    add_model_argument(parser)
    parser.add_argument("-o", "--output", default=None, metavar="OUT",
                        help="output file (default: MODEL with the suffix .pt2, or .pkl with --lammps)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip comparing the exported program with the model on a test batch")
    parser.add_argument("--lammps", action="store_true",
                        help="write the file LAMMPS loads with 'pair_style mliap unified OUT.pkl 1' instead (it "
                             "holds the absolute path of MODEL, read with weights_only=True when LAMMPS starts)")
    parser.add_argument("--no-ghost-check", action="store_true",
                        help="with --lammps: do not check that the ghost atoms reach layers x cutoff (for clusters "
                             "the check cannot judge; comm_modify cutoff must then be right)")
    parser.add_argument("--skin", type=float, default=2.0, metavar="Å",
                        help="with --lammps: the neighbor skin of the LAMMPS input, for the suggested "
                             "'comm_modify cutoff' (default 2.0, LAMMPS's default in metal units)")
    add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    import time

    from ..export import export_model
    from ._common import check_output

    source = Path(args.model)
    if source.is_dir():
        source = source / "model.pt"
    suffix = ".pkl" if args.lammps else ".pt2"
    out = Path(args.output) if args.output else source.with_suffix(suffix)
    check_output(out, "--output", suffixes=(suffix,), inputs=(source,))
    if args.lammps:
        return _export_lammps(args, source, out)
    model = load_model_file(args.model, args.threads)
    require_potential(model, args.model, "export")
    t0 = time.perf_counter()
    export_model(model, out, dtype_of(args.dtype), str(device_of(args.device)), check=not args.no_check)
    checked = "" if args.no_check else " (checked against the model on a test batch)"
    print(f"exported {args.model} to {out} in {time.perf_counter() - t0:.1f} s{checked}")
    print(f"load with torch.export.load('{out}').module()(positions, numbers, edge_index, edge_shift, cell, batch)"
          f" -> (energy [B] eV, forces [N,3] eV/Å)")
    return 0


def _export_lammps(args: argparse.Namespace, source: Path, out: Path) -> int:
    from ..interfaces.lammps import lammps_input_lines, write_lammps_model

    if not source.exists():
        raise FileNotFoundError(f"model file {source} does not exist")
    device_of(args.device)
    adapter = write_lammps_model(source, out, args.dtype, args.device, ghost_check=not args.no_ghost_check)
    print(f"wrote {out} for LAMMPS (it loads {adapter.model_path} with weights_only=True; export again if "
          f"that file moves). In the LAMMPS input (units metal, newton on):")
    print(lammps_input_lines(adapter, out, args.skin))
    return 0
