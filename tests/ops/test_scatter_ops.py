"""Backend selection and the portable torch path of scatter_sum, segment_sum and spatial_message."""
from __future__ import annotations

import sys
import types

import pytest
import torch

from equipot.ops import (
    available_backends,
    default_backend,
    edge_plan,
    resolve_backend,
    scatter_sum,
    segment_sum,
    spatial_message,
    use_backend,
)
from equipot.ops import backends as backends_mod


def _graph(num_nodes: int, num_edges: int, seed: int = 0, sort: bool = True):
    g = torch.Generator().manual_seed(seed)
    recv = torch.randint(0, num_nodes, (num_edges,), generator=g)
    if sort:
        recv = torch.sort(recv).values
    send = torch.randint(0, num_nodes, (num_edges,), generator=g)
    return torch.stack([send, recv]), g


def _naive_message(phi, weight, h, edge_index, num_nodes):
    out = torch.zeros((num_nodes,) + tuple(h.shape[1:]), dtype=h.dtype)
    for e in range(edge_index.shape[1]):
        j, i = int(edge_index[0, e]), int(edge_index[1, e])
        out[i] += (phi[e] @ weight) * h[j]
    return out


def test_default_backend_cpu_is_torch(monkeypatch):
    monkeypatch.delenv(backends_mod.ENV_VAR, raising=False)
    assert default_backend("cpu") == "torch"
    assert resolve_backend(None, "cpu") == "torch"
    assert "torch" in available_backends("cpu")


def test_env_var_and_argument_force_backend(monkeypatch):
    monkeypatch.setenv(backends_mod.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="bogus"):
        resolve_backend(None, "cpu")
    assert resolve_backend("torch", "cpu") == "torch"  # the argument wins over the env var
    monkeypatch.setenv(backends_mod.ENV_VAR, "torch")
    assert resolve_backend(None, "cpu") == "torch"
    monkeypatch.setenv(backends_mod.ENV_VAR, "auto")
    assert resolve_backend(None, "cpu") == "torch"


def test_use_backend_context(monkeypatch):
    monkeypatch.setenv(backends_mod.ENV_VAR, "bogus")
    with use_backend("torch"):
        assert resolve_backend(None, "cpu") == "torch"
    with pytest.raises(ValueError), use_backend("nope"):
        pass


def test_forcing_unavailable_backend_raises(monkeypatch):
    monkeypatch.setattr(backends_mod, "has_torch_scatter", lambda: False)
    monkeypatch.setattr(backends_mod, "has_triton", lambda: False)
    with pytest.raises(ValueError, match="torch_scatter"):
        resolve_backend("torch_scatter", "cpu")
    with pytest.raises(ValueError, match="triton"):
        resolve_backend("triton", "cpu")
    assert available_backends("cpu") == ["torch"]
    assert default_backend("cuda") == "torch"


def test_cuda_default_order(monkeypatch):
    monkeypatch.setattr(backends_mod, "has_torch_scatter", lambda: True)
    monkeypatch.setattr(backends_mod, "has_triton", lambda: True)
    assert default_backend("cuda") == "triton"
    monkeypatch.setattr(backends_mod, "has_triton", lambda: False)
    assert default_backend("cuda") == "torch_scatter"


def test_torch_scatter_dispatch_with_stub(monkeypatch):
    """The torch_scatter branch calls torch_scatter's functions (a stub stands in for the extension)."""
    calls = []

    def scatter_sum_stub(src, index, dim, dim_size):
        calls.append("scatter")
        return torch.zeros((dim_size,) + tuple(src.shape[1:]), dtype=src.dtype).index_add_(dim, index, src)

    def segment_csr_stub(src, ptr, reduce):
        calls.append("segment")
        index = torch.repeat_interleave(torch.arange(ptr.numel() - 1), ptr[1:] - ptr[:-1])
        return torch.zeros((ptr.numel() - 1,) + tuple(src.shape[1:]), dtype=src.dtype).index_add_(0, index, src)

    stub = types.SimpleNamespace(scatter_sum=scatter_sum_stub, segment_csr=segment_csr_stub)
    monkeypatch.setitem(sys.modules, "torch_scatter", stub)
    monkeypatch.setattr(backends_mod, "has_torch_scatter", lambda: True)
    src = torch.randn(6, 3)
    index = torch.tensor([0, 0, 2, 2, 2, 3])
    ptr = torch.tensor([0, 2, 2, 5, 6])
    ref = scatter_sum(src, index, 4, backend="torch")
    torch.testing.assert_close(scatter_sum(src, index, 4, backend="torch_scatter"), ref)
    torch.testing.assert_close(segment_sum(src, ptr, backend="torch_scatter"), ref)
    assert calls == ["scatter", "segment"]


@pytest.mark.skipif(not backends_mod.has_torch_scatter(), reason="torch-scatter not installed (optional extra)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_real_torch_scatter_matches_torch_path(dtype):
    """The installed extension, forward and gradients, against the torch path: sorted and unsorted
    indices, empty segments (node 0 and the last node get no edge), non-contiguous input."""
    edge_index, g = _graph(40, 600, seed=3)
    index = edge_index[1].clamp(1, 38)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(index, minlength=40).cumsum(0)])
    src = torch.randn(3, 600, 8, generator=g, dtype=dtype).transpose(0, 1)  # [600, 3, 8], non-contiguous
    unsorted = index[torch.randperm(600, generator=g)]
    weight = torch.randn(4, 5, generator=g, dtype=dtype)
    h = torch.randn(40, 3, 5, generator=g, dtype=dtype)
    for name in ("torch", "torch_scatter"):
        x = src.detach().requires_grad_(True)
        outs = [scatter_sum(x, unsorted, 40, backend=name), segment_sum(x, ptr, backend=name),
                spatial_message(x[:, :, :4], weight, h, torch.stack([edge_index[0], index]), 40, receiver_ptr=ptr,
                                backend=name)]
        grads = torch.autograd.grad(sum((o * (k + 1)).sum() for k, o in enumerate(outs)), x)
        if name == "torch":
            ref = [o.detach() for o in outs], grads
        else:
            for o, r in zip(outs, ref[0]):
                torch.testing.assert_close(o, r)
            torch.testing.assert_close(grads[0], ref[1][0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scatter_and_segment_torch(dtype):
    src = torch.randn(9, 2, 3, dtype=dtype)
    index = torch.tensor([0, 0, 0, 2, 2, 4, 4, 4, 4])  # rows 1 and 3 are empty
    ptr = torch.tensor([0, 3, 3, 5, 5, 9])
    ref = torch.stack([src[index == k].sum(0) for k in range(5)])
    torch.testing.assert_close(scatter_sum(src, index, 5, backend="torch"), ref)
    torch.testing.assert_close(segment_sum(src, ptr, backend="torch"), ref)


def test_bad_inputs_raise():
    src = torch.randn(4, 2)
    with pytest.raises(ValueError, match="index"):
        scatter_sum(src, torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="ptr"):
        segment_sum(src, torch.tensor([0, 2, 3]))
    with pytest.raises(ValueError, match="ptr"):
        segment_sum(src, torch.tensor([0, 3, 2, 4]))
    edge_index, _ = _graph(3, 5)
    with pytest.raises(ValueError, match="inconsistent"):
        spatial_message(torch.randn(5, 2, 4), torch.randn(3, 6), torch.randn(3, 2, 6), edge_index, 3)
    with pytest.raises(ValueError, match="edge_index"):
        spatial_message(torch.randn(4, 2, 4), torch.randn(4, 6), torch.randn(3, 2, 6), edge_index, 3)


def test_spatial_message_torch_matches_naive():
    edge_index, g = _graph(5, 17)
    phi = torch.randn(17, 3, 4, dtype=torch.float64, generator=g)
    weight = torch.randn(4, 6, dtype=torch.float64, generator=g)
    h = torch.randn(5, 3, 6, dtype=torch.float64, generator=g)
    ref = _naive_message(phi, weight, h, edge_index, 5)
    torch.testing.assert_close(spatial_message(phi, weight, h, edge_index, 5, backend="torch"), ref)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(edge_index[1], minlength=5).cumsum(0)])
    torch.testing.assert_close(spatial_message(phi, weight, h, edge_index, 5, receiver_ptr=ptr, backend="torch"), ref)


def test_spatial_message_torch_gradgradcheck():
    edge_index, g = _graph(4, 9)
    phi = torch.randn(9, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    h = torch.randn(4, 2, 4, dtype=torch.float64, generator=g, requires_grad=True)

    def fn(p, w, x):
        return spatial_message(p, w, x, edge_index, 4, backend="torch")

    assert torch.autograd.gradcheck(fn, (phi, weight, h), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (phi, weight, h), fast_mode=True)


def test_edge_plan_cached_per_tensor():
    edge_index, _ = _graph(6, 20)
    plan = edge_plan(edge_index, 6)
    assert edge_plan(edge_index, 6) is plan
    assert plan.receiver_perm is None
    torch.testing.assert_close(plan.receiver_ptr[-1], torch.tensor(20))
    edge_index[1, :] = edge_index[1].flip(0)  # in-place change -> new version -> new (unsorted) plan
    plan2 = edge_plan(edge_index, 6)
    assert plan2 is not plan and plan2.receiver_perm is not None
    assert torch.equal(edge_index[1][plan2.receiver_perm], torch.sort(edge_index[1]).values)
    ptr, perm = plan2.sender_csr(6)
    assert torch.equal(edge_index[0][perm], torch.sort(edge_index[0]).values)
    assert int(ptr[-1]) == 20


def test_blocked_cpu_message_matches_naive_over_many_blocks(monkeypatch):
    """The CPU torch path runs over blocks of edges; with tiny blocks (16 edges, 4 blocks here) its
    forward, plain backward and double backward must equal the one-shot expressions."""
    from equipot.ops import message

    monkeypatch.setattr(message, "_BLOCK_BYTES", 1)
    edge_index, g = _graph(7, 61)
    phi = torch.randn(61, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    h = torch.randn(7, 3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    out = spatial_message(phi, weight, h, edge_index, 7, backend="torch")
    ref = _naive_message(phi, weight, h, edge_index, 7)
    torch.testing.assert_close(out, ref)
    probe = torch.randn(out.shape, dtype=torch.float64, generator=g)
    grads = torch.autograd.grad((out * probe).sum(), (phi, weight, h))
    ref_grads = torch.autograd.grad((ref * probe).sum(), (phi, weight, h))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)

    def fn(p, w, x):
        return spatial_message(p, w, x, edge_index, 7, backend="torch")

    assert torch.autograd.gradgradcheck(fn, (phi, weight, h), fast_mode=True)


PATHS = ["fused", "blocked", "whole"]


def _spherical_path(path: str, monkeypatch):
    """The factorised spherical message by one of its three roads: ``fused`` (the CPU's C kernel,
    edge by edge), ``blocked`` (the CPU's torch loop over 16-edge blocks, where no compiler is) or
    ``whole`` (plain torch over all edges: other devices, export)."""
    from equipot.ops import cpu_kernels, message

    if path == "fused":
        assert cpu_kernels.library() is not None, cpu_kernels.status()
    if path == "blocked":
        monkeypatch.setattr(cpu_kernels, "usable", lambda *args: False)
    if path == "whole":
        return lambda *args: message._spherical_message_whole(*args, None, "torch")
    return message.spherical_message


@pytest.mark.parametrize("channels", [5, 8])  # 8: the C kernel's vector path (degree 3, whole vectors)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("degree", [0, 3])
def test_spherical_message_matches_the_formed_kernel_over_many_blocks(monkeypatch, degree, path, channels):
    """The factorised message (sum_l P_l(o·r̂) (radial[e, l] @ weight_l), never the kernel
    P_l(o·r̂) radial[e, l, m] itself; on the CPU block by block, and again in the backward) must equal
    the message of the whole kernel formed first: values, gradients (edge vectors included) and double
    backward, to float64 round-off. Degree 0 is the r3_only case."""
    from equipot.ops import message
    from equipot.ops.message import spherical_kernel
    from equipot.potentials.sphere import orientation_grid

    spherical_message = _spherical_path(path, monkeypatch)
    monkeypatch.setattr(message, "_BLOCK_BYTES", 1)
    edge_index, g = _graph(7, 61, sort=False)
    vec = (torch.randn(61, 3, dtype=torch.float64, generator=g) * 2).requires_grad_(True)
    grid = orientation_grid("icosahedron", 12)
    radial = torch.randn(61, degree + 1, 2, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn((degree + 1) * 2, channels, dtype=torch.float64, generator=g, requires_grad=True)
    h = torch.randn(7, 12, channels, dtype=torch.float64, generator=g, requires_grad=True)
    out = spherical_message(vec, grid, radial, weight, h, edge_index, 7)
    ref = _naive_message(spherical_kernel(vec, grid, radial), weight, h, edge_index, 7)
    torch.testing.assert_close(out, ref)
    probe = torch.randn(out.shape, dtype=torch.float64, generator=g)
    inputs = (vec, radial, weight, h)
    ref_grads = torch.autograd.grad((ref * probe).sum(), inputs, allow_unused=True)  # degree 0: no vec
    got_grads = torch.autograd.grad((out * probe).sum(), inputs, allow_unused=True)
    for a, b, x in zip(got_grads, ref_grads, inputs):
        torch.testing.assert_close(torch.zeros_like(x) if a is None else a, torch.zeros_like(x) if b is None else b)

    def fn(v, r, w, x):
        return spherical_message(v, grid, r, w, x, edge_index, 7)

    # (fast mode trips over the edge vectors that a degree-0 kernel does not depend on)
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=degree > 0)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=degree > 0)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("degree", [0, 3])
def test_spherical_message_trains_on_forces_like_the_formed_kernel(monkeypatch, degree, path):
    """Training on forces: edge vectors and radial functions both computed from the positions, forces by
    autograd with create_graph, then a force loss differentiated to the parameters. Must equal the formed
    kernel to rounding (float64). An earlier backward that called autograd.grad inside the backward
    doubled the forces here, although gradgradcheck on independent leaf inputs passed."""
    from equipot.ops import message
    from equipot.ops.message import spherical_kernel
    from equipot.potentials.sphere import orientation_grid

    spherical_message = _spherical_path(path, monkeypatch)
    monkeypatch.setattr(message, "_BLOCK_BYTES", 1)
    edge_index, g = _graph(7, 61)
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    pos = (torch.randn(7, 3, dtype=torch.float64, generator=g) * 2).requires_grad_(True)
    grid = orientation_grid("icosahedron", 12)
    proj = torch.randn(3, (degree + 1) * 2, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn((degree + 1) * 2, 5, dtype=torch.float64, generator=g, requires_grad=True)
    h0 = torch.randn(7, 12, 5, dtype=torch.float64, generator=g, requires_grad=True)

    def force_loss_grads(message_fn):
        vec = pos[edge_index[1]] - pos[edge_index[0]]
        radial = torch.tanh(vec @ proj).view(-1, degree + 1, 2)
        energy = (message_fn(vec, radial, torch.tanh(h0)) ** 2).sum()
        forces, = torch.autograd.grad(energy, pos, create_graph=True)
        return (forces, *torch.autograd.grad((forces ** 2).sum(), (proj, weight, h0)))

    got = force_loss_grads(lambda v, r, x: spherical_message(v, grid, r, weight, x, edge_index, 7))
    ref = force_loss_grads(lambda v, r, x: _naive_message(spherical_kernel(v, grid, r), weight, x, edge_index, 7))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kernel", ["radial-fused", "radial-blocked", "mlp"])
def test_message_skips_the_weight_gradient_only_in_the_force_pass(monkeypatch, kernel):
    """autograd.grad of an energy with respect to the positions never uses the message weight's
    gradient, so the force pass does not form it; the loss's backward, which trains the weight, does.
    ``radial-*``: the spherical message (kernel formed inside; C kernel or torch blocks); ``mlp``: the
    message of a formed kernel. Inference forces (no create_graph) for the C kernel, force training for
    the others."""
    from equipot.ops import cpu_kernels, message
    from equipot.ops.message import spatial_message, spherical_message
    from equipot.potentials.sphere import orientation_grid

    # the backward helper each op hands its `needs` to, and the weight's place in them
    owner, spied, weight_need = {"radial-fused": (cpu_kernels, "spherical_backward", 2),
                                 "radial-blocked": (message, "_spherical_grads", 2),
                                 "mlp": (message, "_torch_backward", 1)}[kernel]
    if kernel == "radial-blocked":
        monkeypatch.setattr(cpu_kernels, "usable", lambda *args: False)
    asked: list[bool] = []
    original = getattr(owner, spied)

    def spy(*args):
        asked.append(args[-1][weight_need])
        return original(*args)

    monkeypatch.setattr(owner, spied, spy)
    edge_index, g = _graph(5, 20)
    pos = (torch.randn(5, 3, dtype=torch.float64, generator=g) * 2).requires_grad_(True)
    weight = torch.randn(8, 4, dtype=torch.float64, generator=g, requires_grad=True)
    h = torch.randn(5, 12, 4, dtype=torch.float64, generator=g, requires_grad=True)
    vec = pos[edge_index[0]] - pos[edge_index[1]] + 0.1
    if kernel != "mlp":
        radial = torch.tanh(vec.norm(dim=1, keepdim=True) * torch.ones(1, 8, dtype=torch.float64)).view(-1, 4, 2)
        out = spherical_message(vec, orientation_grid("icosahedron", 12), radial, weight, h, edge_index, 5)
    else:
        phi = torch.tanh(vec @ torch.ones(3, 12 * 8, dtype=torch.float64)).view(-1, 12, 8)
        out = spatial_message(phi, weight, h, edge_index, 5, backend="torch")
    energy = (out ** 2).sum()
    # The C kernel runs the backward of inference (MD forces); force training's backward is torch's.
    inference = kernel == "radial-fused"
    forces, = torch.autograd.grad(energy, pos, create_graph=not inference, retain_graph=True)
    assert asked == [False]
    asked.clear()
    (energy if inference else forces.pow(2).sum() + energy).backward()
    if kernel != "mlp":  # (the formed kernel's non-differentiable backward does not go through the spy)
        assert asked and all(asked)
    assert weight.grad is not None and bool(weight.grad.abs().sum() > 0)
