"""The training loop: AdamW, warm-up + plateau/cosine schedule, clipping, EMA, early stopping,
atomic checkpoints, exact resume and DistributedDataParallel.

Run directory (``train.run_dir``)::

    config.yaml          the resolved config (every default filled in)
    metrics.csv          one row per validation (epoch, step, time, lr, losses, MAE/RMSE)
    checkpoint.pt        full training state, every ``checkpoint_every`` steps and at the end
    model.pt             EMA weights at the best validation score (``equipot.load_model``)
    model_last.pt        EMA weights at the last step
    predictions_valid.npz, predictions_test.npz   the final model's predictions (for plots)
    summary.json         final metrics, steps, time

Resuming (``--resume RUN_DIR``) restores model, optimiser, schedule, EMA, RNG states, the
position in the seeded data order and the running sums, so a run killed at any point and
resumed ends with the same weights as one that was never interrupted (on the CPU, where the
arithmetic is deterministic).
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data.loader import make_loader
from ..potentials.base import Potential, PotentialConfig, element_counts
from ..potentials.model_file import load_model, save_model
from ..precision import DTYPES
from ..safe_write import atomic_write, output_lock
from ..threads import set_threads
from .checkpoint import check_same_run, data_fingerprints, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, config_to_dict, save_config
from .data import Splits, build_splits, check_targets, target_values
from .distributed import all_reduce_sum, barrier, init_distributed, rank_agreement, resolve_device, shutdown
from .ema import EMA
from .energy_fit import EnergyFit
from .evaluate import available_targets, evaluate, write_predictions
from .interrupts import StopSignals, TrainingInterrupted
from .losses import LossWeights, combine, loss_terms
from .metrics import MetricsCSV, epoch_line, format_table, metric_keys
from .model_from_data import model_from_data
from .sampler import EpochSampler
from .schedule import LRSchedule
from .targets import loss_scale

#: the spread of the backbone's output among atoms of one element below which the network is dead
#: (the output is of order 0.01 to 1 by construction; float32 rounding alone leaves ~1e-7 of it)
DEAD_OUTPUT_STD = 1e-6
#: training frames whose output spread is checked when there are no validation frames
DEAD_PROBE_FRAMES = 64


class DeadNetworkError(ValueError):
    """Training ended without a usable model: the network died (constant output) before any
    validation could keep one."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Train a :class:`~equipot.potentials.Potential` as ``config`` says.

    ``resume=True`` continues the run in ``config.train.run_dir`` from its ``checkpoint.pt``.
    ``log`` receives the per-epoch lines (rank 0 only).
    """

    def __init__(self, config: Config, resume: bool = False, log: Callable[[str], None] | None = None):
        self.config = config
        self.resume = resume
        self.log_fn = log or (lambda s: print(s, flush=True))
        tc = config.train
        self.dist = init_distributed(tc.device if tc.device != "auto" else
                                     ("cuda" if torch.cuda.is_available() else "cpu"))
        self.threads = set_threads(tc.threads, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        self.device = resolve_device(tc.device, self.dist)
        self.dtype = DTYPES[tc.dtype]
        self.run_dir = Path(tc.run_dir)
        self._lock = None
        if self.dist.is_main:
            if self.run_dir.exists() and not self.run_dir.is_dir():
                raise NotADirectoryError(f"train.run_dir {self.run_dir} is a file, not a directory")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock = output_lock(self.run_dir / "run")
            try:
                self._lock.__enter__()
            except FileExistsError:
                self._lock = None
                raise FileExistsError(f"{self.run_dir}: another training run is using this run directory") from None
        try:
            self._set_up()
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def _set_up(self) -> None:
        config, resume, tc = self.config, self.resume, self.config.train
        config.resolve_defaults()
        self.weights = LossWeights(
            energy=tc.energy_weight, forces=tc.forces_weight, stress=tc.stress_weight,
            property=tc.property_weight, property_name=tc.property, kind=tc.loss, huber_delta=tc.huber_delta,
        )
        world = self.dist.world_size
        if config.data.batch_size % world:
            raise ValueError(f"data.batch_size {config.data.batch_size} (global) is not divisible by the "
                             f"{world} DDP processes")
        self.local_batch = config.data.batch_size // world
        checkpoint_path = self.run_dir / "checkpoint.pt"
        self._state = None
        if resume:
            self._state = load_checkpoint(checkpoint_path, map_location="cpu")
        elif checkpoint_path.exists():
            raise FileExistsError(f"{self.run_dir} already holds a training run (checkpoint.pt); resume it "
                                  f"with --resume {self.run_dir} or choose another train.run_dir")
        self.train_log = self.run_dir / "train.log"
        if self._state is None and self.dist.is_main:
            # A run killed before its first checkpoint left its log (and metrics.csv) behind: this run
            # starts them afresh.
            self.train_log.unlink(missing_ok=True)
        # Absolute data paths in the saved config, so the run resumes from any working directory.
        for key in ("train_file", "valid_file", "test_file"):
            if getattr(config.data, key):
                setattr(config.data, key, str(Path(getattr(config.data, key)).absolute()))
        if tc.scheduler == "auto":  # decided once, at the start, and saved with the run
            tc.scheduler = "cosine" if (tc.max_steps or tc.max_time) else "plateau"
        seed_everything(tc.seed)
        self.splits: Splits = build_splits(config.data)
        self.data_fingerprints = data_fingerprints(config.data)  # the files exist: build_splits opened them
        if self._state is not None:
            check_same_run(self._state, config_to_dict(config), self.data_fingerprints, checkpoint_path,
                           self.run_dir / "config.yaml")
        self._check_data()
        # The correction is trained only when an energy-like loss reaches it: DDP rejects
        # parameters that get no gradient.
        energy_loss = tc.property is not None or (
            tc.energy_weight > 0 and "energy" in available_targets(self.splits.train))
        self.model = self._build_model()
        if tc.property is not None:
            values = target_values(self.splits.train, tc.property)
            counts = element_counts(self.splits.train.numbers_per_frame(), self.model.config.elements)
            self.weights.property_scale = loss_scale(values, counts)
        self.learn_energies = bool(self.model.config.learns_atomic_energies() and energy_loss)
        self.model.energy_correction.requires_grad_(self.learn_energies)
        self.energy_fit = None
        if self.learn_energies and tc.energy_refit_frames > 0:
            self.energy_fit = EnergyFit(self.splits.train, tc.property, self.model, tc.energy_refit_frames,
                                        config.data.seed, config.data.valid_batch_size)
            if self._state is None:
                self.energy_fit.refit(self.model)
        self.model.to(device=self.device, dtype=self.dtype)
        # The energy correction is an offset, not a weight: decaying it would pull it off the data.
        rest = [p for name, p in self.model.named_parameters() if name != "energy_correction"]
        groups = [{"params": rest}, {"params": [self.model.energy_correction], "weight_decay": 0.0}]
        # foreach: torch defaults to it only on GPUs; on the CPU too it replaces a Python loop over parameters
        self.optimizer = torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay, amsgrad=tc.amsgrad,
                                           foreach=True)
        self.sampler = EpochSampler(len(self.splits.train), seed=tc.seed, shuffle=True,
                                    rank=self.dist.rank, world_size=world)
        self.steps_per_epoch = len(self.sampler) // self.local_batch + (len(self.sampler) % self.local_batch > 0)
        self.schedule = LRSchedule(self.optimizer, tc.lr, tc.warmup_steps, tc.scheduler, tc.plateau_factor,
                                   tc.plateau_patience, tc.min_lr)
        self.ema = EMA(self.model, tc.ema_decay) if tc.ema_decay is not None else None
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.epoch_loss = [0.0, 0]  # sum of step losses, steps (this epoch)
        self.best = math.inf
        self.best_step = 0
        self.bad = 0
        self.elapsed = 0.0
        self._t0: float | None = None
        self.finished = False
        self.signals = StopSignals()
        self.ddp_model: nn.Module = self.model
        self.output_std: float | None = None
        self._validated_step = -1
        self.dead_step: int | None = None
        self.targets = available_targets(self.splits.train)
        self.terms = self.weights.terms(self.targets)
        if not self.terms:
            raise ValueError(f"{self.splits.train.path}: no loss term applies (targets in the data: "
                             f"{', '.join(sorted(self.targets)) or 'none'}; check the train.*_weight values)")
        self._check_monitor()
        self.need_forces = "forces" in self.terms
        self.need_stress = "stress" in self.terms
        self.csv = MetricsCSV(self.run_dir / "metrics.csv", self._csv_columns())
        if self._state is not None:
            self._restore(self._state)
        elif self.dist.is_main:
            self.csv.reset()
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.dist.is_main:
            save_config(config, self.run_dir / "config.yaml")
        barrier(self.dist)

    # ------------------------------------------------------------------ set-up
    def log(self, text: str) -> None:
        """A line for the console and for ``train.log`` in the run directory (rank 0 only)."""
        if self.dist.is_main:
            self.log_fn(text)
            with self.train_log.open("a", encoding="utf-8") as fh:
                fh.write(text + "\n")

    def _check_data(self) -> None:
        prop = self.config.train.property
        for ds, what in ((self.splits.train, "training"), (self.splits.valid, "validation"),
                         (self.splits.test, "test")):
            if ds is not None:
                check_targets(ds, prop, what)

    def _check_monitor(self) -> None:
        prop = self.config.train.property
        keys = metric_keys(self.targets, prop)
        valid = ["loss"] + [f"{k}_{m}" for k in keys for m in ("mae", "rmse")]
        if self.config.train.monitor not in valid:
            raise ValueError(f"train.monitor: {self.config.train.monitor!r} is not a validation metric of this "
                             f"data (choose one of {', '.join(valid)})")

    @property
    def eval_model(self) -> Potential:
        """The weights that are validated and saved: the EMA when on, else the trained ones."""
        return self.ema.shadow if self.ema is not None else self.model

    def _build_model(self) -> Potential:
        if self._state is not None:
            known = {f.name for f in fields(PotentialConfig)}
            return Potential(PotentialConfig(**{k: v for k, v in self._state["potential_config"].items()
                                                if k in known}))
        return model_from_data(self.config.model, self.splits, self.config.data, self.config.train.property,
                               log=self.log)

    def _csv_columns(self) -> list[str]:
        cols = ["epoch", "step", "time_s", "lr", "train_loss", "valid_loss"]
        prop = self.config.train.property
        names = [prop] if prop else [n for n in ("energy", "energy_per_atom", "forces", "stress")
                                     if (n.startswith("energy") and "energy" in self.targets) or n in self.targets]
        for n in names:
            cols += [f"{n}_mae", f"{n}_rmse"]
        return cols

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "data_files": self.data_fingerprints,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "epoch_loss": list(self.epoch_loss),
            "best": self.best,
            "best_step": self.best_step,
            "bad": self.bad,
            "elapsed": self.now_elapsed(),
            "finished": self.finished,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": rng_state(),
            "potential_config": asdict(self.model.config),
            "config": config_to_dict(self.config),
            "budget": self._budget(),
            "metrics_rows": self.csv.rows(),
            "dead_step": self.dead_step,
        }

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.model.to(device=self.device, dtype=self.dtype)
        if self.ema is not None:
            if state.get("ema") is None:
                raise ValueError("the checkpoint has no EMA state but train.ema_decay is set")
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        for key in ("step", "epoch", "batch_in_epoch", "bad", "best_step"):
            setattr(self, key, int(state[key]))
        self.best = float(state["best"])
        self.dead_step = state.get("dead_step")
        self.elapsed = float(state["elapsed"])
        self.finished = bool(state.get("finished", False))
        self.epoch_loss = [float(state["epoch_loss"][0]), int(state["epoch_loss"][1])]
        set_rng_state(state["rng"])
        if self.dist.is_main:
            # rows appended after this checkpoint was written are written again as the run repeats them
            self.csv.truncate_to(int(state.get("metrics_rows", self.csv.rows())))
        old_budget = state.get("budget", self._budget())
        grown = self._budget() != old_budget
        self.log(f"resuming {self.run_dir} from step {self.step} (epoch {self.epoch}, "
                 f"{self.elapsed:.0f} s trained)")
        if grown:
            self.log("  new training budget: " + ", ".join(
                f"{k} {old_budget.get(k)} -> {v}" for k, v in self._budget().items() if old_budget.get(k) != v))
            self.schedule.extend(self.budget_fraction(self.step))
        if self.finished:
            if grown and not self._out_of_budget() and self.epoch < self.config.train.epochs:
                self.finished, self.bad = False, 0
                self.log(f"  extending the finished run from step {self.step}")
            else:
                b = self._budget()
                self.log(f"  the run finished at step {self.step}: nothing to train. To train longer, resume with "
                         f"a larger train.epochs (now {b['epochs']}), train.max_steps ({b['max_steps']}) or "
                         f"train.max_time ({b['max_time']})")

    def save_checkpoint(self) -> None:
        if self.dist.is_main:
            save_checkpoint(self.run_dir / "checkpoint.pt", self.state_dict())

    # ------------------------------------------------------------------ loop
    def _train_step(self, graph, targets) -> float:
        graph = graph.to(self.device, self.dtype)
        targets = {k: v.to(self.device) for k, v in targets.items()}
        self.model.train()
        create = self.need_forces or self.need_stress
        out = self.ddp_model(graph, compute_forces=self.need_forces, compute_stress=self.need_stress,
                             create_graph=create)
        sums, counts = loss_terms(out, targets, graph, self.weights, self.terms)
        if self.dist.enabled:
            stacked = all_reduce_sum(torch.stack([counts[t] for t in self.terms]), self.dist)
            counts = {t: stacked[k] for k, t in enumerate(self.terms)}
        loss, _ = combine(sums, counts, self.weights, self.dist.world_size)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.train.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.clip_grad_norm, foreach=True)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ValueError(f"the training loss became {value} at step {self.step}; lower train.lr or check "
                             f"the data")
        return value

    def _budget(self) -> dict:
        tc = self.config.train
        return {"epochs": tc.epochs, "max_steps": tc.max_steps, "max_time": tc.max_time}

    def budget_fraction(self, steps: int | None = None) -> float:
        """How much of the training budget is done, in [0, 1]: the largest of the fractions of
        epochs, max_steps and max_time, counting ``steps`` steps (default: those before the current
        one)."""
        tc = self.config.train
        steps = self.step - 1 if steps is None else steps
        done = steps / max(tc.epochs * self.steps_per_epoch, 1)
        if tc.max_steps:
            done = max(done, steps / tc.max_steps)
        if tc.max_time:
            done = max(done, self.now_elapsed() / tc.max_time)
        return min(done, 1.0)

    def _tell_progress(self) -> None:
        """Backbones with a curriculum (``training_progress(fraction)``) hear where training is."""
        hook = getattr(self.model.backbone, "training_progress", None)
        if hook is not None:
            hook(self.budget_fraction())

    def _loader(self):
        return make_loader(self.splits.train, self.model.graph_builder(), self.local_batch, sampler=self.sampler,
                           num_workers=self.config.data.num_workers, seed=self.config.train.seed,
                           dtype=self.dtype)

    def _valid_share(self):
        valid = self.splits.valid
        if valid is None or not self.dist.enabled:
            return valid
        return valid.subset(np.arange(self.dist.rank, len(valid), self.dist.world_size))

    def validate(self) -> dict[str, float]:
        """Validation metrics of the evaluated model; sets ``output_std``. Without validation
        frames, no metrics, and ``output_std`` of the first training frames (a dead network must
        be caught there too, where the training loss alone would keep it as the best model)."""
        share = self._valid_share()
        if share is None:
            probe = self.splits.train.subset(np.arange(min(DEAD_PROBE_FRAMES, len(self.splits.train))))
            self.output_std = evaluate(self.eval_model, probe, self.config.data.valid_batch_size, self.device,
                                       self.dtype, property_name=self.config.train.property).output_std
            return {}
        result = evaluate(self.eval_model, share, self.config.data.valid_batch_size, self.device, self.dtype,
                          self.weights, self.config.train.property, self.config.data.num_workers,
                          dist_info=self.dist)
        self.output_std = result.output_std
        return result.metrics

    def _is_dead(self) -> bool:
        """Whether the last validation found the network dead (output independent of the structure)."""
        return self.output_std is not None and self.output_std < DEAD_OUTPUT_STD

    def now_elapsed(self) -> float:
        """Seconds of training so far, over all sessions of this run."""
        if self._t0 is None:
            return self.elapsed
        return self.elapsed + (time.perf_counter() - self._t0)

    def _out_of_budget(self) -> bool:
        tc = self.config.train
        if tc.max_steps is not None and self.step >= tc.max_steps:
            return True
        return tc.max_time is not None and self.now_elapsed() >= tc.max_time

    def fit(self) -> dict:
        """Train until epochs, max_steps, max_time or early stopping; returns the summary dict.

        SIGINT (Ctrl-C) or SIGTERM: the step in progress finishes, a checkpoint is written and
        :class:`TrainingInterrupted` is raised (its text says how to resume); a second signal stops
        at once.
        """
        try:
            with self.signals.catching():
                if not self.finished:
                    self._loop()
            if self.signals.received:
                raise TrainingInterrupted(f"interrupted by {self.signals.received} at step {self.step}; checkpoint "
                                          f"saved. Resume with: equipot train --resume {self.run_dir}")
            summary = self._finish()
            barrier(self.dist)  # every rank done with its collectives before any tears the group down
            return summary
        finally:
            self._unlock()
            # The DDP wrapper holds the process group (its reducer's buckets and hooks): released before the
            # group is destroyed, not by the garbage collector at interpreter exit, where a gloo thread
            # still alive ends the process with std::terminate.
            self.ddp_model = self.model
            shutdown(self.dist)

    def _loop(self) -> None:
        tc = self.config.train
        if self.step == 0:
            self.log(self._banner())
        loader = self._loader()
        self._t0 = time.perf_counter()
        stop = self._out_of_budget()
        while self.epoch < tc.epochs and not stop:
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch * self.local_batch)
            bar = tqdm(total=self.steps_per_epoch, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}",
                       leave=False, dynamic_ncols=True, file=sys.stderr,
                       disable=True if not (tc.progress and self.dist.is_main) else None)
            for graph, targets in loader:
                self.step += 1
                self.batch_in_epoch += 1
                # the rate of the last step of the budget is min_lr
                self.schedule.set_step(self.step, self.budget_fraction(self.step))
                self._tell_progress()
                loss = self._train_step(graph, targets)
                self.epoch_loss[0] += loss
                self.epoch_loss[1] += 1
                bar.update(1)
                bar.set_postfix(loss=f"{self.epoch_loss[0] / self.epoch_loss[1]:.4g}", refresh=False)
                if self.signals.requested(self.dist):
                    bar.close()
                    self.elapsed = self.now_elapsed()
                    self._t0 = None
                    self.save_checkpoint()
                    return
                stop = self._out_of_budget()
                if tc.checkpoint_every and self.step % tc.checkpoint_every == 0 and not stop:
                    self.save_checkpoint()
                if stop:
                    break
                # a step that ends the epoch is validated below, with the epoch
                if (tc.valid_every_steps and self.step % tc.valid_every_steps == 0
                        and self.batch_in_epoch < self.steps_per_epoch and self._after_validation()):
                    stop = True
                    break
            bar.close()
            if self.batch_in_epoch >= self.steps_per_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
                end_of_epoch = True
            else:
                end_of_epoch = False
            due = (end_of_epoch and self.epoch % tc.valid_every == 0) or stop or self.epoch >= tc.epochs
            if due and self._validated_step != self.step:  # not twice at one step (valid_every_steps)
                stop = self._after_validation() or stop
            if end_of_epoch:
                self.epoch_loss = [0.0, 0]
        self.elapsed = self.now_elapsed()
        self._t0 = None
        self.finished = True
        self.save_checkpoint()

    def _after_validation(self) -> bool:
        """Validate, log, update best/plateau/early stopping. Returns True to stop."""
        tc = self.config.train
        self._validated_step = self.step
        steps = max(self.epoch_loss[1], 1)
        loss_sum = all_reduce_sum(torch.tensor([self.epoch_loss[0]], dtype=torch.float64), self.dist)
        train_loss = float(loss_sum[0]) / steps / self.dist.world_size
        if self.energy_fit is not None:
            self.energy_fit.refit(self.model)
            if self.ema is not None:
                self.energy_fit.refit(self.ema.shadow)
        valid = self.validate()
        score = self._score(valid, train_loss)
        dead = self._is_dead()
        self.schedule.observe(score)
        improved = score < self.best and not dead
        if dead:
            self.dead_step = self.step
            self.log(f"warning: the network has died at step {self.step}: its output is the same for every atom of "
                     f"an element, whatever the structure (spread {self.output_std:.1e}); it is not kept as the best "
                     f"model. A lower train.lr (now {tc.lr:g}) avoids this")
        if improved:
            self.best, self.best_step, self.bad = score, self.step, 0
            if self.dist.is_main:
                save_model(self.eval_model, self.run_dir / "model.pt")
        else:
            self.bad += 1
        elapsed = self.now_elapsed()
        epoch = self.epoch + round(self.batch_in_epoch / self.steps_per_epoch, 3)  # fractional when cut short
        row = {"epoch": epoch, "step": self.step, "time_s": round(elapsed, 3), "lr": self.schedule.current,
               "train_loss": train_loss, "valid_loss": valid.get("loss"), **valid}
        if self.dist.is_main:
            self.csv.append(row)
        self.log(epoch_line(epoch, self.step, self.schedule.current, train_loss, valid, elapsed,
                            tc.property, self.model.config.target_unit) + (" *" if improved else ""))
        if tc.patience is not None and self.bad >= tc.patience:
            self.log(f"early stopping: no improvement of valid {tc.monitor} for {self.bad} validations")
            return True
        return False

    def _score(self, valid: dict[str, float], train_loss: float) -> float:
        monitor = self.config.train.monitor
        if not valid:
            return train_loss
        if monitor in valid:
            return valid[monitor]
        if monitor == "loss":
            return valid.get("loss", train_loss)
        known = ", ".join(sorted(valid))
        raise ValueError(f"train.monitor: {monitor!r} is not a validation metric (known: {known})")

    def _banner(self) -> str:
        m = self.model.config
        n_params = sum(p.numel() for p in self.model.parameters())
        v = len(self.splits.valid) if self.splits.valid is not None else 0
        tc, unit = self.config.train, m.target_unit
        e0 = ", ".join(f"{z}:{e:.4f}" for z, e in zip(m.elements, m.atomic_energies or []))
        if m.is_potential:
            what = f"scale {m.scale:.5g} eV, atomic energies (eV) {{{e0}}}"
        else:
            what = (f"target {m.target} ({unit}), readout {m.target_readout}, shift {m.shift:.5g}, scale "
                    f"{m.scale:.5g}" + (f", references ({unit}) {{{e0}}}" if any(m.reference_list()) else "")
                    + f", loss unit {self.weights.property_scale:.5g} {unit}")
        return (f"equipot train: {m.backbone} ({n_params} parameters), {len(self.splits.train)} training / {v} "
                f"validation frames, batch {self.config.data.batch_size} x {self.dist.world_size} process(es), "
                f"{self.steps_per_epoch} steps/epoch, device {self.device}, {tc.dtype}, "
                f"{self.threads} thread(s), lr {tc.lr:g}, schedule {tc.scheduler}\n"
                f"  avg_num_neighbors {m.avg_num_neighbors:.3f}, min_pair_distance "
                f"{m.min_pair_distance if m.min_pair_distance is None else round(m.min_pair_distance, 4)} Å, "
                f"{what}\n  run directory {self.run_dir}")

    # ------------------------------------------------------------------ end
    def _finish(self) -> dict:
        rank_diff = rank_agreement(self.eval_model, self.dist)
        summary = {"steps": self.step, "epochs": self.epoch, "time_s": round(self.elapsed, 3),
                   "best_step": self.best_step, f"best_valid_{self.config.train.monitor}": self.best,
                   "processes": self.dist.world_size, "ddp_max_param_diff": rank_diff, "dead_step": self.dead_step,
                   "target": {"name": self.model.config.target, "unit": self.model.config.target_unit,
                              "readout": self.model.config.target_readout}}
        if not self.dist.is_main:
            return summary
        save_model(self.eval_model, self.run_dir / "model_last.pt")
        best_path = self.run_dir / "model.pt"
        if not best_path.exists():
            if self.dead_step is not None:
                raise DeadNetworkError(f"{self.run_dir}: the network died (its output stopped depending on the "
                                       f"structure; last seen at step {self.dead_step}) before any validation kept a "
                                       f"model: no model.pt written (model_last.pt holds the dead weights). Train "
                                       f"again with a lower train.lr (was {self.config.train.lr:g})")
            save_model(self.eval_model, best_path)

        best = load_model(best_path).to(device=self.device, dtype=self.dtype)
        for name, ds in (("valid", self.splits.valid), ("test", self.splits.test)):
            if ds is not None:
                summary[name] = write_predictions(best, ds, self.run_dir / f"predictions_{name}.npz", self.weights,
                                                  self.config, self.device, self.dtype)
                self.log(f"{name} ({len(ds)} frames), model.pt (step {self.best_step}):\n"
                         + format_table(summary[name], self.splits.train.units()))
        with atomic_write(self.run_dir / "summary.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
        return summary


def train(config: Config, resume: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Build a :class:`Trainer` and run it; returns the summary dict."""
    return Trainer(config, resume=resume, log=log).fit()
