"""Ctrl-C and SIGTERM during training: finish the step, save, stop (see ``Trainer.fit``)."""
from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..signals import stop_signals_handled
from .distributed import DistInfo, all_reduce_sum


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGINT/SIGTERM after writing a checkpoint; the text says how to resume."""


class StopSignals:
    """SIGINT and SIGTERM turned into a request to stop after the current step.

    ``received`` names the first signal. A second signal raises KeyboardInterrupt at once (the user
    means now). Signals can be caught only in the main thread; elsewhere they keep their handlers.
    """

    def __init__(self) -> None:
        self.received: str | None = None

    @contextmanager
    def catching(self) -> Iterator[None]:
        def handler(signum, frame):
            if self.received:
                raise KeyboardInterrupt(f"a second {signal.Signals(signum).name} stopped training at once (the "
                                        f"step in progress was not saved; the last checkpoint is intact)")
            self.received = signal.Signals(signum).name

        with stop_signals_handled(handler):
            yield

    def requested(self, dist: DistInfo) -> bool:
        """Whether a signal asked to stop, on this or any DDP rank (so that all stop at one step)."""
        flag = torch.tensor([1.0 if self.received else 0.0], dtype=torch.float64)
        if dist.enabled:
            flag = all_reduce_sum(flag, dist)
            if float(flag[0]) > 0 and not self.received:
                self.received = "a signal to another process"
        return float(flag[0]) > 0
