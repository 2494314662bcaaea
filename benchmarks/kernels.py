"""Time and memory of the scatter/message backends; achieved bandwidth against a measured copy.

    python benchmarks/kernels.py                       # GPU: E = 1e4..1e7, O in {8,16,32}, C in {32,64,128}
    python benchmarks/kernels.py --markdown benchmarks/RESULTS.md   # also write the table there
    python benchmarks/kernels.py --sweep               # GPU: time block-size variants of the fused kernels

For each op (``message``: the fused R3×S2 spatial message; ``scatter``: atomic scatter of
[E, O, C] rows by receiver; ``segment``: CSR segment sum of the same), edge count E,
orientations O and channels C, every backend available on the device is timed forward
(under no_grad) and forward+backward, with peak memory above the inputs (CUDA only).

Bandwidth: ``floor`` is the time to move the op's compulsory bytes (each input read once,
each output written once, gathers counted once per node) at the device's measured
device-to-device copy bandwidth; ``%floor`` = floor / measured time, so 50% means within
2x of the copy-bandwidth floor. ``%roof`` also counts the op's flops at the measured rate of
a large torch matmul in the same dtype and precision (the roofline: the larger of the two
floors): the fused message does 2·B·C flops per (edge, orientation), which in IEEE float32
puts its compute floor at or above its bandwidth floor on current GPUs. ``--tf32`` runs
everything (torch path included) with ``torch.set_float32_matmul_precision("high")``, which
the fused kernels follow.

The graph: N = E / degree receiver-sorted nodes with Poisson degrees; senders near their
receivers (``--senders local``, like atoms ordered in space) or uniform (``--senders random``).

On a CPU the defaults shrink and the triton backend is skipped: its CPU mode is the Triton
interpreter, which is for correctness tests only.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from equipot.ops import available_backends, scatter_sum, segment_sum, spatial_message

MiB = 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, repeat: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_mib(fn, device: torch.device) -> float | None:
    """Peak memory allocated by ``fn()`` above what was allocated before, MiB (CUDA only)."""
    if device.type != "cuda":
        return None
    _sync(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / MiB


def copy_bandwidth(device: torch.device) -> float:
    """Device-to-device copy bandwidth, bytes/s (read + write counted)."""
    nbytes = 1 << 30 if device.type == "cuda" else 1 << 27
    if device.type == "cuda":
        nbytes = min(nbytes, torch.cuda.mem_get_info(device)[0] // 4)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, repeat=10)
    return 2 * nbytes / (ms * 1e-3)


def matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """flop/s of a large torch matmul in ``dtype`` at the current float32 matmul precision."""
    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = time_ms(lambda: a @ b, device, repeat=5)
    return 2 * n**3 / (ms * 1e-3)


def flop_count(op: str, e: int, o: int, b: int, c: int) -> tuple[int, int]:
    """Flops (forward, forward+backward) of an op; the message's backward is grad h (the forward
    over senders), grad phi (t @ W^T with t = grad_out * h) and grad W (phi^T t)."""
    if op == "message":
        fwd = 2 * e * o * b * c + 2 * e * o * c
        return fwd, fwd + fwd + (2 * e * o * b * c + 2 * e * o * c) + 2 * e * o * b * c
    return e * o * c, 2 * e * o * c


def make_graph(num_edges: int, degree: float, senders: str, device: torch.device, seed: int = 0):
    """edge_index [2, E] sorted by receiver, num_nodes, receiver_ptr [N + 1]."""
    g = torch.Generator().manual_seed(seed)
    num_nodes = max(1, round(num_edges / degree))
    recv = torch.sort(torch.randint(0, num_nodes, (num_edges,), generator=g)).values
    if senders == "local":
        window = max(1, int(4 * degree))
        send = (recv + torch.randint(-window, window + 1, (num_edges,), generator=g)) % num_nodes
    else:
        send = torch.randint(0, num_nodes, (num_edges,), generator=g)
    edge_index = torch.stack([send, recv]).to(device)
    counts = torch.bincount(edge_index[1], minlength=num_nodes)
    return edge_index, num_nodes, torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def floor_bytes(op: str, e: int, n: int, o: int, b: int, c: int, size: int) -> tuple[int, int]:
    """Compulsory bytes (forward, forward+backward) of an op; indices are int64."""
    if op == "message":
        fwd = e * o * b * size + e * 8 + (n + 1) * 8 + n * o * c * size * 2 + b * c * size
        bwd = 2 * e * o * b * size + 2 * e * 8 + 3 * n * o * c * size + b * c * size
        return fwd, fwd + bwd
    fwd = e * o * c * size + e * 8 + n * o * c * size
    return fwd, fwd + fwd


def torch_path_bytes(op: str, e: int, o: int, c: int, size: int) -> int:
    """Rough peak of the torch path for forward+backward (the [E, O, C] temporaries)."""
    return (6 if op == "message" else 3) * e * o * c * size


def bench_case(op: str, backend: str, e: int, o: int, c: int, args, device: torch.device, dtype: torch.dtype):
    edge_index, n, ptr = make_graph(e, args.degree, args.senders, device)
    g = torch.Generator(device="cpu").manual_seed(1)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).to(device)

    if op == "message":
        inputs = [rand(e, o, args.basis), rand(args.basis, c) / args.basis**0.5, rand(n, o, c)]

        def run(x):
            return spatial_message(x[0], x[1], x[2], edge_index, n, receiver_ptr=ptr, backend=backend)
    else:
        inputs = [rand(e, o, c)]
        if op == "scatter":
            def run(x):
                return scatter_sum(x[0], edge_index[1], n, backend=backend)
        else:
            def run(x):
                return segment_sum(x[0], ptr, backend=backend)

    with torch.no_grad():
        fwd_ms = time_ms(lambda: run(inputs), device, args.repeat)
        fwd_peak = peak_mib(lambda: run(inputs), device)
    grads = [x.detach().requires_grad_(True) for x in inputs]
    grad_out = torch.randn_like(run(inputs))

    def fwd_bwd():
        torch.autograd.grad(run(grads), grads, grad_out)

    fb_ms = time_ms(fwd_bwd, device, args.repeat)
    fb_peak = peak_mib(fwd_bwd, device)
    return n, fwd_ms, fb_ms, fwd_peak, fb_peak


def fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def run_table(args, device: torch.device, dtype: torch.dtype, bandwidth: float, flops: float) -> list[list[str]]:
    backends = args.backends or available_backends(device)
    if device.type != "cuda" and "triton" in backends:
        backends = [b for b in backends if b != "triton"]
    if device.type != "cuda":
        print("triton: skipped (no CUDA device; the Triton interpreter is for correctness tests only)")
    size = torch.finfo(dtype).bits // 8
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    header = ["op", "E", "O", "C", "backend", "fwd ms", "fwd %floor", "fwd %roof", "f+b ms", "f+b %floor",
              "f+b %roof", "peak fwd MiB", "peak f+b MiB", "speedup fwd", "speedup f+b"]
    rows = [header]
    print(" | ".join(header), flush=True)
    for op in args.ops:
        for e in args.edges:
            for o in args.orientations:
                for c in args.channels:
                    base = None
                    for backend in backends:
                        cells = [op, f"{e:.0e}", str(o), str(c), backend]
                        if backend != "triton" and free is not None and \
                                torch_path_bytes(op, e, o, c, size) > 0.8 * free:
                            rows.append(cells + ["skipped: [E, O, C] temporaries exceed memory"] + [""] * 9)
                            print(" | ".join(rows[-1][:6]), flush=True)
                            continue
                        try:
                            n, fwd, fb, pf, pfb = bench_case(op, backend, e, o, c, args, device, dtype)
                        except torch.cuda.OutOfMemoryError:
                            torch.cuda.empty_cache()
                            rows.append(cells + ["OOM"] + [""] * 9)
                            print(" | ".join(rows[-1][:6]), flush=True)
                            continue
                        fwd_bytes, fb_bytes = floor_bytes(op, e, n, o, args.basis, c, size)
                        fwd_flops, fb_flops = flop_count(op, e, o, args.basis, c)
                        if backend == "torch":
                            base = (fwd, fb)

                        def pct(seconds: float, ms: float) -> str:
                            return f"{100 * seconds / (ms * 1e-3):.0f}%"

                        cells += [fmt(fwd), pct(fwd_bytes / bandwidth, fwd),
                                  pct(max(fwd_bytes / bandwidth, fwd_flops / flops), fwd), fmt(fb),
                                  pct(fb_bytes / bandwidth, fb), pct(max(fb_bytes / bandwidth, fb_flops / flops), fb),
                                  fmt(pf, ".0f"), fmt(pfb, ".0f"),
                                  fmt(base[0] / fwd if base else None, ".2f"),
                                  fmt(base[1] / fb if base else None, ".2f")]
                        rows.append(cells)
                        print(" | ".join(cells), flush=True)
    return rows


SWEEP_VARIANTS = [(dot, kind, block_c, tile, warps) for dot in (True, False) for kind in ("message", "edge_backward")
                  for block_c in (32, 64, 128) for tile in (512, 1024, 2048) for warps in (4, 8)]


def sweep(args, device: torch.device, dtype: torch.dtype, variants=SWEEP_VARIANTS) -> list[tuple]:
    """Time the fused message forward (kind ``message``) or its edge backward (``edge_backward``:
    f+b minus fwd) for block-size ``variants`` (tl.dot, kind, BLOCK_C, TILE, num_warps); returns and
    prints one row per variant, O and C. Restores the tuning afterwards."""
    from equipot.ops import triton_kernels

    saved = {k: dict(v) for k, v in triton_kernels.TUNING.items()}
    saved_dot = triton_kernels.FP32_DOT, triton_kernels.FP64_DOT
    e = args.sweep_edges
    print(f"sweep at E={e:.0e}: kind | tl.dot | BLOCK_C | TILE | warps | O | C | ms "
          "(edge_backward: f+b minus fwd)")
    rows = []
    try:
        for dot, kind, block_c, tile, warps in variants:
            triton_kernels.FP32_DOT = triton_kernels.FP64_DOT = dot and saved_dot[1 if dtype == torch.float64 else 0]
            triton_kernels.TUNING.update({k: dict(v) for k, v in saved.items()})
            triton_kernels.TUNING[kind if dot else "no_dot"] = {"BLOCK_C": block_c, "TILE": tile, "num_warps": warps}
            for o in args.orientations:
                for c in args.channels:
                    _, fwd, fb, _, _ = bench_case("message", "triton", e, o, c, args, device, dtype)
                    rows.append((kind, dot, block_c, tile, warps, o, c, fwd if kind == "message" else fb - fwd))
                    print(" | ".join(map(str, rows[-1][:-1])) + f" | {rows[-1][-1]:.3f}", flush=True)
    finally:
        triton_kernels.TUNING.update(saved)
        triton_kernels.FP32_DOT, triton_kernels.FP64_DOT = saved_dot
    return rows


def to_markdown(rows: list[list[str]], meta: dict[str, str]) -> str:
    lines = [f"## Kernel benchmark: {meta['device']}, {meta['date']}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k not in ("device", "date")]
    lines += ["", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--ops", nargs="+", default=["message", "scatter", "segment"],
                        choices=["message", "scatter", "segment"])
    parser.add_argument("--edges", nargs="+", type=lambda s: int(float(s)), default=None,
                        help="edge counts (default 1e4 1e5 1e6 1e7 on CUDA, 1e3 1e4 on CPU)")
    parser.add_argument("--orientations", nargs="+", type=int, default=None,
                        help="orientation counts O (default 8 16 32; 8 16 on CPU)")
    parser.add_argument("--channels", nargs="+", type=int, default=None,
                        help="channel counts C (default 32 64 128; 32 64 on CPU)")
    parser.add_argument("--basis", type=int, default=16, help="kernel basis size B of phi [E, O, B]")
    parser.add_argument("--degree", type=float, default=32.0, help="mean edges per receiving atom")
    parser.add_argument("--senders", choices=["local", "random"], default="local")
    parser.add_argument("--backends", nargs="+", default=None, help="default: all available on the device")
    parser.add_argument("--repeat", type=int, default=None, help="timed repeats (default 20 CUDA, 3 CPU)")
    parser.add_argument("--markdown", type=Path, default=None, help="append the table to this Markdown file")
    parser.add_argument("--sweep", action="store_true", help="time block-size variants of the fused kernels")
    parser.add_argument("--sweep-edges", type=lambda s: int(float(s)), default=10**6)
    parser.add_argument("--tf32", action="store_true",
                        help="float32 matmuls (torch path and fused kernels) on TF32 tensor cores")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    cuda = device.type == "cuda"
    args.edges = args.edges or ([10**4, 10**5, 10**6, 10**7] if cuda else [10**3, 10**4])
    args.orientations = args.orientations or ([8, 16, 32] if cuda else [8, 16])
    args.channels = args.channels or ([32, 64, 128] if cuda else [32, 64])
    args.repeat = args.repeat or (20 if cuda else 3)

    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()}, " \
                                                          f"{os.cpu_count()} cores)"
    if args.tf32:
        torch.set_float32_matmul_precision("high")
    bandwidth = copy_bandwidth(device)
    flops = matmul_rate(device, dtype)
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    meta = {"device": name, "date": datetime.date.today().isoformat(), "dtype": args.dtype,
            "torch": torch.__version__, "triton": triton_version,
            "measured copy bandwidth": f"{bandwidth / 1e9:.0f} GB/s",
            "measured matmul rate": f"{flops / 1e12:.1f} Tflop/s ({args.dtype}, float32 matmul precision "
                                    f"{torch.get_float32_matmul_precision()})",
            "graph": f"mean degree {args.degree:g}, senders {args.senders}, basis B={args.basis}"}
    for k, v in meta.items():
        print(f"# {k}: {v}")
    if args.sweep:
        if not cuda:
            print("--sweep needs a CUDA device", file=sys.stderr)
            return 1
        sweep(args, device, dtype)
        return 0
    rows = run_table(args, device, dtype, bandwidth, flops)
    if args.markdown is not None:
        text = args.markdown.read_text() if args.markdown.exists() else "# Benchmark results\n\n"
        tmp = args.markdown.with_name(args.markdown.name + ".tmp")
        tmp.write_text(text.rstrip("\n") + "\n\n" + to_markdown(rows, meta))
        os.replace(tmp, args.markdown)
        print(f"# table appended to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
