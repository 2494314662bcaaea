"""scatter_sum / segment_sum front end with per-device backends.

``scatter_sum`` takes any index (unsorted); ``segment_sum`` takes CSR offsets of
consecutive rows (e.g. receiver-sorted edges and :meth:`AtomicGraph.receiver_ptr`).
The backend is chosen per device and can be forced (see :mod:`equipot.ops.backends`):

- ``torch``: ``index_add_`` (segment_sum expands the offsets to an index first);
- ``torch_scatter``: ``torch_scatter.scatter_sum`` / ``segment_csr``;
- ``triton``: an atomic scatter kernel, and a CSR segment kernel without atomics
  (:mod:`equipot.ops.triton_kernels`). Their backward passes are a gather
  (``index_select``) and a CSR expand kernel; both are differentiable again, so
  double backward (force training) works on every backend.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function

from .backends import resolve_backend


def _kernels():
    from . import triton_kernels

    return triton_kernels


def check(condition: Tensor, message: str) -> None:
    """Raise ValueError(message) unless ``condition`` holds; on CUDA an asynchronous device assert (no sync)."""
    if condition.device.type == "cuda":
        torch._assert_async(condition, message)
    elif not bool(condition):
        raise ValueError(message)


class _TritonScatterSum(Function):
    @staticmethod
    def forward(ctx, src: Tensor, index: Tensor, dim_size: int) -> Tensor:
        ctx.save_for_backward(index)
        return _kernels().scatter_add(src, index, dim_size)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        # The adjoint of a scatter is a gather; index_select is already optimal and differentiable.
        return grad.index_select(0, index), None, None


class _TritonSegmentSum(Function):
    @staticmethod
    def forward(ctx, src: Tensor, ptr: Tensor) -> Tensor:
        ctx.save_for_backward(ptr)
        ctx.num_rows = src.shape[0]
        return _kernels().segment_sum(src, ptr)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (ptr,) = ctx.saved_tensors
        return _TritonSegmentExpand.apply(grad, ptr, ctx.num_rows), None


class _TritonSegmentExpand(Function):
    @staticmethod
    def forward(ctx, grad: Tensor, ptr: Tensor, num_rows: int) -> Tensor:
        ctx.save_for_backward(ptr)
        return _kernels().segment_expand(grad, ptr, num_rows)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (ptr,) = ctx.saved_tensors
        return _TritonSegmentSum.apply(grad, ptr), None, None


def _check_index(src: Tensor, index: Tensor, dim_size: int) -> None:
    if index.dim() != 1 or index.shape[0] != src.shape[0]:
        raise ValueError(f"scatter_sum: index must have shape [{src.shape[0]}] (rows of src), "
                         f"got {tuple(index.shape)}")
    if index.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"scatter_sum: index must be int64 or int32, got {index.dtype}")
    if index.device != src.device:
        raise ValueError(f"scatter_sum: index is on {index.device}, src on {src.device}")
    if dim_size < 0:
        raise ValueError(f"scatter_sum: dim_size must be >= 0, got {dim_size}")


def scatter_sum(src: Tensor, index: Tensor, dim_size: int, backend: str | None = None) -> Tensor:
    """Sum rows of ``src`` [E, ...] into ``dim_size`` rows by ``index`` [E] -> [dim_size, ...].

    ``backend``: "torch", "torch_scatter", "triton", "auto" or None (see :mod:`equipot.ops.backends`).
    """
    if src.dim() == 0:
        raise ValueError("scatter_sum: src must have at least one dimension (rows)")
    _check_index(src, index, dim_size)
    name = resolve_backend(backend, src)
    if name == "torch":
        out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
        return out.index_add_(0, index, src)
    if name == "torch_scatter":
        import torch_scatter

        return torch_scatter.scatter_sum(src, index, dim=0, dim_size=dim_size)
    if index.numel():
        check((index.min() >= 0) & (index.max() < dim_size),
              f"scatter_sum: index values must lie in [0, {dim_size})")
    return _TritonScatterSum.apply(src, index.contiguous(), dim_size)


def segment_sum(src: Tensor, ptr: Tensor, backend: str | None = None) -> Tensor:
    """Sum consecutive rows of ``src`` [E, ...] into segments given by CSR offsets ``ptr`` [S + 1] -> [S, ...].

    ``ptr`` must be non-decreasing with ``ptr[0] = 0`` and ``ptr[-1] = E``; empty segments give zeros.
    """
    if src.dim() == 0:
        raise ValueError("segment_sum: src must have at least one dimension (rows)")
    if ptr.dim() != 1 or ptr.numel() < 1:
        raise ValueError(f"segment_sum: ptr must be a 1-D tensor of S + 1 offsets, got shape {tuple(ptr.shape)}")
    if ptr.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"segment_sum: ptr must be int64 or int32, got {ptr.dtype}")
    if ptr.device != src.device:
        raise ValueError(f"segment_sum: ptr is on {ptr.device}, src on {src.device}")
    name = resolve_backend(backend, src)
    num_rows = src.shape[0]
    check((ptr[0] == 0) & (ptr[-1] == num_rows) & (ptr[1:] >= ptr[:-1]).all(),
          f"segment_sum: ptr must be non-decreasing from 0 to {num_rows} (rows of src)")
    if name == "torch_scatter":
        import torch_scatter

        return torch_scatter.segment_csr(src, ptr.long(), reduce="sum")
    if name == "triton":
        return _TritonSegmentSum.apply(src, ptr.contiguous())
    counts = ptr[1:] - ptr[:-1]
    index = torch.repeat_interleave(torch.arange(counts.numel(), device=src.device), counts,
                                    output_size=num_rows)
    out = src.new_zeros((counts.numel(),) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)
