"""A run directory as users meet it: one run at a time, resume that refuses what it cannot honour
and extends what it can, metrics rows once each, Ctrl-C that saves, files that are never
half-written, a log file, absolute data paths, the schedule and threads of a budget."""
from __future__ import annotations

import csv
import errno
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from equipot.training import load_config, resume_config, train
from equipot.training.metrics import MetricsCSV

from .conftest import TINY, cli_env, run_cli

SHORT = ["data.valid_size=20", "data.n_train=40", "data.batch_size=4", "train.warmup_steps=5"]


def _config(h5: Path, run_dir: Path, *extra: str):
    return load_config(None, [f"data.train_file={h5}", "data.train_split=train", f"train.run_dir={run_dir}",
                              *TINY, *SHORT, *extra])


def _steps(run: Path) -> list[int]:
    with (run / "metrics.csv").open(newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


def _start_long_run(h5: Path, run: Path, cwd: Path) -> subprocess.Popen:
    args = [f"data.train_file={h5}", "data.train_split=train", *TINY, *SHORT, "train.epochs=100000",
            "train.checkpoint_every=0", f"train.run_dir={run}"]
    return subprocess.Popen([sys.executable, "-m", "equipot.cli", "train", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120, rows: int = 0) -> None:
    """Until ``path`` exists (a metrics file: with at least ``rows`` rows)."""
    deadline = time.monotonic() + timeout
    while not path.exists() or (rows and len(path.read_text().splitlines()) <= rows):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_a_second_training_in_the_same_run_directory_fails_at_once(ethanol_h5, tmp_path):
    run = tmp_path / "run"
    first = _start_long_run(ethanol_h5, run, tmp_path)
    try:
        _wait_for(run / "metrics.csv", first)
        t0 = time.monotonic()
        second = run_cli(["train", f"data.train_file={ethanol_h5}", "data.train_split=train", *TINY,
                          f"train.run_dir={run}"], cwd=tmp_path, check=False)
        assert second.returncode == 1 and time.monotonic() - t0 < 60
        assert second.stderr.strip().splitlines() == [
            f"equipot train: error: {run}: another training run is using this run directory"]
        assert first.poll() is None, "the first run must go on undisturbed"
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)


def test_ctrl_c_finishes_the_step_saves_a_checkpoint_and_says_how_to_resume(ethanol_h5, tmp_path):
    run = tmp_path / "run"
    proc = _start_long_run(ethanol_h5, run, tmp_path)
    _wait_for(run / "metrics.csv", proc, rows=1)  # training is under way
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"checkpoint saved. Resume with: equipot train --resume {run}" in err
    step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert step > 0
    resumed = run_cli(["train", "--resume", str(run), f"train.max_steps={step + 3}"], cwd=tmp_path)
    assert f"resuming {run} from step {step}" in resumed.stdout
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == step + 3
    log = (run / "train.log").read_text()
    assert "equipot train:" in log and f"resuming {run} from step {step}" in log and "\r" not in log


def test_resume_refuses_overrides_it_cannot_honour(ethanol_h5, tmp_path):
    run = tmp_path / "run"
    train(_config(ethanol_h5, run, "train.epochs=1"), log=lambda s: None)
    for override in ("model.cutoff=2.0", "model.hidden=64", "data.n_train=10", "train.lr=0.1"):
        key = override.split("=")[0]
        with pytest.raises(ValueError, match=f"{key} cannot change in a resumed run"):
            resume_config(run, [override])
    resume_config(run, ["model.cutoff=4.0", "train.epochs=3", "train.max_time=10min", "train.threads=1"])
    proc = run_cli(["train", "--resume", str(run), "model.cutoff=2.0"], cwd=tmp_path, check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["cutoff"] == 4.0


def test_a_finished_run_is_extended_by_a_longer_budget(ethanol_h5, tmp_path):
    run = tmp_path / "run"
    train(_config(ethanol_h5, run, "train.epochs=2"), log=lambda s: None)
    assert _steps(run) == [10, 20]
    lines: list[str] = []
    summary = train(resume_config(run, ["train.epochs=3"]), resume=True, log=lines.append)
    assert summary["steps"] == 30 and _steps(run) == [10, 20, 30]
    assert any("extending the finished run from step 20" in line for line in lines)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 3
    summary = train(resume_config(run, ["train.epochs=10", "train.max_steps=35"]), resume=True, log=lines.append)
    assert summary["steps"] == 35
    # the same budget again: nothing to do, and it says how to train longer
    lines.clear()
    train(resume_config(run), resume=True, log=lines.append)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 35
    assert any("nothing to train" in line and "train.max_steps (35)" in line for line in lines)


class _Killed(BaseException):
    pass


def test_metrics_rows_appear_once_after_a_kill_between_a_row_and_the_next_checkpoint(ethanol_h5, tmp_path,
                                                                                     monkeypatch):
    """With checkpoint_every = one epoch, the checkpoint of step 20 is written just before the
    validation of step 20; a kill after that validation's row and before the next checkpoint made
    the resumed run write row 20 twice."""
    run = tmp_path / "run"
    appended = []
    original = MetricsCSV.append

    def append_then_die(self, row):
        original(self, row)
        appended.append(row["step"])
        if len(appended) == 2:
            raise _Killed

    monkeypatch.setattr(MetricsCSV, "append", append_then_die)
    with pytest.raises(_Killed):
        train(_config(ethanol_h5, run, "train.epochs=3", "train.checkpoint_every=10"), log=lambda s: None)
    monkeypatch.setattr(MetricsCSV, "append", original)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 20
    train(resume_config(run), resume=True, log=lambda s: None)
    assert _steps(run) == [10, 20, 30]


def test_a_run_killed_before_its_first_checkpoint_starts_afresh(ethanol_h5, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,step\n1,10\n2,20\n")
    (run / "train.log").write_text("old run\n")
    train(_config(ethanol_h5, run, "train.epochs=1"), log=lambda s: None)
    assert _steps(run) == [10]
    assert "old run" not in (run / "train.log").read_text()


def test_predictions_never_half_written(ethanol_h5, tmp_path, monkeypatch):
    """A full disk while the predictions are written: one clear error, no file under the final name."""
    evaluate_module = importlib.import_module("equipot.training.evaluate")  # the module, not the function

    def savez_fills_the_disk(fh, **arrays):
        fh.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluate_module.np, "savez", savez_fills_the_disk)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="no space left on the device") as info:
        train(_config(ethanol_h5, run, "train.epochs=1"), log=lambda s: None)
    assert info.value.errno == errno.ENOSPC
    assert not (run / "predictions_valid.npz").exists()
    assert not [p for p in run.iterdir() if ".tmp" in p.name]


def test_a_full_disk_while_checkpointing_is_one_clear_error(ethanol_h5, tmp_path, monkeypatch):
    import equipot.training.checkpoint as checkpoint

    run = tmp_path / "run"
    calls: list = []
    real_save = torch.save

    def save_until_full(obj, path):
        if "checkpoint" in Path(path).name:
            calls.append(path)
        if len(calls) > 1:  # torch.save's own words when the disk fills
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                               "file data/3: file write failed")
        real_save(obj, path)

    monkeypatch.setattr(checkpoint.torch, "save", save_until_full)
    with pytest.raises(OSError, match="checkpoint.pt was not written and any earlier version of it is unchanged"):
        train(_config(ethanol_h5, run, "train.epochs=2", "train.checkpoint_every=10"), log=lambda s: None)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 10
    assert not [p for p in run.iterdir() if ".tmp" in p.name]


def test_data_paths_are_stored_absolute(ethanol_h5, tmp_path, monkeypatch):
    monkeypatch.chdir(ethanol_h5.parent)
    run = tmp_path / "run"
    train(_config(Path(ethanol_h5.name), run, "train.epochs=1"), log=lambda s: None)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["train_file"] == str(ethanol_h5)
    monkeypatch.chdir(tmp_path)
    train(resume_config(run, ["train.epochs=2"]), resume=True, log=lambda s: None)
    assert _steps(run) == [10, 20]


def test_a_time_or_step_budget_decays_the_learning_rate_to_the_end(ethanol_h5, tmp_path):
    run = tmp_path / "run"
    train(_config(ethanol_h5, run, "train.max_steps=30", "train.epochs=1000", "train.min_lr=1e-5",
                  "train.max_time=10min", "train.threads=1"), log=lambda s: None)
    saved = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert saved["scheduler"] == "cosine" and saved["max_time"] == 600.0
    with (run / "metrics.csv").open(newline="") as fh:
        lrs = [float(row["lr"]) for row in csv.DictReader(fh)]
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05) and lrs == sorted(lrs, reverse=True)
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="not a duration"):
        _config(ethanol_h5, run, "train.max_time=8 parsecs")


def test_one_composition_falls_back_to_a_mean_energy_per_atom(ethanol_h5, tmp_path):
    """Ethanol alone cannot separate H, C and O: least squares gave H -839.9 eV, N -93.3 eV."""
    from equipot.data import H5Dataset
    from equipot.potentials import load_model

    lines: list[str] = []
    train(_config(ethanol_h5, tmp_path / "run", "train.epochs=1"), log=lines.append)
    model = load_model(tmp_path / "run" / "model.pt")
    data = H5Dataset(ethanol_h5, split="train")
    per_atom = float(np.mean(data.energies() / data.num_atoms()))
    e0 = model.config.atomic_energies  # fitted on the 40 training frames: all alike, near the mean of all
    assert e0[0] == e0[1] == e0[2] and e0[0] == pytest.approx(per_atom, abs=0.05)
    assert any("do not determine one reference energy per element" in line for line in lines)


def test_config_typos_suggest_the_key(ethanol_h5, tmp_path):
    for override, hint in (("model.hiden=3", "model.hidden"), ("train.lrr=1", "train.lr"),
                           ("model.name=ponita", "model.backbone")):
        with pytest.raises(ValueError, match=f"did you mean '{hint}'"):
            _config(ethanol_h5, tmp_path, override)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs os.sched_getaffinity")
def test_threads_default_to_the_available_cores():
    from equipot.threads import available_cores, set_threads

    assert set_threads() == available_cores() == torch.get_num_threads()
    assert set_threads(1) == 1 == torch.get_num_threads()
