"""The R3×S2 spatial message: the hot path of the PΘNITA model.

    out[i, o, c] = sum_{e: receiver(e) = i} (sum_b phi[e, o, b] * weight[b, c]) * h[sender(e), o, c]

``phi`` is the edge-wise invariant embedding (already multiplied by the cutoff
envelope), ``weight`` the last linear layer of the kernel network, ``h`` the node
features on the orientation grid.

Backends (see :mod:`equipot.ops.backends`):

- ``torch`` on the CPU: a loop over blocks of edges (gather, multiply, ``index_add_``) whose
  [block, O, C] temporaries stay in cache; nothing of size [E, O, C] is stored for the backward.
- ``torch`` on other devices, ``torch_scatter``: materialise the [E, O, C] kernel and messages,
  then scatter them with the chosen backend.
- ``triton``: one fused CSR kernel over receiver-sorted edges (no atomics, no [E, O, C]
  tensor in memory). Backward: grad h is the same fused kernel over a sender CSR
  (computed once per graph and cached with the receiver offsets in an :class:`EdgePlan`);
  grad phi and grad weight come from one edge-blocked kernel. When the backward itself
  must be differentiable (``create_graph=True``, i.e. training on forces), the backward
  is computed with differentiable torch ops instead (it materialises [E, O, C] tensors
  like the torch path); the forward stays fused. Inputs that are not sorted by receiver
  are handled through a permutation (a sort once per graph).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.autograd import Function

from . import cpu_kernels
from .backends import resolve_backend
from .legendre import legendre, legendre_and_derivative
from .scatter import check, scatter_sum, segment_sum


@dataclass
class EdgePlan:
    """Index data for the fused kernels, built once per graph (per ``edge_index`` tensor).

    sender, receiver [E]; receiver_ptr [num_nodes + 1] CSR offsets over receiver-sorted
    edges; receiver_perm [E] edge ids in receiver order, or None when already sorted.
    The sender CSR (for the backward) is built on first use.
    """

    sender: Tensor
    receiver: Tensor
    num_nodes: int
    receiver_ptr: Tensor
    receiver_perm: Tensor | None
    _sender_csr: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    def sender_csr(self, num_senders: int) -> tuple[Tensor, Tensor]:
        """(ptr [num_senders + 1], perm [E]): edge ids grouped by sender (stable: deterministic)."""
        if num_senders not in self._sender_csr:
            perm = torch.argsort(self.sender, stable=True)
            counts = torch.bincount(self.sender, minlength=num_senders)
            ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            self._sender_csr[num_senders] = (ptr, perm)
        return self._sender_csr[num_senders]


_PLAN_CACHE: list[tuple[weakref.ref, tuple[int, int, int], EdgePlan]] = []
_PLAN_CACHE_SIZE = 4


def _csr_offsets(index: Tensor, size: int) -> Tensor:
    counts = torch.bincount(index, minlength=size)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _check_edge_range(sender: Tensor, receiver: Tensor, num_senders: int, num_nodes: int) -> None:
    """ValueError unless every sender lies in [0, num_senders) and every receiver in [0, num_nodes)
    (the fused kernels index with them unchecked)."""
    if sender.numel():
        check((torch.minimum(sender.min(), receiver.min()) >= 0) & (sender.max() < num_senders)
              & (receiver.max() < num_nodes),
              f"edge_index: senders must lie in [0, {num_senders}) (rows of h) and receivers in "
              f"[0, {num_nodes}) (num_nodes)")


def edge_plan(edge_index: Tensor, num_nodes: int, receiver_ptr: Tensor | None = None,
              num_senders: int | None = None) -> EdgePlan:
    """The :class:`EdgePlan` of ``edge_index`` [2, E] (sender, receiver), cached per tensor.

    ``num_nodes``: number of receiving nodes; ``num_senders`` (default ``num_nodes``): rows of h.

    Every layer of a model passes the same ``edge_index`` tensor, so the CSR offsets, the
    sortedness check and the sender sort happen once per graph. The cache holds weak
    references and checks the tensor's version, so a freed or modified tensor is never reused;
    it keeps the index data of the last few graphs alive.
    A given ``receiver_ptr`` must be the CSR offsets of receiver-sorted edges (it is trusted).
    """
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    num_senders = num_nodes if num_senders is None else num_senders
    # Inference tensors have no version counter: they are not cached.
    cacheable = not edge_index.is_inference()
    key = (edge_index._version if cacheable else -1, num_nodes, num_senders)
    for ref, cached_key, plan in _PLAN_CACHE:
        if cacheable and ref() is edge_index and cached_key == key:
            return plan
    sender = edge_index[0].contiguous()
    receiver = edge_index[1].contiguous()
    _check_edge_range(sender, receiver, num_senders, num_nodes)
    perm = None
    if receiver_ptr is None:
        if receiver.numel() > 1 and not bool((receiver[1:] >= receiver[:-1]).all()):
            perm = torch.argsort(receiver, stable=True)
        receiver_ptr = _csr_offsets(receiver, num_nodes)
    elif receiver_ptr.shape != (num_nodes + 1,):
        raise ValueError(f"receiver_ptr must have shape [{num_nodes + 1}] (num_nodes + 1), "
                         f"got {tuple(receiver_ptr.shape)}")
    plan = EdgePlan(sender, receiver, num_nodes, receiver_ptr.contiguous(), perm)
    if cacheable:
        _PLAN_CACHE.insert(0, (weakref.ref(edge_index), key, plan))
        del _PLAN_CACHE[_PLAN_CACHE_SIZE:]
    return plan


def _torch_backward(phi: Tensor, weight: Tensor, h: Tensor, grad: Tensor, sender: Tensor, receiver: Tensor,
                    needs: tuple[bool, ...]) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Differentiable gradients (for double backward); materialises [E, O, C] tensors."""
    grad_e = grad[receiver]
    grad_phi = grad_weight = grad_h = None
    if needs[0] or needs[1]:
        t = grad_e * h[sender]
        if needs[0]:
            grad_phi = t @ weight.transpose(0, 1)
        if needs[1]:
            grad_weight = torch.einsum("eob,eoc->bc", phi, t)
    if needs[2]:
        grad_h = scatter_sum((phi @ weight) * grad_e, sender, h.shape[0], backend="torch")
    return grad_phi, grad_weight, grad_h


# Edges per block of the chunked CPU message: the [block, O, C] temporaries stay near 1 MiB, in
# cache. On the 2-core development machine an [E, O, C] float32 temporary of 80 MB took
# 50-60 ms per elementwise op (memory bound); the blocked loop keeps that traffic out of DRAM.
_BLOCK_BYTES = 1 << 20


def _blocks(num_edges: int, row_bytes: int) -> tuple[range, int]:
    step = max(16, _BLOCK_BYTES // max(row_bytes, 1))
    return range(0, num_edges, step), step


class _ChunkedMessage(Function):
    """The torch message over blocks of edges: no [E, O, C] tensor is stored or materialised.

    The backward is blocked too, unless it must itself be differentiable (``create_graph=True``,
    force training), where the plain differentiable torch expressions are used.
    """

    @staticmethod
    def forward(ctx, phi: Tensor, weight: Tensor, h: Tensor, sender: Tensor, receiver: Tensor,
                num_nodes: int, weight_node) -> Tensor:
        ctx.save_for_backward(phi, weight, h, sender, receiver)
        ctx.weight_node = weight_node
        out = h.new_zeros((num_nodes, h.shape[1], h.shape[2]))
        starts, step = _blocks(phi.shape[0], h.shape[1] * h.shape[2] * h.element_size())
        for s in starts:
            msg = phi[s:s + step] @ weight
            msg.mul_(h.index_select(0, sender[s:s + step]))
            out.index_add_(0, receiver[s:s + step], msg)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        phi, weight, h, sender, receiver = ctx.saved_tensors
        needs = (ctx.needs_input_grad[0], _weight_needed(ctx, ctx.needs_input_grad[1]), ctx.needs_input_grad[2])
        if torch.is_grad_enabled():
            return (*_torch_backward(phi, weight, h, grad, sender, receiver, needs), None, None, None, None)
        grad_phi = torch.empty_like(phi) if needs[0] else None
        grad_weight = torch.zeros_like(weight) if needs[1] else None
        grad_h = torch.zeros_like(h) if needs[2] else None
        starts, step = _blocks(phi.shape[0], h.shape[1] * h.shape[2] * h.element_size())
        for s in starts:
            sl = slice(s, s + step)
            grad_e = grad.index_select(0, receiver[sl])
            if needs[0] or needs[1]:
                t = grad_e * h.index_select(0, sender[sl])
                if needs[0]:
                    torch.matmul(t, weight.transpose(0, 1), out=grad_phi[sl])
                if needs[1]:
                    grad_weight += torch.einsum("eob,eoc->bc", phi[sl], t)
            if needs[2]:
                msg = phi[sl] @ weight
                msg.mul_(grad_e)
                grad_h.index_add_(0, sender[sl], msg)
        return grad_phi, grad_weight, grad_h, None, None, None, None


def _outer(angular: Tensor, radial: Tensor) -> Tensor:
    """phi [e, O, A * M] = angular [e, O, A] x radial [e, A, M]."""
    return (angular.unsqueeze(-1) * radial.unsqueeze(1)).flatten(-2)


def _cosines(vec: Tensor, grid: Tensor) -> tuple[Tensor, Tensor]:
    """(o·r̂ [e, O], |r| [e, 1]) of edge vectors [e, 3] and orientations [O, 3]."""
    r = torch.sqrt((vec * vec).sum(-1, keepdim=True)).clamp(min=1e-9)
    return (vec @ grid.transpose(0, 1)) / r, r


def spherical_kernel(vec: Tensor, grid: Tensor, radial: Tensor) -> Tensor:
    """phi [E, O, (L + 1) M] of the R3×S2 radial kernel: P_l(o·r̂) radial[e, l, m] for edge vectors
    vec [E, 3], orientations grid [O, 3] and radial functions radial [E, L + 1, M]."""
    return _outer(legendre(_cosines(vec, grid)[0], radial.shape[1] - 1), radial)


def _degree_kernels(radial: Tensor, weight: Tensor) -> Tensor:
    """R [e, L + 1, C] = sum_m radial[e, l, m] weight[l M + m, c]: the radial kernel times the weight,
    one [C] row per edge and Legendre degree (the factorised message's per-edge product)."""
    degrees, m = radial.shape[1], radial.shape[2]
    return torch.einsum("elm,lmc->elc", radial, weight.view(degrees, m, weight.shape[-1]))


class _SphericalMessage(Function):
    """The chunked CPU message for the kernel phi[e, o, (l, m)] = P_l(o·r̂_e) radial[e, l, m], factorised:
    phi[e, o] @ weight = sum_l P_l(o·r̂_e) R[e, l] with R = :func:`_degree_kernels` (E (L+1) M C
    multiply-adds), combined with the [e, O, L + 1] Legendre values (E O (L+1) C) instead of the
    [e, O, (L+1) M] @ [(L+1) M, C] product (E O (L+1) M C). Formed from the edge vectors block by block
    in the forward and again in the backward: no [E, O, ...] tensor (Legendre values, their gradients
    or messages) is stored whole, and R is recomputed per block rather than kept. Where the fused C
    kernel of :mod:`equipot.ops.cpu_kernels` is available it does both passes edge by edge instead
    (the differentiable backward of force training stays in torch).
    """

    @staticmethod
    def forward(ctx, vec: Tensor, grid: Tensor, radial: Tensor, weight: Tensor, h: Tensor, sender: Tensor,
                receiver: Tensor, num_nodes: int, weight_node) -> Tensor:
        ctx.save_for_backward(vec, grid, radial, weight, h, sender, receiver)
        ctx.weight_node = weight_node
        ctx.fused = cpu_kernels.usable((vec, grid, radial, weight, h), (sender, receiver))
        if ctx.fused:
            _check_edge_range(sender, receiver, h.shape[0], num_nodes)  # the C kernel trusts its indices
            return cpu_kernels.spherical_forward(vec, grid, radial, weight, h, sender, receiver, num_nodes)
        degree = radial.shape[1] - 1
        out = h.new_zeros((num_nodes, h.shape[1], h.shape[2]))
        starts, step = _blocks(vec.shape[0], h.shape[1] * h.shape[2] * h.element_size())
        for s in starts:
            sl = slice(s, s + step)
            msg = torch.bmm(legendre(_cosines(vec[sl], grid)[0], degree), _degree_kernels(radial[sl], weight))
            msg.mul_(h.index_select(0, sender[sl]))
            out.index_add_(0, receiver[sl], msg)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        vec, grid, radial, weight, h, sender, receiver = ctx.saved_tensors
        need_v, need_g, need_r, need_w, need_h = ctx.needs_input_grad[:5]
        if need_g:
            raise RuntimeError("spherical_message: the orientation grid takes no gradient")
        need_w = _weight_needed(ctx, need_w)
        needs = (need_v, need_r, need_w, need_h)
        if torch.is_grad_enabled():
            # A differentiable backward (training on forces): the same expressions over all edges at once,
            # so autograd records them (the blocked loop below writes into preallocated tensors).
            grad_v, grad_r, grad_w, msg_h = _spherical_grads(vec, grid, radial, weight, h, grad, sender, receiver,
                                                             needs)
            grad_h = scatter_sum(msg_h, sender, h.shape[0], backend="torch") if need_h else None
            return grad_v, None, grad_r, grad_w, grad_h, None, None, None, None
        if ctx.fused:
            grads = cpu_kernels.spherical_backward(vec, grid, radial, weight, h, grad.contiguous(), sender, receiver,
                                                   needs)
            return grads[0], None, *grads[1:], None, None, None, None
        grad_v = torch.empty_like(vec) if need_v else None
        grad_r = torch.empty_like(radial) if need_r else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_h = torch.zeros_like(h) if need_h else None
        starts, step = _blocks(vec.shape[0], h.shape[1] * h.shape[2] * h.element_size())
        for s in starts:
            sl = slice(s, s + step)
            gv, gr, gw, msg_h = _spherical_grads(vec[sl], grid, radial[sl], weight, h, grad, sender[sl],
                                                 receiver[sl], needs)
            if need_v:
                grad_v[sl] = gv
            if need_r:
                grad_r[sl] = gr
            if need_w:
                grad_w += gw
            if need_h:
                grad_h.index_add_(0, sender[sl], msg_h)
        return grad_v, None, grad_r, grad_w, grad_h, None, None, None, None


def _grad_node(t: Tensor):
    """The autograd node that receives ``t``'s gradient (its accumulator for a leaf); None without grad."""
    if not (torch.is_grad_enabled() and t.requires_grad):
        return None
    return t.grad_fn if t.grad_fn is not None else t.view_as(t).grad_fn.next_functions[0][0]


def _will_execute(node) -> bool:
    """Whether the running backward reaches ``node`` (True where torch cannot say)."""
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):
        return True


def _weight_needed(ctx, needs_input_grad: bool) -> bool:
    """Whether a message op's backward must form the weight's gradient: not in a force pass
    (autograd.grad on the positions), which never uses it, though the weight requires grad."""
    return needs_input_grad and (ctx.weight_node is None or _will_execute(ctx.weight_node))


def _spherical_grads(vec: Tensor, grid: Tensor, radial: Tensor, weight: Tensor, h: Tensor, grad: Tensor,
                     sender: Tensor, receiver: Tensor, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    """Gradients (vec [e, 3], radial [e, L + 1, M], weight [B, C]) of the spherical message for the edges
    given, and their contributions [e, O, C] to grad h (to be summed over senders), from the output
    gradient ``grad`` [N, O, C]; plain torch expressions (differentiable when grad mode is on), in the
    factorised form of :class:`_SphericalMessage` (nothing of size [e, O, (L+1) M] is formed)."""
    need_v, need_r, need_w, need_h = needs
    cos, r = _cosines(vec, grid)
    degree = radial.shape[1] - 1
    p, dp = legendre_and_derivative(cos, degree) if need_v else (legendre(cos, degree), None)  # [e, O, L + 1]
    kernels = _degree_kernels(radial, weight)  # [e, L + 1, C]
    grad_e = grad.index_select(0, receiver)
    grad_v = grad_r = grad_w = msg_h = None
    if need_v or need_r or need_w:
        t = grad_e * h.index_select(0, sender)  # [e, O, C]
        if need_r or need_w:
            grad_k = torch.bmm(p.transpose(1, 2), t)  # d/dR [e, L + 1, C]
            w = weight.view(*radial.shape[1:], weight.shape[-1])  # [L + 1, M, C]
            if need_r:
                grad_r = torch.einsum("elc,lmc->elm", grad_k, w)
            if need_w:
                grad_w = torch.einsum("elm,elc->lmc", radial, grad_k).reshape(weight.shape)
        if need_v:
            g_cos = (torch.bmm(t, kernels.transpose(1, 2)) * dp).sum(-1)  # [e, O]
            # d(o·r̂)/dr = (o - (o·r̂) r̂) / |r|
            grad_v = (g_cos @ grid - (g_cos * cos).sum(-1, keepdim=True) * (vec / r)) / r
    if need_h:
        msg_h = torch.bmm(p, kernels)
        msg_h = msg_h.mul_(grad_e) if not torch.is_grad_enabled() else msg_h * grad_e
    return grad_v, grad_r, grad_w, msg_h


def spherical_message(vec: Tensor, grid: Tensor, radial: Tensor, weight: Tensor, h: Tensor, edge_index: Tensor,
                      num_nodes: int, receiver_ptr: Tensor | None = None, backend: str | None = None) -> Tensor:
    """:func:`spatial_message` for the R3×S2 radial kernel phi[e, o, (l, m)] = P_l(o·r̂_e) radial[e, l, m],
    given by the edge vectors vec [E, 3] Å, the orientation grid [O, 3] (no gradient) and the radial
    functions radial [E, L + 1, M].

    The kernel is never formed: phi[e, o] @ weight = sum_l P_l(o·r̂_e) R[e, l] with R[e, l, c] =
    sum_m radial[e, l, m] weight[l M + m, c], (L+1) M / (L+1 + (L+1) M / O) times fewer multiply-adds
    than the formed product (3.6 at L = 3, M = 4, O = 42). On the CPU the torch backend does this block
    by block and again in the backward, so nothing of size [E, O, ...] is stored whole; other torch
    and torch_scatter devices form the [E, O, C] messages in one go. The ``triton`` backend still forms
    phi and runs the fused kernel of :func:`spatial_message` (its kernel takes one weight for all
    edges). The formed kernel, ``spatial_message(spherical_kernel(vec, grid, radial), weight, ...)``,
    is the reference this factorisation is tested against.
    """
    if vec.dim() != 2 or vec.shape[1] != 3 or radial.dim() != 3 or radial.shape[0] != vec.shape[0]:
        raise ValueError(f"spherical_message: expected vec [E, 3] and radial [E, L + 1, M], got "
                         f"{tuple(vec.shape)} and {tuple(radial.shape)}")
    name = resolve_backend(backend, h)
    if name == "triton":
        return spatial_message(spherical_kernel(vec, grid, radial), weight, h, edge_index, num_nodes, receiver_ptr,
                               name)
    _check_shapes((vec.shape[0], grid.shape[0], radial.shape[1] * radial.shape[2]), weight, h, edge_index, num_nodes)
    if name == "torch" and h.device.type == "cpu" and not isinstance(vec.shape[0], torch.SymInt):
        return _SphericalMessage.apply(vec, grid, radial, weight, h, edge_index[0], edge_index[1], num_nodes,
                                       _grad_node(weight))
    return _spherical_message_whole(vec, grid, radial, weight, h, edge_index, num_nodes, receiver_ptr, name)


def _spherical_message_whole(vec: Tensor, grid: Tensor, radial: Tensor, weight: Tensor, h: Tensor,
                             edge_index: Tensor, num_nodes: int, receiver_ptr: Tensor | None, backend: str) -> Tensor:
    """The factorised message in plain torch over all edges at once (devices other than the CPU, export):
    [E, O, C] messages formed, autograd records everything (double backward included)."""
    angular = legendre(_cosines(vec, grid)[0], radial.shape[1] - 1)  # [E, O, L + 1]
    msg = torch.bmm(angular, _degree_kernels(radial, weight)) * h[edge_index[0]]
    if receiver_ptr is not None:
        return segment_sum(msg, receiver_ptr, backend=backend)
    return scatter_sum(msg, edge_index[1], num_nodes, backend=backend)


class _FusedMessage(Function):
    @staticmethod
    def forward(ctx, phi: Tensor, weight: Tensor, h: Tensor, plan: EdgePlan) -> Tensor:
        from . import triton_kernels

        ctx.save_for_backward(phi, weight, h)
        ctx.plan = plan
        return triton_kernels.csr_message(phi, weight, h, plan.receiver_ptr, plan.sender, plan.receiver_perm,
                                          plan.num_nodes)

    @staticmethod
    def backward(ctx, grad: Tensor):
        from . import triton_kernels

        phi, weight, h = ctx.saved_tensors
        plan: EdgePlan = ctx.plan
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            return (*_torch_backward(phi, weight, h, grad, plan.sender, plan.receiver, needs), None)
        grad_h = None
        if needs[2]:
            ptr, perm = plan.sender_csr(h.shape[0])
            grad_h = triton_kernels.csr_message(phi, weight, grad, ptr, plan.receiver, perm, h.shape[0])
        grad_phi, grad_weight = triton_kernels.edge_backward(phi, weight, h, grad, plan.sender, plan.receiver,
                                                             needs[0], needs[1])
        return grad_phi, grad_weight, grad_h, None


def _check_shapes(phi_shape: tuple, weight: Tensor, h: Tensor, edge_index: Tensor, num_nodes: int) -> None:
    if len(phi_shape) != 3 or weight.dim() != 2 or h.dim() != 3:
        raise ValueError(f"spatial_message: expected phi [E, O, B], weight [B, C], h [N, O, C]; got "
                         f"{tuple(phi_shape)}, {tuple(weight.shape)}, {tuple(h.shape)}")
    num_e, num_o, num_b = phi_shape
    if weight.shape[0] != num_b or h.shape[1] != num_o or h.shape[2] != weight.shape[1]:
        raise ValueError(f"spatial_message: inconsistent shapes phi {tuple(phi_shape)} [E, O, B], "
                         f"weight {tuple(weight.shape)} [B, C], h {tuple(h.shape)} [N, O, C]")
    if edge_index.dim() != 2 or edge_index.shape != (2, num_e):
        raise ValueError(f"spatial_message: edge_index must have shape [2, {num_e}] (E of phi), "
                         f"got {tuple(edge_index.shape)}")
    if num_nodes < 0:
        raise ValueError(f"spatial_message: num_nodes must be >= 0, got {num_nodes}")


def spatial_message(phi: Tensor, weight: Tensor, h: Tensor, edge_index: Tensor, num_nodes: int,
                    receiver_ptr: Tensor | None = None, backend: str | None = None) -> Tensor:
    """phi [E, O, B], weight [B, C], h [N, O, C], edge_index [2, E] (sender, receiver) -> [num_nodes, O, C].

    ``receiver_ptr`` [num_nodes + 1]: CSR offsets of receiver-sorted edges
    (:meth:`AtomicGraph.receiver_ptr`); optional, computed and cached per ``edge_index`` when
    omitted. ``backend``: "torch", "torch_scatter", "triton", "auto" or None.
    """
    _check_shapes(tuple(phi.shape), weight, h, edge_index, num_nodes)
    name = resolve_backend(backend, h)
    if name == "triton":
        if not (phi.dtype == weight.dtype == h.dtype):
            raise ValueError(f"spatial_message: phi, weight and h must share a dtype for the triton backend, "
                             f"got {phi.dtype}, {weight.dtype}, {h.dtype}")
        if not (phi.device == weight.device == h.device == edge_index.device):
            raise ValueError("spatial_message: phi, weight, h and edge_index must be on one device")
        plan = edge_plan(edge_index, num_nodes, receiver_ptr, num_senders=h.shape[0])
        return _FusedMessage.apply(phi, weight, h, plan)
    # The blocked loop needs a concrete edge count; while tracing with symbolic shapes (export)
    # the plain expression is traced instead.
    if name == "torch" and h.device.type == "cpu" and not isinstance(phi.shape[0], torch.SymInt):
        return _ChunkedMessage.apply(phi, weight, h, edge_index[0], edge_index[1], num_nodes, _grad_node(weight))
    msg = (phi @ weight) * h[edge_index[0]]
    if receiver_ptr is not None:
        return segment_sum(msg, receiver_ptr, backend=name)
    return scatter_sum(msg, edge_index[1], num_nodes, backend=name)
