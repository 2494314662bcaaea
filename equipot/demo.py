"""``equipot demo``: the main job end to end on data shipped inside the package.

Trains a small R3×S2 model for a short time on 300 revised-MD17 ethanol frames (PBE/def2-SVP,
Christensen & von Lilienfeld 2020, CC0; ``equipot/demo_data/ethanol_rmd17.h5``, with 100 test
frames), tests it, takes a test frame out as extended XYZ, runs NVE molecular dynamics and a FIRE
relaxation from it with :class:`~equipot.EquiCalc`, and writes the plots. Every step is what the
``equipot`` commands do; the printed summary names the files and the commands that would repeat it.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

DEMO_DATA = Path(__file__).resolve().parent / "demo_data" / "ethanol_rmd17.h5"
# A model that learns something visible in a minute on one CPU core.
DEMO_MODEL = ["model.hidden=32", "model.layers=2", "model.cutoff=4.0"]


def run_demo(out_dir: str | os.PathLike, seconds: float = 90.0, md_steps: int = 200, threads: int | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Run the demo into ``out_dir`` (created; must not exist or be empty); returns what it measured:
    test MAEs (meV, meV/Å), the NVE drift (meV/atom/ps), the relaxation's energy drop (eV) and the
    files written."""
    import ase.io
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
    from ase.md.verlet import VelocityVerlet
    from ase.optimize import FIRE
    from ase.units import fs

    from .calculators.ase import EquiCalc
    from .data.extxyz import export_frames, write_structures
    from .potentials.model_file import load_model
    from .training.config import load_config
    from .training.plots import plot_run
    from .training.trainer import train

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose another with -o DIR")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder {out.parent} does not exist")
    if seconds <= 0 or md_steps < 1:
        raise ValueError("the training time must be > 0 s and the MD steps >= 1")
    out.mkdir(exist_ok=True)
    data = out / "ethanol.h5"
    shutil.copyfile(DEMO_DATA, data)
    run = out / "run"
    overrides = [f"data.train_file={data}", "data.train_split=train", "data.valid_size=30",
                 "data.test_split=test", f"train.max_time={seconds}", "train.epochs=100000",
                 f"train.run_dir={run}", "train.progress=false", "train.checkpoint_every=200", *DEMO_MODEL]
    if threads is not None:
        overrides.append(f"train.threads={threads}")
    log(f"[1/5] training a small R3×S2 model for {seconds:.0f} s on 270 revised-MD17 ethanol frames "
        f"(30 for validation)")
    summary = train(load_config(None, overrides), log=lambda line: log("      " + line.replace("\n", "\n      ")))
    test = summary["test"]
    log(f"[2/5] test set (100 frames): energy MAE {test['energy_mae'] * 1e3:.1f} meV, force MAE "
        f"{test['forces_mae'] * 1e3:.1f} meV/Å")
    structure = out / "ethanol.xyz"
    export_frames(data, structure, "0", split="test")
    log(f"[3/5] first test frame written to {structure}")
    model = load_model(run / "model.pt")
    atoms = ase.io.read(structure)
    atoms.calc = EquiCalc(model)
    thermalize_momenta(atoms, temperature_K=300.0, rng=np.random.default_rng(0))
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = VelocityVerlet(atoms, 0.5 * fs)
    energies, times, frames = [], [], []

    def record() -> None:
        energies.append(atoms.get_total_energy() / len(atoms))
        times.append(dyn.get_time() / (1000 * fs))
        if dyn.nsteps % 10 == 0:
            frames.append(atoms.copy())

    dyn.attach(record, interval=1)
    t0 = time.perf_counter()
    dyn.run(md_steps)
    drift = float(np.polyfit(times, energies, 1)[0]) * 1e3
    trajectory = write_structures(out / "md.extxyz", frames)
    log(f"[4/5] NVE molecular dynamics, {md_steps} steps of 0.5 fs in {time.perf_counter() - t0:.1f} s: "
        f"energy drift {drift:+.3f} meV/atom/ps; trajectory {trajectory}")
    relaxed = atoms.copy()
    relaxed.calc = EquiCalc(model)
    e0 = relaxed.get_potential_energy()
    FIRE(relaxed, logfile=None).run(fmax=0.05, steps=500)
    drop = e0 - relaxed.get_potential_energy()
    relaxed_path = write_structures(out / "ethanol_relaxed.xyz", [relaxed])
    plots = plot_run(run)
    log(f"[5/5] relaxed (FIRE, fmax 0.05 eV/Å) by {drop:.3f} eV: {relaxed_path}; plots: "
        + ", ".join(str(p) for p in plots))
    log(f"done. The same with the commands: equipot train data.train_file={data} data.train_split=train "
        f"data.test_split=test train.max_time={seconds:.0f} ...; equipot md {run} {structure}; "
        f"equipot optimize {run} {structure}; equipot plot {run}")
    return {"test": test, "drift_meV_atom_ps": drift, "relax_drop_eV": drop,
            "files": [str(p) for p in (data, run / "model.pt", structure, trajectory, relaxed_path, *plots)]}
