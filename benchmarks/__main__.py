"""``python -m benchmarks``: list the entry points; ``python -m benchmarks NAME ARGS...`` runs one."""
from __future__ import annotations

import importlib
import runpy
import sys

ENTRY_POINTS = ("train_md17", "accuracy", "backbones", "symmetry", "speed", "interleaved", "md_throughput",
                "scaling", "kernels", "peers", "lammps_md", "qm9")


def main(argv: list[str]) -> int:
    if argv and argv[0] in ENTRY_POINTS:
        sys.argv = [f"benchmarks/{argv[0]}.py", *argv[1:]]
        runpy.run_module(f"benchmarks.{argv[0]}", run_name="__main__", alter_sys=True)
        return 0
    if argv and argv[0] not in ("-h", "--help"):
        print(f"unknown benchmark {argv[0]!r}", file=sys.stderr)
    print("usage: python -m benchmarks NAME [ARGS...]   (or python -m benchmarks.NAME, python benchmarks/NAME.py)\n")
    for name in ENTRY_POINTS:
        doc = importlib.import_module(f"benchmarks.{name}").__doc__ or ""
        print(f"  {name:14s} {doc.strip().splitlines()[0]}")
    return 0 if not argv or argv[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
