"""An output path never destroys the user's data: not when it names an input (under any spelling,
through a symlink or a hard link), and not an existing file without ``--overwrite``.

Measured on the code before these tests (283e99e): ``equipot eval model.pt data.h5 -o data.h5``
replaced the labelled data file with predictions, exit code 0; ``md`` and ``optimize`` given their
own input file as ``-o`` did the same; any existing output file was replaced without a word.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from ase.build import molecule
from ase.io import write

from equipot import build_potential, save_model
from equipot.cli.main import main
from equipot.demo import DEMO_DATA


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model, a labelled HDF5 data file (copied from the demo data) and a structure file."""
    root = tmp_path_factory.mktemp("outputs")
    torch.manual_seed(0)
    model = build_potential("ponita", elements=(1, 6, 8), cutoff=4.0, hidden=8, layers=1, r3_only=True,
                            basis_size=6, kernel_dim=6, avg_num_neighbors=8.0, scale=0.5)
    save_model(model, root / "model.pt")
    shutil.copy(DEMO_DATA, root / "data.h5")
    write(root / "ethanol.xyz", molecule("CH3CH2OH"))
    return root


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _spellings(root: Path, name: str) -> list[Path]:
    """The file root/name as itself, another spelling, a symlink and a hard link to it."""
    (root / "sub").mkdir(exist_ok=True)
    link, hard = root / f"link-{name}", root / f"hard-{name}"
    for p in (link, hard):
        p.unlink(missing_ok=True)
    link.symlink_to(root / name)
    os.link(root / name, hard)
    return [root / name, root / "sub" / ".." / name, link, hard]


@pytest.mark.parametrize("command", ["eval", "md", "optimize"])
def test_an_output_that_is_an_input_is_refused_before_any_work(files, capsys, command):
    target = "data.h5" if command == "eval" else "ethanol.xyz"
    before = _digest(files / target)
    for spelling in _spellings(files, target):
        if command == "eval":
            argv = ["eval", str(files / "model.pt"), str(files / "data.h5"), "-o", str(spelling), "--limit", "2"]
        else:
            argv = [command, str(files / "model.pt"), str(files / "ethanol.xyz"), "-o", str(spelling),
                    "--steps", "2"]
        for extra in ([], ["--overwrite"]):  # not even with --overwrite
            assert main(argv + extra) == 1, (spelling, extra)
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "is the input file" in err[0] and str(spelling) in err[0], err
            assert _digest(files / target) == before


def test_a_model_file_is_never_an_output(files, capsys):
    before = _digest(files / "model.pt")
    link = files / "model-link.xyz"
    link.unlink(missing_ok=True)
    link.symlink_to(files / "model.pt")
    assert main(["md", str(files / "model.pt"), str(files / "ethanol.xyz"), "-o", str(link), "--steps", "1",
                 "--overwrite"]) == 1
    assert "is the input file" in capsys.readouterr().err
    assert _digest(files / "model.pt") == before


@pytest.mark.parametrize("command", ["eval", "md", "optimize"])
def test_an_existing_output_is_replaced_only_with_overwrite_and_atomically(files, tmp_path, capsys, command):
    out = tmp_path / ("other.h5" if command == "eval" else "other.xyz")
    shutil.copy(files / ("data.h5" if command == "eval" else "ethanol.xyz"), out)
    before = _digest(out)
    if command == "eval":
        argv = ["eval", str(files / "model.pt"), str(files / "data.h5"), "-o", str(out), "--limit", "2"]
    else:
        argv = [command, str(files / "model.pt"), str(files / "ethanol.xyz"), "-o", str(out), "--steps", "2"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists; pass --overwrite" in err[0] and str(out) in err[0], err
    assert _digest(out) == before
    assert main(argv + ["--overwrite"]) in (0, 2)  # optimize: 2 = not converged in 2 steps
    assert _digest(out) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary file left


def test_a_symlinked_output_is_written_through_to_its_target(files, tmp_path, capsys):
    target, link = tmp_path / "target.xyz", tmp_path / "link.xyz"
    target.write_text("old\n")
    link.symlink_to(target)
    assert main(["optimize", str(files / "model.pt"), str(files / "ethanol.xyz"), "-o", str(link), "--steps", "1",
                 "--overwrite"]) in (0, 2)
    assert link.is_symlink() and target.read_text() != "old\n"
