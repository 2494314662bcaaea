"""A lazy, pickle-free reader of NumPy ``.npz`` archives: array headers first, rows on demand.

The (r)MD17 converters stream their trajectories through it a block of frames at a time, so a
1M-frame file converts in bounded memory.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Self


class NpzFile:
    """Lazy reader of a NumPy ``.npz`` archive: headers first, rows on demand.

    Never unpickles (``allow_pickle=False``). Errors name the file and the key.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file")
        if not zipfile.is_zipfile(self.path):
            with open(self.path, "rb") as fh:
                zip_magic = fh.read(2) == b"PK"
            if zip_magic:
                raise ValueError(f"{self.path}: truncated or corrupt .npz file (zip directory unreadable)")
            raise ValueError(f"{self.path}: not an .npz file (not a zip archive)")
        try:
            self._zip = zipfile.ZipFile(self.path)
            names = self._zip.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"{self.path}: corrupt .npz file ({exc})") from None
        self.keys = [n[:-4] for n in names if n.endswith(".npy")]
        self._headers: dict[str, tuple[tuple, bool, np.dtype]] = {}

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def _open(self, key: str):
        if key not in self.keys:
            raise ValueError(f"{self.path}: missing key '{key}' (keys in the file: {', '.join(self.keys)})")
        fp = self._zip.open(key + ".npy")
        try:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(fp)
            else:
                header = np.lib.format._read_array_header(fp, version)
        except (ValueError, OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            fp.close()
            raise ValueError(f"{self.path}: key '{key}' is not a valid array ({exc})") from None
        return fp, header

    def header(self, key: str) -> tuple[tuple, np.dtype]:
        """``(shape, dtype)`` of an array without reading it."""
        if key not in self._headers:
            fp, header = self._open(key)
            fp.close()
            self._headers[key] = header
        shape, _, dtype = self._headers[key]
        return tuple(shape), dtype

    def read(self, key: str) -> np.ndarray:
        """The whole array (use for small arrays and metadata)."""
        fp, (shape, fortran, dtype) = self._open(key)
        try:
            if dtype.hasobject:
                raise ValueError(f"{self.path}: key '{key}' holds Python objects; refusing to unpickle it")
            count = int(np.prod(shape))
            data = fp.read(count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise ValueError(f"{self.path}: key '{key}' is truncated")
            fp.read(1)  # reaching the end makes zipfile verify the member's CRC
            arr = np.frombuffer(data, dtype=dtype, count=count)
            return arr.reshape(shape, order="F" if fortran else "C").copy()
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise ValueError(f"{self.path}: key '{key}' cannot be read, corrupt file ({exc})") from None
        finally:
            fp.close()

    def read_str(self, key: str) -> str | None:
        """A string metadata entry, or None if absent or not a plain string array."""
        if key not in self.keys:
            return None
        try:
            value = self.read(key)
        except ValueError:
            return None
        if value.dtype.kind not in "US":
            return None
        value = value.reshape(-1)[0] if value.size else ""
        return value.decode() if isinstance(value, bytes) else str(value)

    def iter_rows(self, key: str, chunk: int, limit: int | None = None) -> Iterator[np.ndarray]:
        """Yield consecutive blocks of at most ``chunk`` rows (first axis) of ``key``."""
        fp, (shape, fortran, dtype) = self._open(key)
        try:
            if dtype.hasobject:
                raise ValueError(f"{self.path}: key '{key}' holds Python objects; refusing to unpickle it")
            n = shape[0] if shape else 1
            if limit is not None:
                n = min(n, limit)
            if fortran and len(shape) > 1:
                fp.close()
                arr = self.read(key)
                for a in range(0, n, chunk):
                    yield arr[a:min(a + chunk, n)]
                return
            row_shape = tuple(shape[1:])
            row_bytes = int(np.prod(row_shape)) * dtype.itemsize
            for a in range(0, n, chunk):
                rows = min(chunk, n - a)
                data = fp.read(rows * row_bytes)
                if len(data) != rows * row_bytes:
                    frame = a + len(data) // max(row_bytes, 1)
                    raise ValueError(f"{self.path}: key '{key}' is truncated (frame {frame})")
                if a + rows >= n and limit is None:
                    fp.read(1)  # reaching the end makes zipfile verify the member's CRC
                yield np.frombuffer(data, dtype=dtype).reshape((rows,) + row_shape)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise ValueError(f"{self.path}: key '{key}' cannot be read, corrupt file ({exc})") from None
        finally:
            fp.close()


def npz_keys(path: str | os.PathLike) -> list[str]:
    """Array names in an ``.npz`` file (reads only the zip directory)."""
    with NpzFile(path) as npz:
        return list(npz.keys)
