"""Every Triton kernel against the torch path.

Without a GPU the kernels run in the Triton interpreter on CPU tensors: this module sets
``TRITON_INTERPRET=1`` (unless already set) before importing triton. If something imported
triton earlier in the session the interpreter cannot be switched on and the module skips;
run ``TRITON_INTERPRET=1 pytest tests/ops`` then.
Sizes are tiny because the interpreter runs each program in Python. With a GPU the same
tests run the compiled kernels on CUDA tensors, plus the larger ``gpu`` tests at the end.
"""
from __future__ import annotations

import os

import pytest
import torch

_CUDA = torch.cuda.is_available()
if not _CUDA:
    # Read when triton decorates kernels (at import) and again while they run: it stays set.
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")
from equipot.ops import (  # noqa: E402  (after TRITON_INTERPRET is set)
    backend_available,
    edge_plan,
    scatter_sum,
    segment_sum,
    spatial_message,
    triton_kernels,
)

DEVICE = "cuda" if _CUDA else "cpu"
if not backend_available("triton", DEVICE):
    pytest.skip("no CUDA and the Triton interpreter is off (TRITON_INTERPRET=0, or triton was imported "
                "before this module set it): run TRITON_INTERPRET=1 pytest tests/ops", allow_module_level=True)

DTYPES = [torch.float32, torch.float64]


def _tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}


def _graph(num_nodes: int, num_edges: int, seed: int = 0, sort: bool = True, empty: tuple[int, ...] = ()):
    """Random edge_index [2, E] on DEVICE; nodes in ``empty`` receive no edges."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([n for n in range(num_nodes) if n not in empty])
    recv = allowed[torch.randint(0, allowed.numel(), (num_edges,), generator=g)]
    if sort:
        recv = torch.sort(recv).values
    send = torch.randint(0, num_nodes, (num_edges,), generator=g)
    return torch.stack([send, recv]).to(DEVICE), g


def _ptr(index, size):
    counts = torch.bincount(index, minlength=size)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _rand(*shape, dtype, g, requires_grad=False):
    return torch.randn(*shape, dtype=dtype, generator=g).to(DEVICE).requires_grad_(requires_grad)


# ------------------------------------------------------------------ scatter / segment


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_and_segment_forward_backward(dtype):
    edge_index, g = _graph(7, 60, empty=(0, 3, 6))
    recv = edge_index[1]
    ptr = _ptr(recv, 7)
    src = _rand(60, 3, 5, dtype=dtype, g=g, requires_grad=True)
    grad = _rand(7, 3, 5, dtype=dtype, g=g)
    ref = scatter_sum(src, recv, 7, backend="torch")
    (ref_grad,) = torch.autograd.grad(ref, src, grad)
    for out in (scatter_sum(src, recv, 7, backend="triton"), segment_sum(src, ptr, backend="triton")):
        torch.testing.assert_close(out, ref, **_tol(dtype))
        assert out[[0, 3, 6]].abs().max() == 0
        (got_grad,) = torch.autograd.grad(out, src, grad)
        torch.testing.assert_close(got_grad, ref_grad, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_huge_segment_and_unsorted_scatter(dtype):
    g = torch.Generator().manual_seed(1)
    src = _rand(3000, 4, dtype=dtype, g=g)
    ptr = torch.tensor([0, 0, 3000, 3000], device=DEVICE)  # empty, huge, empty
    out = segment_sum(src, ptr, backend="triton")
    ref = torch.zeros(3, 4, dtype=dtype, device=DEVICE)
    ref[1] = src.sum(0)
    torch.testing.assert_close(out, ref, **_tol(dtype))
    index = torch.randint(0, 5, (3000,), generator=g).to(DEVICE)  # unsorted, atomics
    torch.testing.assert_close(scatter_sum(src, index, 5, backend="triton"),
                               scatter_sum(src, index, 5, backend="torch"), **_tol(dtype))


def test_non_contiguous_and_empty_inputs():
    g = torch.Generator().manual_seed(2)
    base = _rand(6, 40, dtype=torch.float32, g=g)
    src = base.t()  # [40, 6], strides (1, 40)
    assert not src.is_contiguous()
    index = torch.randint(0, 4, (40,), generator=g).to(DEVICE)
    ptr = _ptr(torch.sort(index).values, 4)
    torch.testing.assert_close(scatter_sum(src, index, 4, backend="triton"),
                               scatter_sum(src, index, 4, backend="torch"))
    torch.testing.assert_close(segment_sum(src, ptr, backend="triton"), segment_sum(src, ptr, backend="torch"))
    empty = torch.zeros(0, 3, device=DEVICE)
    assert scatter_sum(empty, torch.zeros(0, dtype=torch.long, device=DEVICE), 2, backend="triton").eq(0).all()
    assert segment_sum(empty, torch.zeros(3, dtype=torch.long, device=DEVICE), backend="triton").shape == (2, 3)


def test_scatter_index_out_of_range_raises():
    if _CUDA:
        pytest.skip("on CUDA the range check is an asynchronous device assert")
    with pytest.raises(ValueError, match="index"):
        scatter_sum(torch.ones(3, 2), torch.tensor([0, 1, 5]), 3, backend="triton")


def test_scatter_segment_gradcheck_float64():
    edge_index, g = _graph(4, 7, empty=(2,))
    src = _rand(7, 2, dtype=torch.float64, g=g, requires_grad=True)
    recv, ptr = edge_index[1], _ptr(edge_index[1], 4)
    assert torch.autograd.gradcheck(lambda x: scatter_sum(x, recv, 4, backend="triton"), (src,))
    assert torch.autograd.gradcheck(lambda x: segment_sum(x, ptr, backend="triton"), (src,))
    assert torch.autograd.gradgradcheck(lambda x: segment_sum(x, ptr, backend="triton") ** 2, (src,),
                                        fast_mode=True)


# ------------------------------------------------------------------ fused spatial message


def _message_inputs(num_nodes, num_edges, o, b, c, dtype, seed=0, sort=True, empty=()):
    edge_index, g = _graph(num_nodes, num_edges, seed=seed, sort=sort, empty=empty)
    phi = _rand(num_edges, o, b, dtype=dtype, g=g, requires_grad=True)
    weight = _rand(b, c, dtype=dtype, g=g, requires_grad=True)
    h = _rand(num_nodes, o, c, dtype=dtype, g=g, requires_grad=True)
    return phi, weight, h, edge_index


def _compare_message(phi, weight, h, edge_index, num_nodes, dtype, **kwargs):
    ref = spatial_message(phi, weight, h, edge_index, num_nodes, backend="torch")
    out = spatial_message(phi, weight, h, edge_index, num_nodes, backend="triton", **kwargs)
    torch.testing.assert_close(out, ref, **_tol(dtype))
    grad = torch.randn(ref.shape, dtype=dtype, generator=torch.Generator().manual_seed(9)).to(DEVICE)
    inputs = [x for x in (phi, weight, h) if x.requires_grad]
    ref_grads = torch.autograd.grad(ref, inputs, grad)
    got_grads = torch.autograd.grad(out, inputs, grad)
    for got, want in zip(got_grads, ref_grads):
        torch.testing.assert_close(got, want, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_message_matches_torch(dtype):
    phi, weight, h, edge_index = _message_inputs(6, 40, 3, 5, 20, dtype, empty=(1, 4))
    _compare_message(phi, weight, h, edge_index, 6, dtype)


def test_message_float64_without_tl_dot(monkeypatch):
    """The broadcast-sum product used in float64 where triton < 3.5 has no fp64 tl.dot."""
    monkeypatch.setattr(triton_kernels, "FP64_DOT", False)
    phi, weight, h, edge_index = _message_inputs(4, 20, 2, 3, 20, torch.float64, seed=8, empty=(2,))
    _compare_message(phi, weight, h, edge_index, 4, torch.float64)


@pytest.fixture
def tf32_matmuls():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    yield
    torch.set_float32_matmul_precision(before)


def test_message_tf32_follows_torch_matmul_precision(tf32_matmuls, monkeypatch):
    """float32 kernels take TF32 products only where torch's float32 matmuls may (never float64).

    The interpreter computes the TF32 branch in full float32, so on the CPU this checks that the
    branch runs; on a GPU the tolerance is TF32's (10-bit mantissa, sums over B = 5 and C)."""
    assert triton_kernels._tf32(torch.float32, True) and not triton_kernels._tf32(torch.float64, True)
    monkeypatch.setattr(triton_kernels, "FP32_PRECISION", "ieee")
    assert not triton_kernels._tf32(torch.float32, True)
    monkeypatch.setattr(triton_kernels, "FP32_PRECISION", None)
    phi, weight, h, edge_index = _message_inputs(6, 40, 3, 5, 20, torch.float64, seed=4, empty=(0,))
    ref = spatial_message(phi, weight, h, edge_index, 6, backend="torch")
    grad = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    ref_grads = torch.autograd.grad(ref, (phi, weight, h), grad)
    x32 = [x.detach().float().requires_grad_() for x in (phi, weight, h)]
    out = spatial_message(*x32, edge_index, 6, backend="triton")
    tol = {"rtol": 1e-2, "atol": 1e-2} if _CUDA else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(out.double(), ref, **tol)
    for got, want in zip(torch.autograd.grad(out, x32, grad.float()), ref_grads):
        torch.testing.assert_close(got.double(), want, **tol)


def test_message_wide_channels_unsorted_and_receiver_ptr():
    # C > 128: several channel blocks forward and the atomic grad-phi path backward.
    phi, weight, h, edge_index = _message_inputs(3, 12, 2, 3, 130, torch.float64, seed=3, sort=False)
    assert edge_plan(edge_index, 3).receiver_perm is not None
    _compare_message(phi, weight, h, edge_index, 3, torch.float64)
    phi, weight, h, edge_index = _message_inputs(4, 15, 1, 2, 8, torch.float32, seed=4)
    _compare_message(phi, weight, h, edge_index, 4, torch.float32, receiver_ptr=_ptr(edge_index[1], 4))


def test_message_non_contiguous_and_partial_grads():
    g = torch.Generator().manual_seed(5)
    edge_index, _ = _graph(5, 18, seed=5)
    phi = _rand(4, 18, 3, dtype=torch.float64, g=g).permute(1, 0, 2).requires_grad_(False)  # [E, O, B] strided
    weight = _rand(8, 3, dtype=torch.float64, g=g).t().requires_grad_(True)  # [B, C] strided
    h = _rand(5, 8, 4, dtype=torch.float64, g=g).transpose(1, 2).requires_grad_(True)  # [N, O, C] strided
    assert not (phi.is_contiguous() or weight.is_contiguous() or h.is_contiguous())
    _compare_message(phi, weight, h, edge_index, 5, torch.float64)


def test_message_inference_mode():
    phi, weight, h, edge_index = _message_inputs(4, 12, 2, 3, 4, torch.float64, seed=10)
    ref = spatial_message(phi, weight, h, edge_index, 4, backend="torch")
    with torch.inference_mode():
        ei = edge_index.clone()  # an inference tensor: no version counter, so no plan cache
        out = spatial_message(phi, weight, h, ei, 4, backend="triton")
    torch.testing.assert_close(out, ref, **_tol(torch.float64))


def test_message_empty_graph():
    phi, weight, h, edge_index = _message_inputs(3, 0, 2, 3, 4, torch.float64)
    out = spatial_message(phi, weight, h, edge_index, 3, backend="triton")
    assert out.shape == (3, 2, 4) and out.abs().max() == 0
    grads = torch.autograd.grad(out.sum(), (phi, weight, h))
    assert grads[0].shape == phi.shape and grads[1].abs().max() == 0 and grads[2].abs().max() == 0


def test_message_gradcheck_and_gradgradcheck_float64():
    """Backward is the Triton kernels; double backward goes through the torch formulas."""
    phi, weight, h, edge_index = _message_inputs(4, 9, 2, 3, 4, torch.float64, seed=6, empty=(0,))

    def fn(p, w, x):
        return spatial_message(p, w, x, edge_index, 4, backend="triton")

    assert torch.autograd.gradcheck(fn, (phi, weight, h), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (phi, weight, h), fast_mode=True)


def test_interpreted_flag_matches_device():
    assert triton_kernels.INTERPRETED == (os.environ.get("TRITON_INTERPRET") == "1")


def test_ponita_energy_and_forces_match_torch_backend():
    """The R3×S2 model gives the same energy and forces with the fused kernel."""
    from ase.build import molecule

    from equipot import AtomicGraph, build_potential
    from equipot.ops import use_backend

    torch.manual_seed(0)
    model = build_potential("ponita", elements=(1, 6, 8), cutoff=3.0, hidden=16, layers=2, grid_size=4)
    model = model.to(device=DEVICE, dtype=torch.float64)
    graph = AtomicGraph.from_atoms(molecule("CH3CH2OH"), 3.0, dtype=torch.float64, device=DEVICE)
    out = {}
    for name in ("torch", "triton"):
        with use_backend(name):
            out[name] = model(graph, compute_forces=True)
    torch.testing.assert_close(out["triton"]["energy"], out["torch"]["energy"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out["triton"]["forces"], out["torch"]["forces"], rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ GPU only


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("o,c", [(8, 32), (16, 64), (32, 128), (12, 200)])
def test_gpu_message_realistic_sizes(o, c):
    phi, weight, h, edge_index = _message_inputs(2000, 60000, o, 16, c, torch.float32, seed=7)
    ref = spatial_message(phi.double(), weight.double(), h.double(), edge_index, 2000, backend="torch")
    out = spatial_message(phi, weight, h, edge_index, 2000, backend="triton")
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    _compare_message(phi.double().detach().requires_grad_(), weight.double().detach().requires_grad_(),
                     h.double().detach().requires_grad_(), edge_index, 2000, torch.float64)


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason="needs a CUDA device")
def test_gpu_default_backend_is_triton():
    from equipot.ops import default_backend

    assert default_backend("cuda") == "triton"
