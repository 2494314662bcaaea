"""Every ```python block of the README runs as written (in a scratch directory)."""
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = compile(BLOCKS[index], f"README.md block {index}", "exec")
    exec(code, {"__name__": "__main__"})  # noqa: S102


def test_readme_commands_match_ci():
    ci = (README.parent / ".ci" / "run").read_text()
    for line in ("pip install torch==2.13.0 && pip install -e \".[dev]\"", "python -m pytest -m \"not slow\""):
        assert line in README.read_text() and line in ci, line
    assert os.access(README.parent / ".ci" / "run", os.X_OK)
