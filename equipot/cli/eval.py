"""``equipot eval MODEL DATA``: errors of a model on an HDF5 dataset, optionally its predictions."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_model_argument, add_model_options, device_of, dtype_of, load_model_file

HELP = "evaluate a model on an HDF5 dataset: MAE/RMSE per target (meV, meV/atom, meV/Å)"


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("data", metavar="DATA", help="equipot HDF5 file (see equipot convert)")
    parser.add_argument("--split", default=None, help="named split of DATA to evaluate (default: all frames)")
    parser.add_argument("--property", default=None,
                        help="the model predicts this per-structure property (as trained with train.property)")
    parser.add_argument("--batch-size", type=int, default=16, help="structures per batch")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N frames")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("-o", "--output", default=None, metavar="PRED.h5",
                        help="write the predictions (energy eV, forces eV/Å, stress eV/Å^3) as an equipot HDF5 file")
    add_model_options(parser)


def write_predictions(path: str | Path, predictions: dict, property_name: str | None, source: str) -> None:
    """Predictions as an equipot HDF5 file (same structures, predicted labels)."""
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


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.reader import H5Dataset
    from ..training.data import check_dataset_elements, check_targets
    from ..training.evaluate import evaluate
    from ..training.metrics import format_table

    if not Path(args.data).is_file():
        raise FileNotFoundError(f"data file {args.data} does not exist")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    model = load_model_file(args.model)
    device, dtype = device_of(args.device), dtype_of(args.dtype)
    model = model.to(device=device, dtype=dtype)
    dataset = H5Dataset(args.data, split=args.split)
    if args.limit is not None:
        dataset = dataset.subset(np.arange(min(args.limit, len(dataset))))
    check_targets(dataset, args.property, "evaluation")
    check_dataset_elements(dataset, model.config.elements, "evaluation")
    result = evaluate(model, dataset, args.batch_size, device, dtype, property_name=args.property,
                      num_workers=args.num_workers, keep_predictions=args.output is not None)
    metrics = {k: v for k, v in result.metrics.items() if k != "loss"}
    split = f" split {args.split}" if args.split else ""
    print(f"{args.data}{split}: {len(dataset)} frames")
    print(format_table(metrics, dataset.units()))
    if args.output is not None:
        write_predictions(args.output, result.predictions, args.property, str(args.data))
        print(f"predictions written to {args.output}")
    return 0
