"""Atomic file writes: write beside the target, rename over it only when complete."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_write(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it.

    The temporary name is ``name.tmp``, or ``stem.tmp.suffix`` with ``keep_suffix`` (for
    writers that insist on an extension, such as matplotlib or ``torch.export.save``). A crash
    or a kill leaves at worst a stray ``.tmp`` file, never a half-written ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}" if keep_suffix else f"{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
