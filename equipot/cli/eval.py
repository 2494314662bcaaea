"""``equipot eval MODEL DATA``: errors of a model on a labelled dataset (equipot HDF5, or any file
ASE reads with energies/forces, e.g. extended XYZ), optionally its predictions (HDF5 or extended XYZ)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_model_argument, add_model_options, add_overwrite_option, device_of, dtype_of, load_model_file

HELP = ("evaluate a model on a labelled dataset (equipot HDF5 or e.g. extended XYZ): MAE/RMSE per target "
        "(meV, meV/atom, meV/Å; a property model's property in its unit, meV for one in eV)")
PREDICTION_SUFFIXES = (".h5", ".hdf5", ".xyz", ".extxyz")


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("data", metavar="DATA",
                        help="equipot HDF5 file (see equipot convert), or a labelled structure file ASE reads "
                             "(extended XYZ with energy and forces, ...)")
    parser.add_argument("--split", default=None, help="named split of DATA to evaluate (default: all frames)")
    parser.add_argument("--property", default=None,
                        help="the per-structure property to score (default: what the model predicts, which "
                             "model files record; needed only for property model files of format < 3)")
    parser.add_argument("--batch-size", type=int, default=16, help="structures per batch")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N frames")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("-o", "--output", default=None, metavar="PRED.h5|PRED.xyz",
                        help="write the predictions (energy eV, forces eV/Å, stress eV/Å^3): an equipot HDF5 file, "
                             "or extended XYZ with the reference (REF_energy, REF_forces) and predicted "
                             "(equipot_energy, equipot_forces) labels of every frame")
    add_overwrite_option(parser)
    add_model_options(parser)


def write_predictions(path: str | Path, predictions: dict, property_name: str | None, source: str,
                      unit: str | None = None) -> None:
    """Predictions as an equipot HDF5 file (same structures, predicted labels; a property in ``unit``)."""
    import numpy as np

    from ..data.writer import HDF5Writer

    counts = predictions["num_atoms"].astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    with HDF5Writer(path, source=f"equipot eval of {source}", level_of_theory="equipot prediction",
                    overwrite=True) as w:
        # the first frame fixes the file's fields: give every frame a cell if any is periodic
        periodic = bool(predictions["pbc"].any())
        for k in range(len(counts)):
            a, b = offsets[k], offsets[k + 1]
            kwargs = {"cell": predictions["cell"][k], "pbc": predictions["pbc"][k].astype(bool)} if periodic else {}
            if property_name is not None:
                kwargs["properties"] = {property_name: float(predictions[property_name][k])}
            else:
                kwargs["energy"] = float(predictions["energy"][k])
                if "forces" in predictions:
                    kwargs["forces"] = predictions["forces"][a:b]
                if "stress" in predictions:
                    kwargs["stress"] = predictions["stress"][k]
            w.add(predictions["numbers"][a:b].astype(np.int64), predictions["positions"][a:b], **kwargs)
        if property_name is not None and unit:
            w.set_units(property_name, unit)


def write_extxyz_predictions(path: str | Path, predictions: dict, property_name: str | None) -> None:
    """Reference and predicted labels of every frame as extended XYZ (``REF_<x>`` and ``equipot_<x>``)."""
    from ..data.extxyz import labelled_structures, write_structures

    info, arrays = {}, {}
    for name in ([property_name] if property_name else ["energy", "stress"]):
        if name in predictions:
            info[f"equipot_{name}"] = predictions[name]
            info[f"REF_{name}"] = predictions[f"{name}_ref"]
    if property_name is None and "forces" in predictions:
        arrays["equipot_forces"] = predictions["forces"]
        arrays["REF_forces"] = predictions["forces_ref"]
    write_structures(path, labelled_structures(predictions["numbers"], predictions["positions"],
                                               predictions["num_atoms"], predictions["cell"], predictions["pbc"],
                                               info, arrays), format="extxyz")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from ..data.formats import H5_SUFFIXES
    from ._common import check_output, input_file, model_inputs

    data = input_file(args.data, "data file")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1 frame, got {args.limit}")
    if args.output is not None:
        check_output(args.output, "--output", suffixes=PREDICTION_SUFFIXES, inputs=(data, *model_inputs(args.model)),
                     overwrite=args.overwrite)
    model = load_model_file(args.model, args.threads)
    if data.suffix.lower() in H5_SUFFIXES:
        return _evaluate(args, model, data)
    from ..data import convert_ase

    with tempfile.TemporaryDirectory() as tmp:  # a labelled structure file: converted on the fly
        h5 = Path(tmp) / "data.h5"
        convert_ase([data], h5)
        return _evaluate(args, model, h5, shown=data)


def _evaluate(args: argparse.Namespace, model, path: Path, shown: Path | None = None) -> int:
    import numpy as np

    from ..data.reader import H5Dataset
    from ..training.data import check_dataset_elements, check_targets
    from ..training.evaluate import evaluate, model_property
    from ..training.metrics import format_table

    device, dtype = device_of(args.device), dtype_of(args.dtype)
    model = model.to(device=device, dtype=dtype)
    dataset = H5Dataset(path, split=args.split)
    if args.limit is not None:
        dataset = dataset.subset(np.arange(min(args.limit, len(dataset))))
    prop = model_property(model, args.property)
    check_targets(dataset, prop, "evaluation")
    check_dataset_elements(dataset, model.config.elements, "evaluation")
    result = evaluate(model, dataset, args.batch_size, device, dtype, property_name=prop,
                      num_workers=args.num_workers, keep_predictions=args.output is not None)
    metrics = {k: v for k, v in result.metrics.items() if k != "loss"}
    split = f" split {args.split}" if args.split else ""
    print(f"{shown or args.data}{split}: {len(dataset)} frames")
    print(format_table(metrics, dataset.units()))
    if args.output is not None:
        if Path(args.output).suffix.lower() in (".xyz", ".extxyz"):
            write_extxyz_predictions(args.output, result.predictions, prop)
        else:
            write_predictions(args.output, result.predictions, prop, str(args.data),
                              dataset.units().get(prop) if prop else None)
        print(f"predictions written to {args.output}")
    return 0
