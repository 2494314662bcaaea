"""Exponential moving average of a model's weights."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a copy of ``model`` whose floating parameters follow
    ``shadow = d * shadow + (1 - d) * param`` after every optimiser step.

    The effective decay ramps up as ``min(decay, (1 + n) / (10 + n))`` (n = updates so far), so
    the early, fast-changing weights are not averaged with the random initialisation for long.
    Buffers are copied. The shadow model is what the trainer validates and saves.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.shadow = copy.deepcopy(model)
        self.shadow.requires_grad_(False)
        self.shadow.eval()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        # matched by name: a deep copy need not list parameters and buffers in the same order
        params = dict(model.named_parameters())
        for name, s in self.shadow.named_parameters():
            p = params[name].detach()
            if s.is_floating_point():
                s.mul_(d).add_(p, alpha=1.0 - d)
            else:
                s.copy_(p)
        buffers = dict(model.named_buffers())
        for name, s in self.shadow.named_buffers():
            b = buffers.get(name)
            if b is None:
                continue
            if s.shape == b.shape and s.dtype == b.dtype:
                s.copy_(b)
            else:  # a cache the model resized on the fly
                s.data = b.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "decay": self.decay, "shadow": self.shadow.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.shadow.load_state_dict(state["shadow"])
