"""PNG learning curves and parity plots of a training run (matplotlib, Agg backend)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..safe_write import atomic_write
from .metrics import read_metrics


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install matplotlib (or equipot[plot])") from None
    return plt


def _save(fig, path: Path, dpi: int) -> Path:
    with atomic_write(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    return path


def learning_curves(run_dir: Path, out_dir: Path, dpi: int = 120) -> Path | None:
    """Loss and validation MAEs against optimiser steps, log scale: ``learning_curves.png``."""
    plt = _pyplot()
    cols = read_metrics(run_dir / "metrics.csv")
    steps = np.asarray(cols.get("step", []))
    if steps.size == 0:
        return None
    panels = [("loss", [("train_loss", "train"), ("valid_loss", "valid")], "loss")]
    maes = [(k, k[: -len("_mae")]) for k in cols if k.endswith("_mae")]
    labels = {"energy": "energy MAE (meV)", "energy_per_atom": "energy MAE (meV/atom)",
              "forces": "force MAE (meV/Å)", "stress": "stress MAE (meV/Å^3)"}
    for key, name in maes:
        panels.append((name, [(key, "valid")], labels.get(name, f"{name} MAE")))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, layout="constrained")
    for ax, (name, series, ylabel) in zip(axes[0], panels):
        factor = 1000.0 if name in labels else 1.0
        for key, label in series:
            values = np.asarray(cols.get(key, []), dtype=float) * factor
            ok = np.isfinite(values) & (values > 0)
            if ok.any():
                ax.plot(steps[ok], values[ok], marker="o", ms=2.5, lw=1.2, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if len(series) > 1:
            ax.legend()
    fig.suptitle(f"{run_dir.name}: learning curves")
    path = _save(fig, out_dir / "learning_curves.png", dpi)
    plt.close(fig)
    return path


def parity(predictions: dict[str, np.ndarray], title: str, path: Path, dpi: int = 120) -> Path | None:
    """Predicted against reference energy per atom, forces and properties: one panel each."""
    plt = _pyplot()
    panels = []
    if "energy" in predictions and "energy_ref" in predictions:
        n = predictions["num_atoms"]
        panels.append(("energy per atom (eV/atom)", predictions["energy_ref"] / n, predictions["energy"] / n, 1e3,
                       "meV/atom"))
    if "forces" in predictions and "forces_ref" in predictions:
        panels.append(("force components (eV/Å)", predictions["forces_ref"].ravel(), predictions["forces"].ravel(),
                       1e3, "meV/Å"))
    if "stress" in predictions and "stress_ref" in predictions:
        panels.append(("stress components (eV/Å^3)", predictions["stress_ref"].ravel(),
                       predictions["stress"].ravel(), 1e3, "meV/Å^3"))
    for key in predictions:
        if key.endswith("_ref") and key[:-4] not in ("energy", "forces", "stress") and key[:-4] in predictions:
            panels.append((key[:-4], predictions[key].ravel(), predictions[key[:-4]].ravel(), 1.0, ""))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 4.2), squeeze=False, layout="constrained")
    for ax, (label, ref, pred, factor, unit) in zip(axes[0], panels):
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1)
        ax.scatter(ref, pred, s=4, alpha=0.5)
        mae = float(np.abs(pred - ref).mean()) * factor
        ax.set_title(f"MAE {mae:.3g} {unit}".strip())
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    out = _save(fig, path, dpi)
    plt.close(fig)
    return out


def plot_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, dpi: int = 120) -> list[Path]:
    """Write ``learning_curves.png`` and ``parity_<split>.png`` for a run; returns the files written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    curve = learning_curves(run_dir, out, dpi)
    if curve is not None:
        written.append(curve)
    for split in ("valid", "test"):
        path = run_dir / f"predictions_{split}.npz"
        if path.is_file():
            with np.load(path) as data:
                preds = {k: data[k] for k in data.files}
            p = parity(preds, f"{run_dir.name}: {split} set", out / f"parity_{split}.png", dpi)
            if p is not None:
                written.append(p)
    return written
