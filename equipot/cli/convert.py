"""``equipot convert``: published dataset files -> equipot HDF5.

Examples::

    equipot convert rmd17_ethanol_train_01.npz rmd17_ethanol_test_01.npz -o ethanol.h5
    equipot convert rmd17_aspirin.npz --splits-dir rmd17/splits -o aspirin.h5
    equipot convert dsgdb9nsd.xyz.tar.bz2 --exclude uncharacterized.txt --atomrefs atomref.txt -o qm9.h5
    equipot convert --format qm9pack -o qm9.h5
    equipot convert --format qm9pack -o qm9.h5 --random-split train=10000,valid=1000,test=2000 --seed 0
    equipot convert train.extxyz --energy-key REF_energy -o train.h5
    equipot convert ethanol.h5 -o frames.xyz --frames 0:10       (frames back out, with their labels)
"""
from __future__ import annotations

import argparse
import sys

HELP = ("convert MD17 / revised MD17 .npz, QM9 (xyz or qm9pack) or any ASE-readable file to equipot HDF5, "
        "or frames of an equipot HDF5 file to any format ASE writes")


def configure(parser: argparse.ArgumentParser) -> None:
    from ..data.formats import FORMATS

    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="input files or folder (none for --format qm9pack: the installed package); "
                             "without -o, a last argument ending in .h5 is the output")
    parser.add_argument("-o", "--output", metavar="OUT.h5",
                        help="output HDF5 file; from an HDF5 input, a structure file (.xyz, .extxyz, .traj, ...)")
    parser.add_argument("--frames", default=None, metavar="SPEC",
                        help="HDF5 input to a structure file: the frames to write, an index or slice "
                             "(5, 0:10, ::100; default: all)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="input format; detected from the file name and .npz keys when omitted")
    parser.add_argument("--splits-dir", metavar="DIR",
                        help="(r)MD17: folder with the official index_train_0X.csv / index_test_0X.csv files, "
                             "stored as /splits/train_0X, /splits/test_0X")
    parser.add_argument("--split", action="append", default=[], metavar="NAME=FILE",
                        help="add a split from a text file of frame indices (one per line); repeatable")
    parser.add_argument("--random-split", default=None, metavar="NAME=N,...",
                        help="QM9, qm9pack, ASE: add disjoint random splits of these sizes, e.g. "
                             "train=10000,valid=1000,test=2000 (drawn with --seed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-split (default: 0)")
    parser.add_argument("--exclude", metavar="FILE",
                        help="QM9: uncharacterized.txt, the molecules to leave out")
    parser.add_argument("--atomrefs", metavar="FILE",
                        help="QM9: atomref.txt, per-element reference energies (stored in eV; default: QM9's "
                             "published values)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="keep at most N frames (per input file for (r)MD17) for a quick slice")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--no-old", action="store_true",
                        help="rMD17: do not store the original MD17 labels (old_energies, old_forces, old_indices)")
    parser.add_argument("--level-of-theory", default=None, help="override the level-of-theory attribute")
    parser.add_argument("--energy-key", default=None, help="ASE: atoms.info key holding the energy")
    parser.add_argument("--forces-key", default=None, help="ASE: atoms.arrays key holding the forces")
    parser.add_argument("--stress-key", default=None, help="ASE: atoms.info key holding the stress")
    parser.add_argument("--energy-unit", default="eV",
                        help="ASE: energy unit of the file (eV, meV, kcal/mol, kJ/mol, Hartree)")
    parser.add_argument("--length-unit", default="Angstrom", help="ASE: length unit of the file (Angstrom, Bohr, nm)")
    parser.add_argument("--index", default=":", help="ASE: frames to read, an ASE index string such as '::10'")
    parser.add_argument("--ase-format", default=None, help="ASE: file format name passed to ase.io (e.g. extxyz)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")


def detect_format(inputs: list[str]) -> str:
    """The converter for the first input (see :func:`equipot.data.formats.detect_format`)."""
    if not inputs:
        raise ValueError("no input given (use --format qm9pack to read the installed qm9pack package)")
    from ..data.formats import detect_format as detect

    return detect(inputs[0])


def _parse_splits(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise ValueError(f"--split {item!r}: expected NAME=FILE")
        out[name] = file
    return out


def parse_random_splits(text: str | None) -> dict[str, int] | None:
    """``"train=10000,valid=1000"`` -> ``{"train": 10000, "valid": 1000}`` (ValueError naming the part)."""
    if text is None:
        return None
    out: dict[str, int] = {}
    for item in text.split(","):
        name, sep, size = item.strip().partition("=")
        if not sep or not name or name in out or not size.strip().isdigit() or int(size) < 1:
            raise ValueError(f"--random-split {text!r}: expected distinct NAME=N parts with N >= 1, got {item!r}")
        out[name] = int(size)
    return out


def run(args: argparse.Namespace) -> int:
    from ..data import convert_ase, convert_md17, convert_qm9, convert_qm9pack, convert_rmd17
    from ..data.formats import H5_SUFFIXES

    inputs = list(args.inputs)
    output = args.output
    if output is None:
        if inputs and inputs[-1].lower().endswith(H5_SUFFIXES) and (len(inputs) > 1 or args.format == "qm9pack"):
            output = inputs.pop()
        else:
            raise ValueError("no output file given (-o OUT.h5)")
    if len(inputs) == 1 and inputs[0].lower().endswith(H5_SUFFIXES) and not str(output).lower().endswith(H5_SUFFIXES):
        return _export(inputs[0], output, args)
    if args.frames is not None:
        raise ValueError("--frames applies when writing frames of an equipot HDF5 file to a structure file")
    if not str(output).lower().endswith(H5_SUFFIXES):
        raise ValueError(f"{output}: output file name should end in .h5 or .hdf5 (structure files such as .xyz "
                         f"are written from an equipot HDF5 input)")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    from ._common import check_output

    check_output(output, "output", inputs=(*inputs, *_parse_splits(args.split).values()))
    fmt = args.format or detect_format(inputs)
    splits = _parse_splits(args.split)
    random_splits = parse_random_splits(args.random_split)
    if random_splits and fmt in ("rmd17", "md17"):
        raise ValueError(f"--random-split applies to the qm9, qm9pack and ase formats, not {fmt} (use --split or "
                         f"--splits-dir)")
    drawn = {"random_splits": random_splits, "seed": args.seed}
    progress = not args.quiet and sys.stderr.isatty()
    common = {"limit": args.limit, "overwrite": args.overwrite, "progress": progress}
    if fmt not in ("rmd17", "md17") and args.splits_dir:
        raise ValueError(f"--splits-dir applies to the rmd17 and md17 formats, not {fmt}")
    if fmt not in ("qm9", "qm9pack") and (args.exclude or args.atomrefs):
        raise ValueError(f"--exclude and --atomrefs apply to the qm9 and qm9pack formats, not {fmt}")
    if fmt == "rmd17":
        kw = {"level_of_theory": args.level_of_theory} if args.level_of_theory else {}
        convert_rmd17(inputs, output, splits=splits, splits_dir=args.splits_dir, keep_old=not args.no_old,
                      **kw, **common)
    elif fmt == "md17":
        convert_md17(inputs, output, splits=splits, splits_dir=args.splits_dir,
                     level_of_theory=args.level_of_theory, **common)
    elif fmt == "qm9":
        if not inputs:
            raise ValueError("qm9: give the dsgdb9nsd.xyz.tar.bz2 tarball or the folder of xyz files")
        convert_qm9(inputs if len(inputs) > 1 else inputs[0], output, exclude=args.exclude,
                    atomrefs=args.atomrefs, splits=splits, **drawn, **common)
    elif fmt == "qm9pack":
        convert_qm9pack(output, source=inputs or None, exclude=args.exclude, atomrefs=args.atomrefs, splits=splits,
                        **drawn, **common)
    else:
        if not inputs:
            raise ValueError("ase: no input files given")
        convert_ase(inputs, output, index=args.index, format=args.ase_format, energy_key=args.energy_key,
                    forces_key=args.forces_key, stress_key=args.stress_key, energy_unit=args.energy_unit,
                    length_unit=args.length_unit, splits=splits, level_of_theory=args.level_of_theory or "",
                    **drawn, **common)
    if not args.quiet:
        from ..data import H5Dataset

        ds = H5Dataset(output)
        splits_text = ", ".join(f"{k} ({len(v)})" for k, v in sorted(ds.splits().items())) or "none"
        print(f"wrote {output}: {len(ds)} frames ({fmt}), elements {ds.elements()}, splits: {splits_text}")
    return 0


def _export(h5: str, output: str, args: argparse.Namespace) -> int:
    """Frames of an equipot HDF5 file to a structure file (the output's existence is checked first)."""
    from pathlib import Path

    from ..data.extxyz import export_frames
    from ._common import check_output, input_file

    input_file(h5, "input")
    out = check_output(output, "output", ase_format=True, inputs=(h5,), overwrite=args.overwrite)
    n = export_frames(h5, out, args.frames)
    if not args.quiet:
        print(f"wrote {n} frame(s) of {Path(h5).name} to {out}")
    return 0
