"""The Triton kernels compile for a real GPU target (sm_90) without a GPU.

The interpreter accepts code the compiler rejects (types, shapes, loop-carried values), so
the CPU-only CI also lowers each kernel to a cubin with triton's bundled ptxas. It runs in
a subprocess without TRITON_INTERPRET, since the interpreter is chosen when triton is imported.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from equipot.ops import triton_kernels as ts

    target = GPUTarget("cuda", 90, 32)

    def compile_(fn, types, consts, num_warps=8):
        sig = {a: ("constexpr" if a in consts else types.get(a, "i32")) for a in fn.arg_names}
        triton.compile(ASTSource(fn, sig, consts), target=target, options={"num_warps": num_warps})
        print("compiled", fn.__name__, consts.get("ACC"), consts.get("USE_DOT"), consts.get("TF32"))

    compile_(ts._segment_sum_kernel, {"src_ptr": "*fp32", "ptr_ptr": "*i64", "out_ptr": "*fp32"},
             {"BLOCK_E": 16, "BLOCK_F": 128, "ACC": tl.float32}, 4)
    compile_(ts._segment_expand_kernel, {"g_ptr": "*fp64", "ptr_ptr": "*i64", "out_ptr": "*fp64"},
             {"BLOCK_E": 16, "BLOCK_F": 128}, 4)
    compile_(ts._scatter_add_kernel, {"src_ptr": "*fp32", "index_ptr": "*i64", "out_ptr": "*fp32"},
             {"BLOCK_E": 16, "BLOCK_F": 128}, 4)
    for dt, acc, dot, tf32 in (("fp32", tl.float32, True, False), ("fp32", tl.float32, True, True),
                               ("fp64", tl.float64, False, False)):
        ptrs = {"phi_ptr": f"*{dt}", "w_ptr": f"*{dt}", "x_ptr": f"*{dt}", "ptr_ptr": "*i64",
                "perm_ptr": "*i64", "nbr_ptr": "*i64", "out_ptr": f"*{dt}"}
        compile_(ts._csr_message_kernel, ptrs, {"HAS_PERM": True, "BLOCK_E": 2, "BLOCK_O": 8, "ROWS": 16, "BLOCK_B": 16,
                                                "BLOCK_C": 64, "ACC": acc, "USE_DOT": dot, "TF32": tf32})
        ptrs = {"phi_ptr": f"*{dt}", "w_ptr": f"*{dt}", "h_ptr": f"*{dt}", "g_ptr": f"*{dt}", "send_ptr": "*i64",
                "recv_ptr": "*i64", "gphi_ptr": f"*{dt}", "gw_ptr": f"*{dt}"}
        compile_(ts._edge_backward_kernel, ptrs, {"GPHI": True, "GW": True, "ATOMIC_GPHI": dot, "BLOCK_E": 2,
                                                  "BLOCK_O": 8, "ROWS": 16, "BLOCK_B": 16, "BLOCK_C": 64, "ACC": acc,
                                                  "USE_DOT": dot, "TF32": tf32})
''')


def _triton_version() -> tuple[int, ...]:
    import importlib.metadata

    return tuple(int(x) for x in importlib.metadata.version("triton").split(".")[:2])


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_kernels_compile_for_sm90():
    if _triton_version() < (3, 7):
        pytest.skip("the ahead-of-time compile API used here is that of triton >= 3.7")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences a triton 3.9 notice
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "ptxas" in proc.stderr and "not found" in proc.stderr.lower():
        pytest.skip("triton's bundled ptxas is missing")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("compiled") == 9
