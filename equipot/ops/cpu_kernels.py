"""The fused CPU kernel of the factorised R3×S2 message (``cpu_message.c``), compiled on first use.

The C source beside this module is compiled once per machine with the system's C compiler
(``$CC``, else ``cc``; ``-O3 -march=native``) into ``$XDG_CACHE_HOME/equipot/kernels/`` and loaded
through :mod:`ctypes`, so no build step, torch headers or ninja are needed. Where no compiler
works the torch implementation of :mod:`equipot.ops.message` runs instead (same numbers, slower);
``EQUIPOT_CPU_KERNEL=0`` forces that, ``=1`` makes a missing compiler an error.
:func:`status` says which one runs and why.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("cpu_message.c")
ENV_VAR = "EQUIPOT_CPU_KERNEL"
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-shared", "-fPIC")
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_reason = "not tried yet"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "equipot" / "kernels"


def _cpu_key() -> str:
    """What -march=native depends on: the processor's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(sorted({ln for ln in lines if ln.startswith(("flags", "model name", "Features"))}))
    except OSError:
        return platform.processor() + platform.machine()


def _compile(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".so")
    os.close(fd)
    try:
        subprocess.run([compiler, *FLAGS, "-o", tmp, str(SOURCE)], check=True, capture_output=True, timeout=120)
        os.replace(tmp, target)  # atomic: a concurrent process loads either no file or a whole one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel library, or None where it is switched off or cannot be built."""
    global _reason
    setting = os.environ.get(ENV_VAR, "auto")
    if setting == "0":
        _reason = f"switched off ({ENV_VAR}=0)"
        return None
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    try:
        if compiler is None:
            raise RuntimeError("no C compiler found ($CC, cc, gcc)")
        key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + compiler.encode()
                             + _cpu_key().encode()).hexdigest()[:16]
        target = _cache_dir() / f"cpu_message-{key}.so"
        if not target.exists():
            _compile(compiler, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        _reason = f"torch fallback: {exc} {detail.decode(errors='replace')[:300]}".strip()
        if setting == "1":
            raise RuntimeError(f"{ENV_VAR}=1 but the CPU kernel could not be built: {_reason}") from exc
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for suffix in _SUFFIX.values():
        getattr(lib, f"spherical_forward_{suffix}").argtypes = [i64] * 5 + [ptr] * 8
        getattr(lib, f"spherical_backward_{suffix}").argtypes = [i64] * 5 + [ptr] * 12
    _reason = f"compiled {target.name}"
    return lib


def status() -> str:
    """Which implementation of the R3×S2 CPU message runs, and why."""
    library()
    return _reason


def usable(floats: tuple[Tensor, ...], indices: tuple[Tensor, ...]) -> bool:
    """Whether the fused kernel can take these tensors: all on the CPU and contiguous, the floats of
    one dtype (float32 or float64), the indices int64."""
    dtype = floats[0].dtype
    return (dtype in _SUFFIX and all(t.dtype == dtype for t in floats) and all(t.dtype == torch.int64 for t in indices)
            and all(t.device.type == "cpu" and t.is_contiguous() for t in (*floats, *indices))
            and library() is not None)


def _p(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _sizes(vec: Tensor, grid: Tensor, radial: Tensor, weight: Tensor) -> tuple[int, ...]:
    return vec.shape[0], grid.shape[0], radial.shape[1], radial.shape[2], weight.shape[1]


def _run(name: str, dtype: torch.dtype, *args) -> None:
    if getattr(library(), f"{name}_{_SUFFIX[dtype]}")(*args) != 0:
        raise MemoryError(f"equipot CPU kernel {name}: out of memory for its scratch buffers")


def spherical_forward(vec: Tensor, grid: Tensor, radial: Tensor, weight: Tensor, h: Tensor, sender: Tensor,
                      receiver: Tensor, num_nodes: int) -> Tensor:
    """out [num_nodes, O, C] of the factorised message (see :mod:`equipot.ops.message`); the indices
    must already be checked to lie in range (the kernel does not check them)."""
    out = h.new_zeros((num_nodes, h.shape[1], h.shape[2]))
    _run("spherical_forward", h.dtype, *_sizes(vec, grid, radial, weight), _p(vec), _p(grid), _p(radial),
         _p(weight), _p(h), _p(sender), _p(receiver), _p(out))
    return out


def spherical_backward(vec: Tensor, grid: Tensor, radial: Tensor, weight: Tensor, h: Tensor, grad: Tensor,
                       sender: Tensor, receiver: Tensor, needs: tuple[bool, bool, bool, bool]
                       ) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """(grad vec, grad radial, grad weight, grad h) for ``needs`` (the same four); ``grad`` [N, O, C]
    contiguous."""
    grad_v = torch.empty_like(vec) if needs[0] else None
    grad_r = torch.empty_like(radial) if needs[1] else None
    grad_w = torch.zeros_like(weight) if needs[2] else None
    grad_h = torch.zeros_like(h) if needs[3] else None
    _run("spherical_backward", h.dtype, *_sizes(vec, grid, radial, weight), _p(vec), _p(grid), _p(radial),
         _p(weight), _p(h), _p(grad), _p(sender), _p(receiver), _p(grad_v), _p(grad_r), _p(grad_w), _p(grad_h))
    return grad_v, grad_r, grad_w, grad_h
