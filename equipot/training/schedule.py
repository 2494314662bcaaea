"""Learning-rate schedule: linear warm-up, then ReduceLROnPlateau, a cosine or linear decay to the
end of the training budget, or constant."""
from __future__ import annotations

import math
from typing import Any

import torch

KINDS = ("plateau", "cosine", "linear", "constant")


class LRSchedule:
    """Sets the learning rate of every parameter group before each step.

    ``lr(step) = peak * warmup(step) * g`` with ``warmup`` linear from 1/warmup_steps to 1, and
    ``g`` = the plateau factor (multiplied by ``factor`` after ``patience`` validations without
    improvement, never below ``min_lr``), a cosine or linear decay from 1 to ``min_lr / peak``
    over the training budget (``progress`` in [0, 1]: the share of the budget done, which the
    trainer gives with each step, so that a time budget decays too), or 1.

    When a run is extended (:meth:`extend`), a decay starts again from the rate reached, down to
    ``min_lr`` at the end of the new budget. All state is plain numbers (:meth:`state_dict`), so
    resuming is exact.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, peak: float, warmup_steps: int = 0,
                 kind: str = "plateau", factor: float = 0.8, patience: int = 5, min_lr: float = 1e-6):
        if kind not in KINDS:
            raise ValueError(f"unknown scheduler {kind!r} (choose one of {', '.join(KINDS)})")
        self.optimizer = optimizer
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.kind = kind
        self.factor = float(factor)
        self.patience = int(patience)
        self.min_lr = float(min_lr)
        self.plateau_scale = 1.0
        self.best = math.inf
        self.bad = 0
        self.current = self.peak
        self.decay_start = 0.0  # progress at which the current decay began
        self.decay_from = 1.0  # g there

    def _decay(self, progress: float) -> float:
        t = min(1.0, max(0.0, (progress - self.decay_start) / max(1e-12, 1.0 - self.decay_start)))
        lo = min(1.0, self.min_lr / self.peak)
        shape = 0.5 * (1.0 + math.cos(math.pi * t)) if self.kind == "cosine" else 1.0 - t
        return lo + (self.decay_from - lo) * shape

    def lr_at(self, step: int, progress: float = 0.0) -> float:
        """Learning rate for optimiser step ``step`` (1-based) at ``progress`` through the budget."""
        warm = min(1.0, step / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.kind in ("cosine", "linear"):
            g = self._decay(progress)
        elif self.kind == "plateau":
            g = self.plateau_scale
        else:
            g = 1.0
        return self.peak * warm * g

    def set_step(self, step: int, progress: float = 0.0) -> float:
        self.current = self.lr_at(step, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = self.current
        return self.current

    def extend(self, progress: float) -> None:
        """The budget grew and ``progress`` is where the run now stands in it: decay again from
        the present rate to ``min_lr`` at the new end."""
        if self.kind in ("cosine", "linear"):
            self.decay_from = self.current / self.peak
            self.decay_start = min(progress, 1.0)

    def observe(self, score: float) -> None:
        """Report a validation score (lower is better) to the plateau logic."""
        if self.kind != "plateau" or not math.isfinite(score):
            return
        if score < self.best:
            self.best = score
            self.bad = 0
            return
        self.bad += 1
        if self.bad > self.patience:
            self.plateau_scale = max(self.plateau_scale * self.factor, self.min_lr / self.peak)
            self.bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {"plateau_scale": self.plateau_scale, "best": self.best, "bad": self.bad, "current": self.current,
                "decay_start": self.decay_start, "decay_from": self.decay_from}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.best = float(state["best"])
        self.bad = int(state["bad"])
        self.current = float(state["current"])
        self.decay_start = float(state.get("decay_start", 0.0))
        self.decay_from = float(state.get("decay_from", 1.0))
