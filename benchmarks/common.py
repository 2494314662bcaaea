"""What the benchmarks share: the equipot models they time, the test systems, the reference
data (read through :mod:`equipot.data`) and the memory probes.

Units: Å, eV, eV/Å; memory in MB (2**20 bytes).
"""
from __future__ import annotations

import resource
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

from equipot import Potential, build_potential
from equipot.data import H5Dataset, convert_rmd17

REPO = Path(__file__).resolve().parents[1]
#: The team's revised-MD17 files (``rmd17_<molecule>_{train,test}_01.npz``) beside the checkout.
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "rmd17"
#: Where converted HDF5 files and training runs go unless a script is told otherwise.
DEFAULT_OUT = Path("runs/bench_md17")

#: H, C, O: every benchmark system (biphenyl, C60, water, the rMD17 molecules) is made of these.
ELEMENTS = (1, 6, 8)
#: Cutoff radius of every model, equipot's and the peers', Å.
CUTOFF = 5.0
#: Options of the untrained equipot models that are timed; ponita is the default model, the
#: others stay at their own defaults.
BACKBONE_OPTIONS: dict[str, dict] = {
    "ponita": dict(hidden=64, layers=3, grid_size=12),
    "lieconv": {},
    "frame_averaging": {},
    "ga_attention": {},
    "grepsnet": {},
}


def untrained_model(backbone: str = "ponita", options: dict | None = None, seed: int = 0) -> Potential:
    """A seeded, untrained equipot model for H, C, O with a 5 Å cutoff.

    Timings do not depend on the weights, so this is what the speed benchmarks run.

    Args:
        options: backbone options; None means :data:`BACKBONE_OPTIONS` for ``backbone``.
    """
    torch.manual_seed(seed)
    options = BACKBONE_OPTIONS.get(backbone, {}) if options is None else options
    return build_potential(backbone, elements=list(ELEMENTS), cutoff=CUTOFF, **options)


# ------------------------------------------------------------------------------------ systems
def water_box(n_side: int, seed: int = 0) -> Atoms:
    """Periodic box of ``n_side**3`` water molecules at ~1 g/cm^3 (3.1 Å cubic grid, cell
    ``3.1 * n_side`` Å), each turned by a random rotation from a seeded generator."""
    rng = np.random.default_rng(seed)
    base = molecule("H2O")
    base.positions -= base.get_center_of_mass()
    spacing = 3.1
    pos, num = [], []
    for i in range(n_side):
        for j in range(n_side):
            for k in range(n_side):
                q = rng.normal(size=4)
                a, b, c, d = q / np.linalg.norm(q)
                rot = np.array([
                    [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                    [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                    [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]])
                pos.append(base.positions @ rot.T + spacing * np.array([i, j, k]))
                num.extend(base.numbers)
    atoms = Atoms(numbers=num, positions=np.concatenate(pos), cell=[spacing * n_side] * 3, pbc=True)
    atoms.wrap()
    return atoms


def systems(water_sides: tuple[int, ...] = (4, 8)) -> Iterator[tuple[str, Atoms]]:
    """(name, atoms): biphenyl (22 atoms), C60, and water boxes (192 and 1536 atoms by default).

    The same systems as the team's ``shared/bench/systems.py``, rebuilt here so the benchmarks
    run outside the team's checkout."""
    yield "biphenyl-22", molecule("biphenyl")
    yield "C60-60", molecule("C60")
    for n in water_sides:
        a = water_box(n)
        yield f"water-{len(a)}", a


# --------------------------------------------------------------------------- reference data
def rmd17_h5(molecule: str, data_dir: str | Path = DEFAULT_DATA, out: str | Path = DEFAULT_OUT) -> Path:
    """``out/rmd17_<molecule>.h5``: the official split-01 revised-MD17 files of ``molecule`` in
    equipot's format (eV, Å), with splits ``train`` and ``test``.

    Converted by :func:`equipot.data.convert_rmd17` on first use and reused afterwards, so the
    benchmarks that share ``out`` share one file.

    Raises:
        FileNotFoundError: a ``rmd17_<molecule>_{train,test}_01.npz`` file is not in ``data_dir``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    h5 = out / f"rmd17_{molecule}.h5"
    if not h5.exists():
        files = [Path(data_dir) / f"rmd17_{molecule}_{split}_01.npz" for split in ("train", "test")]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"missing {f} (give the folder of the revised-MD17 files)")
        convert_rmd17(files, h5, keep_old=False)
    return h5


def sample(dataset: H5Dataset, n: int | None, seed: int) -> H5Dataset:
    """``n`` frames of ``dataset`` drawn with ``seed``, in file order (all of them when ``n`` is
    None or at least the dataset's size)."""
    if n is None or n >= len(dataset):
        return dataset
    return dataset.subset(np.sort(np.random.default_rng(seed).permutation(len(dataset))[:n]))


# ----------------------------------------------------------------------------------- memory
def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux) in MB, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak(device: str) -> None:
    """Start a new peak-memory window (CUDA: allocator stats; Linux CPU: the RSS high-water mark)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def peak_mb(device: str) -> float:
    """Peak memory since :func:`reset_peak` (CUDA: max allocated; CPU: peak RSS), MB."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory of this process now, MB; 0 where /proc is missing."""
    return _status_mb("VmRSS") or 0.0
