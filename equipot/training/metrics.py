"""Error statistics (MAE/RMSE per target), the metrics CSV and the per-epoch line.

Units in reports: energies in meV and meV/atom, forces in meV/Å, stress in meV/Å^3;
properties in their own unit (as stored in the HDF5 file), except that properties in eV are
reported in meV.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..graph import AtomicGraph
from ..potentials.base import predicted
from ..safe_write import atomic_write

# name -> (factor from the stored unit, unit label) for the standard targets.
STANDARD = {
    "energy": (1000.0, "meV"),
    "energy_per_atom": (1000.0, "meV/atom"),
    "forces": (1000.0, "meV/Å"),
    "stress": (1000.0, "meV/Å^3"),
}


class ErrorStats:
    """Accumulates sums of |error|, error^2 and counts per target, then MAE and RMSE.

    Keys: ``energy`` (per structure, eV), ``energy_per_atom`` (eV/atom), ``forces`` (per
    component, eV/Å), ``stress`` (per component) and property names. Sums are kept in
    float64 so they can be all-reduced over DDP ranks (:meth:`as_tensor`/:meth:`from_tensor`).
    """

    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)
        self.sums = torch.zeros(len(self.keys), 3, dtype=torch.float64)

    def add(self, key: str, err: Tensor) -> None:
        err = err.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        k = self.keys.index(key)
        self.sums[k, 0] += err.abs().sum()
        self.sums[k, 1] += (err * err).sum()
        self.sums[k, 2] += err.numel()

    def update(self, pred: dict[str, Tensor], targets: dict[str, Tensor], graph: AtomicGraph,
               property_name: str | None = None) -> None:
        """Add a batch's errors for every key that both ``pred`` and ``targets`` have."""
        if property_name is not None:
            if property_name in self.keys:
                self.add(property_name, predicted(pred).double() - targets[property_name].double().reshape(-1))
            return
        if "energy" in targets and "energy" in self.keys:
            err = pred["energy"].double() - targets["energy"].double()
            self.add("energy", err)
            self.add("energy_per_atom", err / (graph.ptr[1:] - graph.ptr[:-1]).double())
        for key in ("forces", "stress"):
            if key in targets and key in self.keys and key in pred:
                self.add(key, pred[key].double() - targets[key].double())

    def as_tensor(self) -> Tensor:
        return self.sums.clone()

    def set_tensor(self, sums: Tensor) -> None:
        self.sums = sums.detach().cpu().to(torch.float64).clone()

    def compute(self) -> dict[str, float]:
        """``{key_mae: ..., key_rmse: ...}`` in the stored units (eV, eV/Å, property unit)."""
        out = {}
        for k, key in enumerate(self.keys):
            n = float(self.sums[k, 2])
            if n == 0:
                continue
            out[f"{key}_mae"] = float(self.sums[k, 0]) / n
            out[f"{key}_rmse"] = math.sqrt(float(self.sums[k, 1]) / n)
        return out


def metric_keys(targets: set[str], property_name: str | None, with_forces: bool = True) -> list[str]:
    """ErrorStats keys for a dataset with the given target names."""
    if property_name is not None:
        return [property_name]
    keys = []
    if "energy" in targets:
        keys += ["energy", "energy_per_atom"]
    if "forces" in targets and with_forces:
        keys.append("forces")
    if "stress" in targets:
        keys.append("stress")
    return keys


def report_rows(metrics: dict[str, float], units: dict[str, str] | None = None) -> list[tuple[str, float, float, str]]:
    """(target, MAE, RMSE, unit) rows in report units (meV for the standard targets)."""
    units = units or {}
    rows = []
    keys = [k[: -len("_mae")] for k in metrics if k.endswith("_mae")]
    for key in keys:
        factor, unit = report_unit(key, units.get(key, ""))
        rows.append((key, metrics[f"{key}_mae"] * factor, metrics[f"{key}_rmse"] * factor, unit))
    return rows


def report_unit(key: str, unit: str) -> tuple[float, str]:
    """(factor from the stored unit, unit label) in which the errors of ``key`` are reported:
    meV for the standard targets and for properties stored in eV, else the property's own unit."""
    if key in STANDARD:
        return STANDARD[key]
    return (1000.0, "meV") if unit == "eV" else (1.0, unit)


def format_table(metrics: dict[str, float], units: dict[str, str] | None = None) -> str:
    """A small text table of MAE/RMSE per target."""
    rows = report_rows(metrics, units)
    cells = [(key, _number(mae), _number(rmse), unit) for key, mae, rmse, unit in rows]
    width = max([12] + [len(c) + 2 for _, mae, rmse, _ in cells for c in (mae, rmse)])
    name = max([18] + [len(key) + 2 for key, *_ in cells])
    lines = [f"{'target':<{name}}{'MAE':>{width}}{'RMSE':>{width}}  unit"]
    for key, mae, rmse, unit in cells:
        lines.append(f"{key:<{name}}{mae:>{width}}{rmse:>{width}}  {unit}")
    return "\n".join(lines)


def _number(value: float) -> str:
    """Four decimals, or four significant digits in scientific notation where those would not
    show the value (huge or tiny), so that columns never run together."""
    if value != 0 and not 1e-3 <= abs(value) < 1e7:
        return f"{value:.4e}"
    return f"{value:.4f}"


def epoch_line(epoch: float, step: int, lr: float, train_loss: float, valid: dict[str, float], elapsed: float,
               property_name: str | None = None, property_unit: str = "") -> str:
    """One line per validation: validation MAE of energy (meV/atom, meV) and forces (meV/Å).

    ``epoch`` is the number of epochs done, fractional when training stopped inside an epoch.
    """
    shown = f"{int(epoch):4d}" if float(epoch).is_integer() else f"{epoch:4.2f}"
    parts = [f"epoch {shown}", f"step {step:7d}", f"lr {lr:.2e}", f"loss {train_loss:.4g}"]
    if "loss" in valid:
        parts.append(f"valid loss {valid['loss']:.4g}")
    if "energy_per_atom_mae" in valid:
        parts.append(f"E MAE {valid['energy_per_atom_mae'] * 1e3:.2f} meV/atom "
                     f"{valid['energy_mae'] * 1e3:.2f} meV")
    if "forces_mae" in valid:
        parts.append(f"F MAE {valid['forces_mae'] * 1e3:.2f} meV/Å")
    if "stress_mae" in valid:
        parts.append(f"S MAE {valid['stress_mae'] * 1e3:.3f} meV/Å^3")
    if property_name is not None and f"{property_name}_mae" in valid:
        factor, unit = report_unit(property_name, property_unit)
        parts.append(f"{property_name} MAE {valid[f'{property_name}_mae'] * factor:.4g} {unit}".rstrip())
    parts.append(f"{elapsed:.1f} s")
    return " | ".join(parts)


class MetricsCSV:
    """``metrics.csv`` in the run directory: one row per validation, each step once and in order.

    Rows are appended and flushed as they come. A checkpoint records how many rows there were
    (:meth:`rows`); a resumed run cuts the file back to that many (:meth:`truncate_to`), since it
    repeats the validations that came after the checkpoint, and a run started afresh in the
    directory of a run killed before its first checkpoint begins a new file (:meth:`reset`).
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = list(columns)

    def _read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as fh:
            return list(csv.DictReader(fh))

    def rows(self) -> int:
        """Rows written so far."""
        return len(self._read())

    def truncate_to(self, n: int) -> None:
        """Keep the first ``n`` rows."""
        rows = self._read()
        if len(rows) > n:
            self._write_all(rows[:n])

    def reset(self) -> None:
        """Start the file again: just the header."""
        self._write_all([])

    def _write_all(self, rows: list[dict]) -> None:
        with atomic_write(self.path) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, float]) -> None:
        if not self.path.exists():
            self._write_all([])
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            writer.writerow({k: _fmt(row.get(k)) for k in self.columns})
            fh.flush()


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def read_metrics(path: str | os.PathLike) -> dict[str, list[float]]:
    """Columns of a metrics CSV as lists of floats (empty cells are NaN)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (not a training run directory?)")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols: dict[str, list[float]] = {name: [] for name in reader.fieldnames or []}
        for row in reader:
            for name in cols:
                cell = row.get(name, "")
                cols[name].append(float(cell) if cell not in ("", None) else float("nan"))
    return cols
