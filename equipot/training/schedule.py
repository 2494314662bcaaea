"""Learning-rate schedule: linear warm-up, then ReduceLROnPlateau, cosine decay or constant."""
from __future__ import annotations

import math
from typing import Any

import torch


class LRSchedule:
    """Sets the learning rate of every parameter group before each step.

    ``lr(step) = peak * warmup(step) * g(step)`` with ``warmup`` linear from 1/warmup_steps to 1,
    and ``g`` = the plateau factor (multiplied by ``factor`` after ``patience`` validations without
    improvement, never below ``min_lr``), a cosine from 1 to ``min_lr / peak`` over
    ``total_steps``, or 1. All state is plain numbers (:meth:`state_dict`), so resuming is exact.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, peak: float, warmup_steps: int = 0,
                 kind: str = "plateau", factor: float = 0.8, patience: int = 5, min_lr: float = 1e-6,
                 total_steps: int | None = None, mode: str = "min"):
        if kind not in ("plateau", "cosine", "constant"):
            raise ValueError(f"unknown scheduler {kind!r}")
        self.optimizer = optimizer
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.kind = kind
        self.factor = float(factor)
        self.patience = int(patience)
        self.min_lr = float(min_lr)
        self.total_steps = total_steps
        self.plateau_scale = 1.0
        self.best = math.inf
        self.bad = 0
        self.current = self.peak

    def lr_at(self, step: int) -> float:
        """Learning rate for optimiser step ``step`` (1-based)."""
        warm = min(1.0, step / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.kind == "cosine" and self.total_steps:
            t = min(1.0, max(0.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)))
            lo = min(1.0, self.min_lr / self.peak)
            g = lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t))
        elif self.kind == "plateau":
            g = self.plateau_scale
        else:
            g = 1.0
        return self.peak * warm * g

    def set_step(self, step: int) -> float:
        self.current = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.current
        return self.current

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
        return {"plateau_scale": self.plateau_scale, "best": self.best, "bad": self.bad, "current": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.best = float(state["best"])
        self.bad = int(state["bad"])
        self.current = float(state["current"])
