"""Triton kernels for scatter/segment sums and the fused R3×S2 spatial message.

Imported only when ``triton`` is installed (see :mod:`equipot.ops.backends`). The kernels
run on CUDA tensors, or on CPU tensors in the Triton interpreter when ``TRITON_INTERPRET=1``
is set before this module is first imported (the interpreter is chosen when the kernels
are decorated).

Kernels (all accumulate in float32 for 16/32-bit inputs and in float64 for float64):

``_segment_sum_kernel``
    one program per (segment, feature block) loops over its CSR range; no atomics.
``_segment_expand_kernel``
    its backward: each segment writes its gradient row to its edges (a gather without an index).
``_scatter_add_kernel``
    atomic scatter for unsorted indices; its backward is a gather (``index_select``).
``_csr_message_kernel``
    ``out[i] = sum_{pos in ptr[i]:ptr[i+1]} (phi[e] @ W) * x[nbr[e]]`` with ``e = perm[pos]``
    (or ``pos``): the fused spatial message. The [E, O, C] kernel exists only tile by tile in
    registers. With receiver CSR and ``x = h`` it is the forward; with sender CSR and
    ``x = grad_out`` it is the gradient with respect to ``h`` (a transposed CSR, no atomics).
``_edge_backward_kernel``
    gradients of phi and W from ``t = grad_out[recv] * h[send]`` formed tile by tile:
    ``grad_phi = t @ W^T`` per edge and ``grad_W = sum phi^T t``, reduced in registers by a
    persistent grid and written as per-program partials (summed by torch; deterministic).
    grad_phi is stored directly when the channels fit one block (C <= 64), else its
    per-channel-block parts are added atomically.

Matrix products use ``tl.dot`` with IEEE fp32, operands padded to >= 16, or TF32 tensor cores
where torch's float32 matmul precision allows it (see ``_tf32``); in float64 with triton < 3.5
(no fp64 ``tl.dot``) a broadcast-sum instead. Why TF32 matters: the edge kernel costs
2·B·C flops per (edge, orientation) against ~4·B bytes of phi plus the node rows shared by
~degree edges, about 25 flop/byte at B = 16, C = 64, degree 32, and 45 at C = 128. An H100's
IEEE fp32 FMA rate (~60 Tflop/s) over its ~3 TB/s is ~20 flop/byte, so in IEEE fp32 the fused
message's compute floor is at or above its copy-bandwidth floor, and "within 2x of the copy
floor" needs over half the peak FMA rate; TF32 tensor cores have ~8x the flop rate.
"""
# No ``from __future__ import annotations``: the triton 3.0-3.2 interpreter recognises
# ``tl.constexpr`` parameters only from evaluated annotations.
import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = [
    "INTERPRETED",
    "csr_message",
    "edge_backward",
    "scatter_add",
    "segment_expand",
    "segment_sum",
]


@triton.jit
def _mm(a, b, ACC: tl.constexpr, USE_DOT: tl.constexpr, TF32: tl.constexpr):
    """a [M, K] @ b [K, N] in ACC precision (TF32 inputs when asked); a broadcast-sum where tl.dot
    lacks the dtype."""
    if USE_DOT:
        if TF32:
            c = tl.dot(a, b, input_precision="tf32", out_dtype=ACC)
        else:
            c = tl.dot(a, b, input_precision="ieee", out_dtype=ACC)
    else:
        c = tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    return c


@triton.jit
def _segment_sum_kernel(src_ptr, ptr_ptr, out_ptr, F, s_se, s_sf, s_oe, s_of,
                        BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr, ACC: tl.constexpr):
    seg = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < F
    start = tl.load(ptr_ptr + seg).to(tl.int64)
    end = tl.load(ptr_ptr + seg + 1).to(tl.int64)
    acc = tl.zeros([BLOCK_E, BLOCK_F], dtype=ACC)
    for e0 in range(start, end, BLOCK_E):
        e = e0 + tl.arange(0, BLOCK_E)
        m = (e < end)[:, None] & fmask[None, :]
        x = tl.load(src_ptr + e[:, None] * s_se + f[None, :] * s_sf, mask=m, other=0.0)
        acc += x.to(ACC)
    total = tl.sum(acc, axis=0)
    tl.store(out_ptr + seg * s_oe + f * s_of, total.to(out_ptr.dtype.element_ty), mask=fmask)


@triton.jit
def _segment_expand_kernel(g_ptr, ptr_ptr, out_ptr, F, s_ge, s_gf, s_oe, s_of,
                           BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr):
    seg = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < F
    start = tl.load(ptr_ptr + seg).to(tl.int64)
    end = tl.load(ptr_ptr + seg + 1).to(tl.int64)
    row = tl.load(g_ptr + seg * s_ge + f * s_gf, mask=fmask, other=0.0)
    tile = tl.zeros([BLOCK_E, BLOCK_F], dtype=row.dtype) + row[None, :]
    for e0 in range(start, end, BLOCK_E):
        e = e0 + tl.arange(0, BLOCK_E)
        m = (e < end)[:, None] & fmask[None, :]
        tl.store(out_ptr + e[:, None] * s_oe + f[None, :] * s_of, tile.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _scatter_add_kernel(src_ptr, index_ptr, out_ptr, n_e, F, s_se, s_sf, s_oe, s_of,
                        BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr):
    e = tl.program_id(0).to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    emask = e < n_e
    m = emask[:, None] & (f < F)[None, :]
    idx = tl.load(index_ptr + e, mask=emask, other=0).to(tl.int64)
    x = tl.load(src_ptr + e[:, None] * s_se + f[None, :] * s_sf, mask=m, other=0.0)
    tl.atomic_add(out_ptr + idx[:, None] * s_oe + f[None, :] * s_of, x.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _tile_indices(n_o, n_b, n_c, BLOCK_O: tl.constexpr, ROWS: tl.constexpr, BLOCK_B: tl.constexpr,
                  BLOCK_C: tl.constexpr):
    """Indices and masks of a message tile: channels of this program's block (axis 1), kernel
    basis, and the tile's rows, which are (edge, orientation) pairs: row = e_local * BLOCK_O + o
    (ROWS = BLOCK_E * BLOCK_O)."""
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.arange(0, BLOCK_B)
    r = tl.arange(0, ROWS)
    ro = r % BLOCK_O
    return c, c < n_c, b, b < n_b, r // BLOCK_O, ro, ro < n_o


@triton.jit
def _csr_message_kernel(phi_ptr, w_ptr, x_ptr, ptr_ptr, perm_ptr, nbr_ptr, out_ptr, n_o, n_b, n_c,
                        s_pe, s_po, s_pb, s_wb, s_wc, s_xn, s_xo, s_xc, s_on, s_oo, s_oc,
                        HAS_PERM: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_O: tl.constexpr,
                        ROWS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
                        USE_DOT: tl.constexpr, TF32: tl.constexpr):
    node = tl.program_id(0).to(tl.int64)
    c, cmask, b, bmask, re, ro, omask = _tile_indices(n_o, n_b, n_c, BLOCK_O, ROWS, BLOCK_B, BLOCK_C)
    w = tl.load(w_ptr + b[:, None] * s_wb + c[None, :] * s_wc,
                mask=bmask[:, None] & cmask[None, :], other=0.0).to(ACC)
    start = tl.load(ptr_ptr + node).to(tl.int64)
    end = tl.load(ptr_ptr + node + 1).to(tl.int64)
    acc = tl.zeros([ROWS, BLOCK_C], dtype=ACC)
    for e0 in range(start, end, BLOCK_E):
        pos = e0 + re
        rmask = (pos < end) & omask
        if HAS_PERM:
            e = tl.load(perm_ptr + pos, mask=rmask, other=0).to(tl.int64)
        else:
            e = pos
        j = tl.load(nbr_ptr + e, mask=rmask, other=0).to(tl.int64)
        p = tl.load(phi_ptr + e[:, None] * s_pe + ro[:, None] * s_po + b[None, :] * s_pb,
                    mask=rmask[:, None] & bmask[None, :], other=0.0).to(ACC)
        kernel = _mm(p, w, ACC, USE_DOT, TF32)
        xv = tl.load(x_ptr + j[:, None] * s_xn + ro[:, None] * s_xo + c[None, :] * s_xc,
                     mask=rmask[:, None] & cmask[None, :], other=0.0).to(ACC)
        acc += kernel * xv
    total = tl.sum(tl.reshape(acc, (BLOCK_E, BLOCK_O, BLOCK_C)), axis=0)
    o = tl.arange(0, BLOCK_O)
    tl.store(out_ptr + node * s_on + o[:, None] * s_oo + c[None, :] * s_oc,
             total.to(out_ptr.dtype.element_ty), mask=(o < n_o)[:, None] & cmask[None, :])


@triton.jit
def _edge_backward_kernel(phi_ptr, w_ptr, h_ptr, g_ptr, send_ptr, recv_ptr, gphi_ptr, gw_ptr,
                          n_e, n_o, n_b, n_c, num_blocks,
                          s_pe, s_po, s_pb, s_wb, s_wc, s_hn, s_ho, s_hc, s_gn, s_go, s_gc,
                          s_qe, s_qo, s_qb, s_wp, s_wpb, s_wpc,
                          GPHI: tl.constexpr, GW: tl.constexpr, ATOMIC_GPHI: tl.constexpr,
                          BLOCK_E: tl.constexpr, BLOCK_O: tl.constexpr, ROWS: tl.constexpr,
                          BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr, USE_DOT: tl.constexpr,
                          TF32: tl.constexpr):
    pid = tl.program_id(0)
    c, cmask, b, bmask, re, ro, omask = _tile_indices(n_o, n_b, n_c, BLOCK_O, ROWS, BLOCK_B, BLOCK_C)
    w_t = tl.load(w_ptr + b[None, :] * s_wb + c[:, None] * s_wc,
                  mask=bmask[None, :] & cmask[:, None], other=0.0).to(ACC)  # [BLOCK_C, BLOCK_B] = W^T
    gw = tl.zeros([BLOCK_B, BLOCK_C], dtype=ACC)
    for blk in range(pid, num_blocks, tl.num_programs(0)):
        e = (blk * BLOCK_E + re).to(tl.int64)
        rmask = (e < n_e) & omask
        s = tl.load(send_ptr + e, mask=rmask, other=0).to(tl.int64)
        i = tl.load(recv_ptr + e, mask=rmask, other=0).to(tl.int64)
        tmask = rmask[:, None] & cmask[None, :]
        hv = tl.load(h_ptr + s[:, None] * s_hn + ro[:, None] * s_ho + c[None, :] * s_hc, mask=tmask, other=0.0)
        gv = tl.load(g_ptr + i[:, None] * s_gn + ro[:, None] * s_go + c[None, :] * s_gc, mask=tmask, other=0.0)
        t = hv.to(ACC) * gv.to(ACC)  # [rows, BLOCK_C]
        pmask = rmask[:, None] & bmask[None, :]
        if GPHI:
            gp = _mm(t, w_t, ACC, USE_DOT, TF32)  # [rows, BLOCK_B]
            q = gphi_ptr + e[:, None] * s_qe + ro[:, None] * s_qo + b[None, :] * s_qb
            if ATOMIC_GPHI:
                tl.atomic_add(q, gp.to(gphi_ptr.dtype.element_ty), mask=pmask)
            else:
                tl.store(q, gp.to(gphi_ptr.dtype.element_ty), mask=pmask)
        if GW:
            p = tl.load(phi_ptr + e[:, None] * s_pe + ro[:, None] * s_po + b[None, :] * s_pb,
                        mask=pmask, other=0.0).to(ACC)
            gw += _mm(tl.trans(p), t, ACC, USE_DOT, TF32)
    if GW:
        tl.store(gw_ptr + pid * s_wp + b[:, None] * s_wpb + c[None, :] * s_wpc,
                 gw.to(gw_ptr.dtype.element_ty), mask=bmask[:, None] & cmask[None, :])


def _library_compiled() -> bool:
    """True when triton's own jit helpers (tl.zeros, ...) were decorated for the compiler."""
    standard = getattr(tl, "standard", None)
    return any(type(v).__name__ == "JITFunction" for v in vars(standard).values()) if standard else False


# Kernels run on CPU tensors only when both they and triton's own helpers were decorated under
# TRITON_INTERPRET=1, i.e. when the variable was set before triton was first imported.
INTERPRETED: bool = type(_segment_sum_kernel).__name__ == "InterpretedFunction" and not _library_compiled()


# ---------------------------------------------------------------- launchers


def _acc_dtype(dtype: torch.dtype) -> tuple[torch.dtype, object]:
    """(torch, triton) accumulation dtype for inputs of ``dtype``."""
    if dtype == torch.float64:
        return torch.float64, tl.float64
    if dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.float32, tl.float32
    raise ValueError(f"triton kernels support float16/bfloat16/float32/float64 tensors, got {dtype}")


def _pow2(n: int, lo: int = 1, hi: int | None = None) -> int:
    p = max(lo, triton.next_power_of_2(max(int(n), 1)))
    return p if hi is None else min(p, max(hi, lo))


def _as_2d(x: Tensor) -> Tensor:
    """[E, ...] -> [E, F] without a copy where a view exists (non-contiguous 2-D stays strided)."""
    if x.dim() == 2:
        return x
    if x.dim() == 1:
        return x.unsqueeze(1)
    return x.reshape(x.shape[0], -1)


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def segment_sum(src: Tensor, ptr: Tensor) -> Tensor:
    """Sum CSR segments of ``src`` [E, ...] given offsets ``ptr`` [S + 1] -> [S, ...] (no autograd)."""
    num_seg = ptr.numel() - 1
    out_shape = (num_seg,) + tuple(src.shape[1:])
    src2 = _as_2d(src)
    feat = src2.shape[1]
    out = torch.empty((num_seg, feat), dtype=src.dtype, device=src.device)
    if num_seg == 0 or feat == 0:
        return out.zero_().reshape(out_shape)
    _, acc = _acc_dtype(src.dtype)
    block_f = _pow2(feat, 16, 128)
    block_e = max(1, 2048 // block_f)
    grid = (num_seg, triton.cdiv(feat, block_f))
    _segment_sum_kernel[grid](src2, ptr, out, feat, src2.stride(0), src2.stride(1), out.stride(0), out.stride(1),
                              BLOCK_E=block_e, BLOCK_F=block_f, ACC=acc)
    return out.reshape(out_shape)


def segment_expand(grad: Tensor, ptr: Tensor, num_rows: int) -> Tensor:
    """Gradient of :func:`segment_sum`: row e of the result is ``grad[segment(e)]`` -> [num_rows, ...].

    Rows outside ``ptr[0]:ptr[-1]`` get zeros.
    """
    num_seg = ptr.numel() - 1
    out_shape = (num_rows,) + tuple(grad.shape[1:])
    g2 = _as_2d(grad)
    feat = g2.shape[1]
    out = torch.zeros((num_rows, feat), dtype=grad.dtype, device=grad.device)
    if num_seg == 0 or feat == 0 or num_rows == 0:
        return out.reshape(out_shape)
    _acc_dtype(grad.dtype)
    block_f = _pow2(feat, 16, 128)
    block_e = max(1, 2048 // block_f)
    grid = (num_seg, triton.cdiv(feat, block_f))
    _segment_expand_kernel[grid](g2, ptr, out, feat, g2.stride(0), g2.stride(1), out.stride(0), out.stride(1),
                                 BLOCK_E=block_e, BLOCK_F=block_f)
    return out.reshape(out_shape)


def scatter_add(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Atomic scatter-sum of ``src`` [E, ...] rows into ``dim_size`` rows by ``index`` [E] (no autograd)."""
    out_shape = (dim_size,) + tuple(src.shape[1:])
    src2 = _as_2d(src)
    num, feat = src2.shape
    acc_t, _ = _acc_dtype(src.dtype)
    # Half-precision atomics are slow or missing; accumulate in float32 and cast once.
    out = torch.zeros((dim_size, feat), dtype=acc_t, device=src.device)
    if num > 0 and feat > 0:
        block_f = _pow2(feat, 16, 128)
        block_e = max(1, 2048 // block_f)
        grid = (triton.cdiv(num, block_e), triton.cdiv(feat, block_f))
        _scatter_add_kernel[grid](src2, index, out, num, feat, src2.stride(0), src2.stride(1),
                                  out.stride(0), out.stride(1), BLOCK_E=block_e, BLOCK_F=block_f)
    return out.to(src.dtype).reshape(out_shape)


# Block sizes. Tiles are [rows, BLOCK_C] with rows = BLOCK_E * BLOCK_O (edge, orientation) pairs;
# ~1024 elements on 8 warps keeps both kernels near 64-115 registers a thread on sm_90 in
# fp32 and fp64 (cuobjdump -res-usage), without spills. Untimed on hardware:
# ``benchmarks/kernels.py --sweep`` times alternatives by overriding entries of TUNING.
# Without tl.dot (float64 before triton 3.5) the product is a [rows, BLOCK_B, BLOCK_C]
# broadcast-sum, so the tile is smaller.
TUNING: dict[str, dict[str, int]] = {
    "message": {"BLOCK_C": 64, "TILE": 1024, "num_warps": 8},
    "edge_backward": {"BLOCK_C": 64, "TILE": 1024, "num_warps": 8},
    "no_dot": {"BLOCK_C": 32, "TILE": 512, "num_warps": 8},
}

# tl.dot accepts float64 from triton 3.5 on. FP32_DOT can be switched off to compare
# (the broadcast-sum needs fewer registers: 37-58 against 64-115 a thread).
_VERSION = tuple(int(x) for x in triton.__version__.split("+")[0].split(".")[:2] if x.isdigit())
FP64_DOT: bool = _VERSION >= (3, 5)
FP32_DOT: bool = True
FP32_PRECISION: str | None = None


def _use_dot(dtype: torch.dtype) -> bool:
    return FP64_DOT if dtype == torch.float64 else FP32_DOT


def _tf32(dtype: torch.dtype, use_dot: bool) -> bool:
    """TF32 tensor-core products for float32 inputs only where torch's own float32 matmuls may use
    them (``torch.set_float32_matmul_precision("high")`` or ``"medium"``); the default
    ("highest") keeps IEEE float32. ``FP32_PRECISION`` ("ieee"/"tf32") overrides, for benchmarks."""
    if dtype != torch.float32 or not use_dot:
        return False
    if FP32_PRECISION is not None:
        return FP32_PRECISION == "tf32"
    return torch.get_float32_matmul_precision() != "highest"


def _message_blocks(num_o: int, num_b: int, num_c: int, kind: str, use_dot: bool = True) -> dict[str, int]:
    tune = TUNING[kind if use_dot else "no_dot"]
    block_o = _pow2(num_o)
    block_c = _pow2(num_c, 16, tune["BLOCK_C"])
    # tl.dot needs every dimension >= 16 on older GPUs and tritons: at least 16 rows.
    rows = max(16, tune["TILE"] // block_c, block_o)
    block_e = max(1, rows // block_o)
    return {"BLOCK_E": block_e, "BLOCK_O": block_o, "ROWS": block_e * block_o, "BLOCK_B": _pow2(num_b, 16),
            "BLOCK_C": block_c, "num_warps": tune["num_warps"]}


def csr_message(phi: Tensor, weight: Tensor, x: Tensor, ptr: Tensor, nbr: Tensor, perm: Tensor | None,
                num_out: int) -> Tensor:
    """``out[i, o, c] = sum_{pos in ptr[i]:ptr[i+1]} (phi[e, o] @ weight[:, c]) * x[nbr[e], o, c]``.

    ``e = perm[pos]`` when ``perm`` is given, else ``pos``. phi [E, O, B], weight [B, C],
    x [M, O, C], ptr [num_out + 1], nbr [E] -> [num_out, O, C] in x's dtype (no autograd).
    """
    num_o, num_b = phi.shape[1], phi.shape[2]
    num_c = weight.shape[1]
    out = torch.empty((num_out, num_o, num_c), dtype=x.dtype, device=x.device)
    if num_out == 0 or num_o == 0 or num_c == 0:
        return out.zero_()
    _, acc = _acc_dtype(x.dtype)
    use_dot = _use_dot(x.dtype)
    blocks = _message_blocks(num_o, num_b, num_c, "message", use_dot)
    grid = (num_out, triton.cdiv(num_c, blocks["BLOCK_C"]))
    _csr_message_kernel[grid](
        phi, weight, x, ptr, ptr if perm is None else perm, nbr, out, num_o, num_b, num_c,
        *phi.stride(), *weight.stride(), *x.stride(), *out.stride(),
        HAS_PERM=perm is not None, ACC=acc, USE_DOT=use_dot, TF32=_tf32(x.dtype, use_dot), **blocks)
    return out


def edge_backward(phi: Tensor, weight: Tensor, h: Tensor, grad_out: Tensor, sender: Tensor, receiver: Tensor,
                  need_phi: bool, need_weight: bool) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of the spatial message with respect to phi [E, O, B] and weight [B, C].

    ``grad_phi[e, o, b] = sum_c grad_out[recv, o, c] * weight[b, c] * h[send, o, c]`` and
    ``grad_weight[b, c] = sum_{e, o} phi[e, o, b] * grad_out[recv, o, c] * h[send, o, c]``;
    ``None`` for the ones not asked for (no autograd).
    """
    num_e, num_o, num_b = phi.shape
    num_c = weight.shape[1]
    acc_t, acc = _acc_dtype(h.dtype)
    if not (need_phi or need_weight):
        return None, None
    use_dot = _use_dot(h.dtype)
    blocks = _message_blocks(num_o, num_b, num_c, "edge_backward", use_dot)
    n_cblk = triton.cdiv(num_c, blocks["BLOCK_C"])
    atomic = n_cblk > 1
    gphi = None
    if need_phi:
        gphi = (torch.zeros if atomic else torch.empty)((num_e, num_o, num_b), dtype=acc_t if atomic else phi.dtype,
                                                        device=phi.device)
    num_blocks = triton.cdiv(num_e, blocks["BLOCK_E"])
    programs = max(1, min(num_blocks, 4 * _num_sms(phi.device) if phi.is_cuda else 2))
    partial = torch.zeros((programs, num_b, num_c) if need_weight else (1, 1, 1), dtype=acc_t, device=phi.device)
    if num_e > 0 and num_o > 0 and num_c > 0:
        gphi_arg = gphi if gphi is not None else partial
        q_strides = gphi.stride() if gphi is not None else (0, 0, 0)
        _edge_backward_kernel[(programs, n_cblk)](
            phi, weight, h, grad_out, sender, receiver, gphi_arg, partial,
            num_e, num_o, num_b, num_c, num_blocks,
            *phi.stride(), *weight.stride(), *h.stride(), *grad_out.stride(), *q_strides, *partial.stride(),
            GPHI=need_phi, GW=need_weight, ATOMIC_GPHI=atomic, ACC=acc, USE_DOT=use_dot,
            TF32=_tf32(h.dtype, use_dot), **blocks)
    elif gphi is not None:
        gphi.zero_()
    grad_phi = gphi.to(phi.dtype) if gphi is not None else None
    grad_weight = partial.sum(0).to(weight.dtype) if need_weight else None
    return grad_phi, grad_weight
