"""Which scatter/message backend runs on which device.

Backends:

``torch``
    Portable PyTorch ops (``index_add_``, gathers, matmul); always available.
``torch_scatter``
    The ``torch-scatter`` extension (``pip install equipot[scatter]``) when it imports.
``triton``
    The custom kernels of :mod:`equipot.ops.triton_kernels` (``pip install equipot[gpu]``).
    They run on CUDA (and ROCm) tensors, and on CPU tensors only under the Triton
    interpreter (``TRITON_INTERPRET=1``, set before ``triton`` is first imported and kept set),
    which the tests use; the interpreter is far too slow for real work.

Default choice per device: CUDA -> ``triton`` if importable, else ``torch_scatter``,
else ``torch``; CPU -> ``torch``. A backend is forced, in order of precedence, by the
``backend=`` argument of an op, by :func:`use_backend` (a context manager, e.g. for the
speed benchmark), or by the ``EQUIPOT_SCATTER_BACKEND`` environment variable
(``torch``, ``torch_scatter``, ``triton`` or ``auto``). Forcing a backend that cannot
run on the given device raises ``ValueError`` rather than silently measuring another one.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from functools import cache

import torch

BACKENDS: tuple[str, ...] = ("torch", "torch_scatter", "triton")
ENV_VAR = "EQUIPOT_SCATTER_BACKEND"

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("equipot_scatter_backend", default=None)


@cache
def has_triton() -> bool:
    """True when the ``triton`` package is installed (it is not imported here)."""
    return importlib.util.find_spec("triton") is not None


@cache
def has_torch_scatter() -> bool:
    """True when ``torch_scatter`` imports (a build for another torch fails with OSError/RuntimeError)."""
    if importlib.util.find_spec("torch_scatter") is None:
        return False
    try:
        importlib.import_module("torch_scatter")
    except (ImportError, OSError, RuntimeError):
        return False
    return True


def triton_interpreted() -> bool:
    """True when the Triton kernels run (or would run) in the interpreter, on the CPU."""
    if os.environ.get("TRITON_INTERPRET", "0") != "1":  # read by triton while kernels run, too
        return False
    module = sys.modules.get("equipot.ops.triton_kernels")
    # The interpreter is chosen when the kernels are decorated, i.e. at import.
    return module is None or bool(module.INTERPRETED)


def _device(device: torch.device | str | torch.Tensor | None) -> torch.device:
    if isinstance(device, torch.Tensor):
        return device.device
    return torch.device("cpu" if device is None else device)


def backend_available(name: str, device: torch.device | str | torch.Tensor | None = None) -> bool:
    """Whether backend ``name`` can run on tensors of ``device``."""
    dev = _device(device)
    if name == "torch":
        return True
    if name == "torch_scatter":
        return dev.type in ("cpu", "cuda") and has_torch_scatter()
    if name == "triton":
        if not has_triton():
            return False
        if dev.type == "cuda":
            return True
        return dev.type == "cpu" and triton_interpreted()
    raise ValueError(f"unknown scatter backend {name!r}; choose one of {BACKENDS} or 'auto'")


def available_backends(device: torch.device | str | torch.Tensor | None = None) -> list[str]:
    """The backends that can run on ``device``, portable first (for benchmarks to loop over)."""
    return [name for name in BACKENDS if backend_available(name, device)]


def default_backend(device: torch.device | str | torch.Tensor | None = None) -> str:
    """The backend used on ``device`` when none is forced."""
    dev = _device(device)
    if dev.type == "cuda":
        for name in ("triton", "torch_scatter"):
            if backend_available(name, dev):
                return name
    return "torch"


def resolve_backend(requested: str | None, device: torch.device | str | torch.Tensor | None) -> str:
    """The backend to run: ``requested``, else :func:`use_backend`, else the env var, else the default."""
    name = requested or _override.get() or os.environ.get(ENV_VAR) or "auto"
    name = name.strip().lower().replace("-", "_")
    if name == "auto":
        return default_backend(device)
    if name not in BACKENDS:
        raise ValueError(f"unknown scatter backend {name!r} (argument or {ENV_VAR}); "
                         f"choose one of {BACKENDS} or 'auto'")
    if not backend_available(name, device):
        dev = _device(device)
        why = {
            "torch_scatter": "torch_scatter is not installed or does not import (pip install equipot[scatter])",
            "triton": ("triton is not installed (pip install equipot[gpu])" if not has_triton() else
                       "the triton kernels need CUDA tensors, or TRITON_INTERPRET=1 set before triton "
                       "is first imported (and kept set)"),
        }[name]
        raise ValueError(f"scatter backend {name!r} cannot run on device {dev}: {why}")
    return name


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Force backend ``name`` for ops called inside the block ("auto": the per-device default,
    ignoring the env var; ``None``: no override).

    Example (what ``benchmarks/speed.py`` does)::

        for name in available_backends(device):
            with use_backend(name):
                model(graph)
    """
    if name is not None and name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown scatter backend {name!r}; choose one of {BACKENDS} or 'auto'")
    token = _override.set(name)
    try:
        yield
    finally:
        _override.reset(token)
