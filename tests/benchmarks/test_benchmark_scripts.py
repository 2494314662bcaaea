"""The benchmark scripts run end to end on tiny inputs, so a GPU session spends its time measuring.

The GPU-only parts (the Triton rows of the kernel table, the block-size sweep, the largest water
box) run here on the CPU where they can: Triton under its interpreter, the search for the largest
box with a stand-in for "fits in GPU memory".
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from equipot.ops import backend_available

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _script(name: str):
    sys.path.insert(0, str(BENCH))  # the scripts import their siblings (peers, systems)
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_kernel_table_runs_and_appends_markdown(tmp_path, capsys):
    kernels = _script("kernels")
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\nearlier text\n")
    assert kernels.main(["--device", "cpu", "--edges", "300", "--orientations", "8", "--channels", "16",
                         "--repeat", "1", "--markdown", str(md), "--backends", "torch"]) == 0
    text = md.read_text()
    assert text.startswith("# Benchmark results\n\nearlier text\n\n## Kernel benchmark: CPU")
    rows = [line for line in text.splitlines() if line.startswith("| message") or line.startswith("| segment")]
    assert len(rows) == 2 and all(" torch " in r for r in rows)
    assert "%" in rows[0] and not (tmp_path / "RESULTS.md.tmp").exists()


@pytest.mark.skipif(not backend_available("triton", "cpu"), reason="needs triton (interpreted on the CPU)")
def test_kernel_cases_and_sweep_run_the_triton_backend():
    kernels = _script("kernels")
    args = SimpleNamespace(degree=4.0, senders="random", basis=8, repeat=1, sweep_edges=64,
                           orientations=[4], channels=[16])
    for op in ("message", "scatter", "segment"):
        n, fwd, fb, _, _ = kernels.bench_case(op, "triton", 64, 4, 16, args, torch.device("cpu"), torch.float32)
        assert n == 16 and fwd > 0 and fb > 0
    rows = kernels.sweep(args, torch.device("cpu"), torch.float32,
                         variants=[(True, "message", 16, 64, 4), (False, "edge_backward", 16, 64, 4)])
    assert [r[:2] for r in rows] == [("message", True), ("edge_backward", False)]
    from equipot.ops import triton_scatter
    assert triton_scatter.TUNING["message"]["BLOCK_C"] == 64  # restored


@pytest.mark.parametrize("limit", [0, 3, 8, 9, 11, 40])
def test_largest_water_box_search(limit):
    speed = _script("speed")
    tried = []

    def fits(n):
        tried.append(n)
        return n <= limit

    assert speed.largest_fitting(fits, start=8) == limit
    assert len(tried) <= 12
