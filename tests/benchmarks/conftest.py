"""Make the repository's ``benchmarks`` package importable however pytest was started.

``python -m pytest`` puts the working directory (the repository root) on ``sys.path``; plain
``pytest`` with ``--import-mode=importlib`` does not, so the package is then registered from its
folder, without editing ``sys.path``.
"""
import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

if importlib.util.find_spec("benchmarks") is None:
    _spec = importlib.util.spec_from_file_location("benchmarks", BENCH / "__init__.py",
                                                   submodule_search_locations=[str(BENCH)])
    sys.modules["benchmarks"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["benchmarks"])
