"""Work per stage of one R3×S2 energy+forces call, against what this core's matrix products reach.

For each system (biphenyl, water boxes of ``--sides``) and the default model (untrained: the work
does not depend on the weights), prints one row per stage of the forward and the force backward:
GFLOP (counted from the shapes, a multiply-add = 2 FLOP), GB moved (the tensors each stage must
read and write once), ms (the stage timed alone on tensors of the call's shapes, forward + backward,
``--repeats`` medians), achieved GFLOP/s; then the whole call through ``EquiCalc``, and the roofline:
``torch.mm`` GFLOP/s on the same core and dtype at the block MLP's shape ([N O, C] @ [C, 2 C]), the
call's counted FLOPs divided by that rate, and the call's time over it.

    python benchmarks/roofline.py --sides 4 8 --dtype float32 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

if not __package__:  # run as `python benchmarks/roofline.py`: import the package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import systems, untrained_model
from equipot import EquiCalc
from equipot.ops import cpu_kernels
from equipot.ops.message import spherical_message


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def mm_rate(rows: int, inner: int, cols: int, dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of torch.mm [rows, inner] @ [inner, cols] on this core."""
    a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
    return 2 * rows * inner * cols / _median_ms(lambda: a @ b, repeats) / 1e6


def _grad_call(fn, inputs: list[torch.Tensor]):
    def run():
        out = fn(*inputs)
        torch.autograd.grad(out, inputs, torch.ones_like(out))
    return run


def stages(model, atoms, dtype: torch.dtype, repeats: int) -> tuple[list[tuple[str, float, float, float]], int, int]:
    """([(stage, FLOP, bytes, ms)], atoms, edges) of one energy+forces call of ``model`` (eval grid) on
    ``atoms``, all layers."""
    bb = model.backbone
    cfg = bb.config
    cell = atoms.cell.array if atoms.pbc.any() else None
    graph = model.graph_builder()([(atoms.numbers, atoms.positions, cell, atoms.pbc)], dtype, "cpu")
    n, e = graph.num_nodes, graph.num_edges
    o, c, layers = len(bb.eval_grid), cfg.hidden, cfg.layers
    deg = cfg.angular_degree + 1
    k = bb.layers[0].radial_head.out_features
    m, hid, nb, w = k // deg, cfg.radial_hidden, cfg.basis_size, cfg.widening
    factors = bb.current_factors(dtype, torch.device("cpu"))
    kc, kp = factors.columns(cfg.angular_degree), factors.columns(cfg.lowpass or 0)
    s = torch.finfo(dtype).bits // 8
    rows = []

    g = torch.Generator().manual_seed(0)
    vec = (torch.randn(e, 3, generator=g, dtype=dtype) * 2).requires_grad_(True)
    radial = torch.randn(e, deg, m, generator=g, dtype=dtype).requires_grad_(True)
    weight = bb.layers[0].weight.detach().to(dtype)
    h = torch.randn(n, o, c, generator=g, dtype=dtype).requires_grad_(True)
    grid = bb.eval_grid.to(dtype)
    edge_index = graph.edge_index
    flop = layers * (e * o * c * (2 * deg + 2) + e * o * c * (6 * deg + 4) + 3 * 2 * e * deg * m * c)
    byte = layers * s * (3 * e * o * c + 4 * e * o * c)  # rows of h, out / grad, h, grad_h per edge
    ms = layers * _median_ms(_grad_call(lambda v, r, x: spherical_message(v, grid, r, weight, x, edge_index, n),
                                        [vec, radial, h]), repeats)
    rows.append(("spatial message", flop, byte, ms))

    layer = bb.layers[0]
    x = torch.randn(n, o, c, generator=g, dtype=dtype).requires_grad_(True)
    flop = layers * 2 * (2 * 2 * kc * o * n * c)
    ms = layers * _median_ms(_grad_call(lambda t: layer.sphere.to(dtype)(t, factors), [x]), repeats)
    rows.append(("sphere convolution", flop, layers * 2 * 2 * s * n * o * c, ms))
    q = factors.lowpass_basis(cfg.lowpass or 0)
    flop = layers * 2 * (2 * 2 * kp * o * n * c)
    ms = layers * _median_ms(_grad_call(lambda t: torch.matmul(q, torch.matmul(q.T, t)), [x]), repeats)
    rows.append(("low-pass projection", flop, layers * 2 * 2 * s * n * o * c, ms))
    mlp = layer.mlp.to(dtype)
    norm = layer.norm.to(dtype) if layer.norm is not None else (lambda t: t)
    flop = layers * 2 * (2 * n * o * 2 * w * c * c)
    ms = layers * _median_ms(_grad_call(lambda t: mlp(norm(t)), [x]), repeats)
    rows.append(("norm + block MLP", flop, layers * 2 * s * n * o * (2 * c + 2 * w * c), ms))
    trunk = bb.radial.to(dtype)
    basis = torch.randn(e, nb, generator=g, dtype=dtype).requires_grad_(True)
    flop = 2 * (2 * e * (nb * hid + hid * hid) + layers * 2 * e * hid * k)
    heads = [lay.radial_head.to(dtype) for lay in bb.layers]
    def radial_kernels(t):  # the trunk is shared by the layers, each has its own head
        shared = trunk(t)
        return torch.cat([hd(shared) for hd in heads], -1)

    ms = _median_ms(_grad_call(radial_kernels, [basis]), repeats)
    rows.append(("radial MLP", flop, 2 * s * e * (nb + 2 * hid + layers * k), ms))
    return rows, n, e


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sides", type=int, nargs="+", default=[4, 8])
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = untrained_model("ponita").to(dtype).eval()
    print(f"# {args.dtype}, {args.threads} thread(s); message kernel: {cpu_kernels.status()}")
    for name, atoms in systems(tuple(args.sides)):
        if name.startswith("C60"):
            continue
        rows, n, e = stages(model, atoms, dtype, args.repeats)
        moving = atoms.copy()
        moving.calc = EquiCalc(model, dtype=dtype)

        def call(a=moving):
            a.positions += 1e-3  # every call recomputes
            a.get_forces()

        total_ms = _median_ms(call, args.repeats)
        o, c = len(model.backbone.eval_grid), model.backbone.config.hidden
        rate = mm_rate(n * o, c, 2 * c, dtype, args.repeats)
        print(f"\n## {name}: {n} atoms, {e} edges within the cutoff")
        print("| stage | GFLOP | GB | ms | GFLOP/s |\n|---|---:|---:|---:|---:|")
        flops = 0.0
        for stage, flop, byte, ms in rows:
            flops += flop
            print(f"| {stage} | {flop / 1e9:.3f} | {byte / 1e9:.3f} | {ms:.1f} | {flop / ms / 1e6:.1f} |")
        stage_ms = sum(r[3] for r in rows)
        print(f"| stages above, summed | {flops / 1e9:.3f} | | {stage_ms:.1f} | {flops / stage_ms / 1e6:.1f} |")
        print(f"| whole call (EquiCalc, energy + forces) | | | {total_ms:.1f} | {flops / total_ms / 1e6:.1f} |")
        floor = flops / rate / 1e6
        print(f"\nroofline: torch.mm [{n * o}, {c}] @ [{c}, {2 * c}] = {rate:.1f} GFLOP/s; counted work at that rate "
              f"{floor:.1f} ms; the call takes {total_ms / floor:.2f}x that")
    return 0


if __name__ == "__main__":
    sys.exit(main())
