"""What an equipot HDF5 dataset holds, as a dict and as text (``equipot info``)."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from .reader import H5Dataset, open_h5

# rows of forces read at a time for the statistics (bounded memory on large files)
_CHUNK_ROWS = 1 << 20


def summarize(path: str | os.PathLike) -> dict[str, Any]:
    """Summary of an equipot HDF5 file as a JSON-ready dict: provenance, frames, elements, atoms per
    frame, fields and properties with units, splits, atomrefs, energy (eV) and force (eV/Å) statistics."""
    ds = H5Dataset(path)
    attrs = ds.attrs
    natoms = ds.num_atoms()
    out: dict[str, Any] = {
        "file": str(path),
        "format": f"{attrs.get('format')} v{attrs.get('version')}",
        "source": attrs.get("source", ""),
        "source_format": attrs.get("source_format", ""),
        "level_of_theory": attrs.get("level_of_theory", ""),
        "created_by": attrs.get("created_by", ""),
        "frames": len(ds),
        "atoms": int(natoms.sum()),
        "elements": {chemical_symbols[z]: z for z in ds.elements()},
        "atoms_per_frame": {"min": int(natoms.min()), "mean": float(natoms.mean()), "max": int(natoms.max())},
        "fields": {},
        "properties": {},
        "splits": {k: len(v) for k, v in sorted(ds.splits().items())},
        "atomrefs": {k: a.get("unit", "") for k, (_, a) in ds.atomrefs().items()},
    }
    units = ds.units()
    with open_h5(path) as f:
        for name in ("positions", "energy", "forces", "cell", "pbc", "stress"):
            if name in f:
                entry = {"shape": list(f[name].shape), "unit": units.get(name, "")}
                if "source_unit" in f[name].attrs:
                    entry["source_unit"] = str(f[name].attrs["source_unit"])
                out["fields"][name] = entry
        for name, info in ds.property_info().items():
            out["properties"][name] = {
                "per": "atom" if info["per_atom"] else "frame",
                "shape": list(info["shape"]),
                "unit": info.get("unit", ""),
                **({"source_unit": info["source_unit"]} if "source_unit" in info else {}),
                **({"description": info["description"]} if "description" in info else {}),
            }
        for group in ("strings", "ragged"):
            for name in f.get(group, {}):
                if not name.endswith("_offsets"):
                    out["properties"][name] = {"per": "frame", "kind": group[:-1] if group == "strings" else group,
                                               "unit": str(f[f"{group}/{name}"].attrs.get("unit", ""))}
        if "forces" in f:
            forces = f["forces"]
            sq, mx, n = 0.0, 0.0, 0
            for a in range(0, forces.shape[0], _CHUNK_ROWS):
                block = forces[a:a + _CHUNK_ROWS]
                sq += float(np.square(block).sum())
                if block.size:
                    mx = max(mx, float(np.linalg.norm(block, axis=1).max()))
                n += block.size
            out["forces_stats"] = {"rms_component": (sq / max(n, 1)) ** 0.5, "max_norm": mx, "unit": "eV/Angstrom"}
    if ds.has("energy"):
        e = ds.energies()
        per_atom = e / natoms
        out["energy_stats"] = {
            "mean": float(e.mean()), "std": float(e.std()), "min": float(e.min()), "max": float(e.max()),
            "mean_per_atom": float(per_atom.mean()), "std_per_atom": float(per_atom.std()), "unit": "eV",
        }
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """The :func:`summarize` dict as the text ``equipot info`` prints."""
    lines = [f"{summary['file']}  ({summary['format']})"]
    for key in ("source", "source_format", "level_of_theory", "created_by"):
        if summary.get(key):
            lines.append(f"  {key.replace('_', ' ')}: {summary[key]}")
    apf = summary["atoms_per_frame"]
    lines.append(f"  frames: {summary['frames']}   atoms: {summary['atoms']}   "
                 f"atoms per frame: {apf['min']}..{apf['max']} (mean {apf['mean']:.2f})")
    lines.append("  elements: " + " ".join(f"{s}({z})" for s, z in summary["elements"].items()))
    lines.append("  fields:")
    for name, f in summary["fields"].items():
        src = f" (source {f['source_unit']})" if f.get("source_unit") and f["source_unit"] != f["unit"] else ""
        lines.append(f"    {name:<12} {tuple(f['shape'])!s:<18} {f['unit']}{src}")
    if summary["properties"]:
        lines.append("  properties:")
        for name, p in summary["properties"].items():
            shape = p.get("kind") or ("per " + p["per"] + (f" {tuple(p['shape'])}" if p.get("shape") else ""))
            src = f" (source {p['source_unit']})" if p.get("source_unit") and p["source_unit"] != p["unit"] else ""
            desc = f"  {p['description']}" if p.get("description") else ""
            lines.append(f"    {name:<16} {shape:<18} {p['unit'] or '-'}{src}{desc}")
    if summary["atomrefs"]:
        lines.append("  atomrefs: " + ", ".join(f"{k} [{u}]" for k, u in summary["atomrefs"].items()))
    splits = summary["splits"]
    lines.append("  splits: " + (", ".join(f"{k} ({v})" for k, v in splits.items()) if splits else "none"))
    if "energy_stats" in summary:
        s = summary["energy_stats"]
        lines.append(f"  energy (eV): mean {s['mean']:.6g}  std {s['std']:.6g}  min {s['min']:.6g}  "
                     f"max {s['max']:.6g}  per atom {s['mean_per_atom']:.6g} ± {s['std_per_atom']:.3g}")
    if "forces_stats" in summary:
        s = summary["forces_stats"]
        lines.append(f"  forces (eV/Å): rms component {s['rms_component']:.4g}  max |F| {s['max_norm']:.4g}")
    return "\n".join(lines)
