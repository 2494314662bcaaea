"""PNG learning curves and parity plots of a training run (matplotlib, Agg backend)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..safe_write import atomic_write
from .metrics import read_metrics, report_unit


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install matplotlib (or equipot[plot])") from None
    return plt


def _save(fig, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)  # only once there is a figure to put in it
    with atomic_write(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    return path


def learning_curves(run_dir: Path, out_dir: Path, dpi: int = 120, units: dict[str, str] | None = None) -> Path | None:
    """Loss and validation MAEs against optimiser steps, log scale: ``learning_curves.png``.
    ``units``: the stored unit of a property's values (meV is shown for eV)."""
    plt = _pyplot()
    cols = read_metrics(run_dir / "metrics.csv")
    steps = np.asarray(cols.get("step", []))
    if steps.size == 0:
        return None
    panels = [("loss", [("train_loss", "training (mean over the epoch)"), ("valid_loss", "validation")], "loss")]
    maes = [(k, k[: -len("_mae")]) for k in cols if k.endswith("_mae")]
    labels = {"energy": "energy MAE (meV)", "energy_per_atom": "energy MAE (meV/atom)",
              "forces": "force MAE (meV/Å)", "stress": "stress MAE (meV/Å^3)"}
    factors = {name: 1000.0 for name in labels}
    for key, name in maes:
        if name not in labels:
            factors[name], unit = report_unit(name, (units or {}).get(name, ""))
            labels[name] = f"{name} MAE ({unit})" if unit else f"{name} MAE"
        panels.append((name, [(key, "validation")], labels[name]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, layout="constrained")
    for ax, (name, series, ylabel) in zip(axes[0], panels):
        factor = factors.get(name, 1.0)
        for key, label in series:
            values = np.asarray(cols.get(key, []), dtype=float) * factor
            ok = np.isfinite(values) & (values > 0)
            if ok.any():
                ax.plot(steps[ok], values[ok], marker="o", ms=2.5, lw=1.2, label=label)
        lows, highs = ax.dataLim.y0, ax.dataLim.y1
        if lows > 0 and highs / lows > 3:  # log scale only where there is a range to show on it
            ax.set_yscale("log")
            _plain_log_ticks(ax)
        else:
            _readable(ax)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{run_dir.name}: learning curves")
    path = _save(fig, out_dir / "learning_curves.png", dpi)
    plt.close(fig)
    return path


def _plain_log_ticks(ax) -> None:
    """Log-scale y labels as plain numbers (matplotlib would write 7.9425×10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    plain = FuncFormatter(lambda value, _: f"{value:.3g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(plain)


def _readable(ax) -> None:
    """At most five plain tick labels per axis (no offset text that collides with the title)."""
    from matplotlib.ticker import MaxNLocator

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(5))
    ax.ticklabel_format(useOffset=False, style="plain")


def _parity_panels(predictions: dict[str, np.ndarray],
                   units: dict[str, str] | None = None) -> list[tuple[str, np.ndarray, np.ndarray, str]]:
    """(label with unit, reference, predicted, MAE unit) per panel, in display units (meV, meV/Å;
    a property in its stored unit from ``units``, meV for eV)."""
    panels = []
    if "energy" in predictions and "energy_ref" in predictions:
        n = predictions["num_atoms"].astype(float)
        ref, pred = predictions["energy_ref"], predictions["energy"]
        # relative to the reference mean: absolute energies (~1e4 eV) hide meV errors in their digits
        panels.append(("energy − mean reference (meV)", (ref - ref.mean()) * 1e3, (pred - ref.mean()) * 1e3, "meV"))
        per = ref / n
        panels.append(("energy per atom − mean reference (meV/atom)", (per - per.mean()) * 1e3,
                       (pred / n - per.mean()) * 1e3, "meV/atom"))
    if "forces" in predictions and "forces_ref" in predictions:
        panels.append(("force components (eV/Å)", predictions["forces_ref"].ravel(), predictions["forces"].ravel(),
                       "meV/Å"))
    if "stress" in predictions and "stress_ref" in predictions:
        panels.append(("stress components (meV/Å^3)", predictions["stress_ref"].ravel() * 1e3,
                       predictions["stress"].ravel() * 1e3, "meV/Å^3"))
    for key in predictions:
        if key.endswith("_ref") and key[:-4] not in ("energy", "forces", "stress") and key[:-4] in predictions:
            name = key[:-4]
            factor, unit = report_unit(name, (units or {}).get(name, ""))
            panels.append((f"{name} ({unit})" if unit else name, predictions[key].ravel() * factor,
                           predictions[name].ravel() * factor, unit))
    return panels


def parity(predictions: dict[str, np.ndarray], title: str, path: Path, dpi: int = 120,
           units: dict[str, str] | None = None) -> Path | None:
    """Predicted against reference: energy and energy per atom relative to the reference mean (meV),
    force and stress components, properties; and the force MAE of each element. One panel each."""
    from ase.data import chemical_symbols

    plt = _pyplot()
    panels = _parity_panels(predictions, units)
    if not panels:
        return None
    per_element = "forces" in predictions and "forces_ref" in predictions and "numbers" in predictions
    count = len(panels) + per_element
    fig, axes = plt.subplots(1, count, figsize=(4.2 * count, 4.4), squeeze=False, layout="constrained")
    for ax, (label, ref, pred, unit) in zip(axes[0], panels):
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1)
        ax.scatter(ref, pred, s=4, alpha=0.5)
        scale = 1e3 if unit == "meV/Å" else 1.0  # force panels are drawn in eV/Å, their MAE told in meV/Å
        mae = float(np.abs(pred - ref).mean()) * scale
        ax.set_title(f"MAE {mae:.3g} {unit}".strip(), fontsize=10)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, alpha=0.3)
        _readable(ax)
    if per_element:
        ax = axes[0][-1]
        numbers = predictions["numbers"].astype(int)
        err = np.abs(predictions["forces"] - predictions["forces_ref"]).mean(axis=1) * 1e3
        elements = np.unique(numbers)
        maes = [float(err[numbers == z].mean()) for z in elements]
        ax.bar([chemical_symbols[z] for z in elements], maes, color="C1")
        ax.set_title("force MAE per element", fontsize=10)
        ax.set_ylabel("force MAE (meV/Å)")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title)
    out = _save(fig, path, dpi)
    plt.close(fig)
    return out


def plot_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, dpi: int = 120) -> list[Path]:
    """Write ``learning_curves.png`` and ``parity_<split>.png`` for a run; returns the files written.

    Nothing is created (not even the output folder) when the run has nothing to plot. ``dpi``: 10
    to 1000 (a figure of 12 x 5 inches at 100 000 dpi would need ~2 TB).
    """
    from .config import read_yaml

    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 10 <= dpi <= 1000:
        raise ValueError(f"--dpi must be an integer from 10 to 1000, got {dpi}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    sources = [run_dir / "metrics.csv", *(run_dir / f"predictions_{s}.npz" for s in ("valid", "test"))]
    if not any(p.is_file() for p in sources):
        raise FileNotFoundError(f"{run_dir} is not a training run directory (no metrics.csv or predictions_*.npz)")
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"plot folder {out} is a file")
    data = {}
    if (run_dir / "config.yaml").is_file():
        data = read_yaml(run_dir / "config.yaml").get("data", {})
    units = {}
    if (run_dir / "summary.json").is_file():  # a property model's unit (the summary records the target)
        try:
            target = json.loads((run_dir / "summary.json").read_text()).get("target") or {}
            units = {target["name"]: target["unit"]} if "name" in target and "unit" in target else {}
        except (ValueError, AttributeError):
            units = {}
    written = []
    if (run_dir / "metrics.csv").is_file():
        curve = learning_curves(run_dir, out, dpi, units)
        if curve is not None:
            written.append(curve)
    for split in ("valid", "test"):
        path = run_dir / f"predictions_{split}.npz"
        if path.is_file():
            try:
                with np.load(path) as npz:
                    preds = {k: npz[k] for k in npz.files}
            except (OSError, ValueError, EOFError) as exc:  # np.load reports a damaged file in these ways
                raise ValueError(f"{path}: cannot read the predictions ({exc})") from None
            key = "train_file" if split == "valid" or not data.get("test_file") else "test_file"
            source = Path(data[key]).name if data.get(key) else "data"
            what = {"valid": "validation", "test": "test"}[split]
            title = f"{run_dir.name}: {what} set of {source} ({len(preds.get('num_atoms', []))} frames)"
            p = parity(preds, title, out / f"parity_{split}.png", dpi, units)
            if p is not None:
                written.append(p)
    return written
