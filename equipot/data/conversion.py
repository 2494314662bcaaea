"""What the converters (``md17``, ``qm9``, ``ase_io``) share: input paths, split files, the
writer's error messages relabelled for one input, and the progress bar.

A converter module reads its source format and writes frames through
:class:`~equipot.data.writer.HDF5Writer` in eV and Å; it also declares how it recognises its
input (``recognises_<format>(path) -> bool``), which :mod:`equipot.data.formats` asks.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .writer import HDF5Writer

#: one input path or several, as the converters accept them
Inputs = str | os.PathLike | Sequence[str | os.PathLike]
#: split name -> (frame indices [K] int64, where they came from, for error messages)
Splits = dict[str, tuple[np.ndarray, str]]


def as_paths(inputs: Inputs) -> list[Path]:
    """``inputs`` as a list of paths (one path or a sequence of them)."""
    return [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]


def open_inputs(inputs: Inputs) -> list[Path]:
    """``inputs`` as paths, each checked to exist; FileNotFoundError names the first missing one."""
    paths = as_paths(inputs)
    if not paths:
        raise ValueError("no input files given")
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
    return paths


def read_index_file(path: str | os.PathLike) -> np.ndarray:
    """Frame indices [K] int64 from a split file (e.g. rMD17's ``index_train_01.csv``): plain text,
    one integer per line (blank lines ignored)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such split file")
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip().rstrip(",")
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{path}: line {lineno}: expected one integer index, got {text[:40]!r}") from None
            if value != int(value) or value < 0:
                raise ValueError(f"{path}: line {lineno}: index {text!r} is not a non-negative integer")
            out.append(int(value))
    return np.asarray(out, dtype=np.int64)


def collect_splits(
    splits: Mapping[str, str | os.PathLike | Sequence[int] | np.ndarray] | None,
    files: Mapping[str, Path] | None = None,
) -> Splits:
    """Read the splits to store: ``files`` (name -> index file, e.g. found in a splits folder) first,
    then ``splits`` (name -> index file or list of frame indices), which win on equal names."""
    out: Splits = {}
    for name, p in (files or {}).items():
        out[name] = (read_index_file(p), str(p))
    for name, value in (splits or {}).items():
        if isinstance(value, (str, os.PathLike)):
            out[name] = (read_index_file(value), str(value))
        else:
            out[name] = (np.asarray(value, dtype=np.int64).reshape(-1), f"split '{name}'")
    return out


def random_split_indices(sizes: Mapping[str, int], total: int, seed: int = 0) -> Splits:
    """Disjoint random splits of ``total`` frames: a permutation drawn with ``seed`` cut into parts
    of ``sizes`` (name -> frame count) in order, each part sorted. The same parts as
    :func:`equipot.data.random_split` with the same sizes and seed gives."""
    need = sum(int(n) for n in sizes.values())
    if any(int(n) < 1 for n in sizes.values()):
        raise ValueError(f"random splits {dict(sizes)}: every size must be at least 1")
    if need > total:
        raise ValueError(f"random splits {dict(sizes)} need {need} frames; the file has {total}")
    perm = np.random.default_rng(seed).permutation(total)
    out: Splits = {}
    start = 0
    for name, n in sizes.items():
        out[name] = (np.sort(perm[start:start + int(n)]), f"random split '{name}' (seed {seed})")
        start += int(n)
    return out


def add_splits(writer: HDF5Writer, splits: Splits, total: int, limit: int | None,
               random: Mapping[str, int] | None = None, seed: int = 0) -> None:
    """Record ``splits`` in ``writer``; an index past the ``total`` frames written is an error naming
    its origin, unless a ``limit`` cut the inputs short. ``random`` (name -> size) adds disjoint
    random splits of the ``total`` frames drawn with ``seed`` (:func:`random_split_indices`)."""
    if random:
        clash = sorted(set(random) & set(splits))
        if clash:
            raise ValueError(f"split '{clash[0]}' is given both as a file and as a random split")
        splits = {**splits, **random_split_indices(random, total, seed)}
    for name, (idx, origin) in splits.items():
        if limit is not None:
            # A --limit slice keeps only the split entries that fall inside it.
            idx = idx[idx < total]
        elif idx.size and idx.max() >= total:
            raise ValueError(f"{origin}: split '{name}' index {int(idx.max())} out of range "
                             f"for {total} frames")
        writer.add_split(name, idx)


def relabel_error(exc: ValueError, path: Path | str, base: int) -> ValueError:
    """The writer's ``frame <k>: ...`` error as ``<path>: frame <k - base>: ...`` (frames of this input)."""
    m = re.match(r"^frame (\d+): (.*)$", str(exc), re.DOTALL)
    if m:
        return ValueError(f"{path}: frame {int(m.group(1)) - base}: {m.group(2)}")
    return ValueError(f"{path}: {exc}")


def progress_bar(total: int | None, desc: str, enabled: bool, unit: str = "frame") -> Any:
    """A tqdm bar over ``total`` items (unknown when None); a silent one when not ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)
