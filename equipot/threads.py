"""How many CPU threads torch uses (``train.threads``, ``--threads`` of eval, md, optimize)."""
from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(threads: int | None = None, processes: int = 1) -> int:
    """Set torch's intra-op CPU threads to ``threads``, or by default to ``OMP_NUM_THREADS`` when the
    environment sets it (a positive integer), else to the available cores shared among ``processes``
    processes on this machine (e.g. the DDP ranks). Returns the number set."""
    import torch

    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        threads = int(env) if env.isdigit() and int(env) > 0 else max(1, available_cores() // max(1, processes))
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(int(threads))
    return int(threads)
