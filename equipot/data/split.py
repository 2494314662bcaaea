"""Random splits of an equipot dataset."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .reader import H5Dataset


def random_split(
    dataset: H5Dataset,
    lengths: Sequence[int | float],
    seed: int = 0,
) -> list[H5Dataset]:
    """Split ``dataset`` at random into parts of the given sizes.

    ``lengths`` are either frame counts or fractions; fractions that sum to 1 give the rounding
    remainder to the last part, fractions that sum to less leave frames unused.
    The same ``seed`` gives the same split.
    """
    n = len(dataset)
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: no lengths given")
    if all(isinstance(x, (int, np.integer)) for x in lengths):
        sizes = [int(x) for x in lengths]
    else:
        fracs = [float(x) for x in lengths]
        if any(x < 0 for x in fracs) or sum(fracs) > 1 + 1e-9:
            raise ValueError(f"random_split: fractions {fracs} must be >= 0 and sum to at most 1")
        sizes = [int(np.floor(x * n)) for x in fracs]
        if abs(sum(fracs) - 1) < 1e-9:
            sizes[-1] = n - sum(sizes[:-1])
    if any(s < 0 for s in sizes) or sum(sizes) > n:
        raise ValueError(f"random_split: sizes {sizes} exceed the {n} frames of {dataset.path}")
    perm = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for s in sizes:
        out.append(dataset.subset(perm[start:start + s]))
        start += s
    return out
