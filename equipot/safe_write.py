"""Files written so that nothing is ever half-written or lost: the one atomic writer, the one
output lock, and the one check for room on the disk.

- :func:`atomic_write` writes to a temporary file of its own beside the target (a unique name,
  created exclusively) and renames it over the target only when complete. A crash, a kill or a
  full disk leaves the target as it was; the temporary file is removed unless the process is
  killed outright.
- :func:`output_lock` lets one process at a time write a given output: a second one fails at
  once with one line naming the file, instead of racing the first.
- :func:`check_free_space` refuses a write that would fill the disk, before a library (HDF5)
  meets the full disk itself, which it does not survive cleanly.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Room left free beyond a write's own estimate: metadata, headers, rounding to blocks.
_FREE_MARGIN = 1 << 20


def temporary_path(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """A new, empty file beside ``path`` that belongs to the caller: ``.name.<pid>-<random>.tmp`` (or
    ``.stem.<pid>-<random>.tmp.suffix`` with ``keep_suffix``, for writers that insist on an extension),
    created exclusively so that two writers can never share it; the process id says whose it is."""
    path = Path(path)
    while True:
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        tmp = path.with_name(f".{path.stem}.{token}.tmp{path.suffix}" if keep_suffix
                             else f".{path.name}.{token}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return tmp
        except FileExistsError:
            continue


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of ``path`` (:func:`temporary_path`, without ``keep_suffix``) whose
    owner process is gone; returns them. Another output's temporary files, a live writer's, and files
    of any other name are left alone (on a shared file system a process id from another machine may
    look alive here: such a file is kept, which is the safe mistake)."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[0-9a-f]{{8}}\.tmp")
    removed = []
    for candidate in path.parent.iterdir() if path.parent.is_dir() else ():
        match = pattern.fullmatch(candidate.name)
        if match and int(match.group(1)) != os.getpid() and not _process_alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the quota) is full, whoever raised it (OSError, or the
    RuntimeError that torch.save and h5py raise with the errno in the text)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "errno = 28" in text or "file write failed" in text


def disk_full_error(path: str | os.PathLike) -> OSError:
    """The one-line error of a write to ``path`` that found the disk full."""
    path = Path(path)
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    return OSError(errno.ENOSPC, f"no space left on the device ({free / 2**20:.1f} MiB free); {path} was not "
                                 f"written and any earlier version of it is unchanged")


def check_free_space(path: str | os.PathLike, nbytes: int) -> None:
    """OSError (ENOSPC) naming ``path`` unless its file system has room for ``nbytes`` more
    bytes and a safety margin."""
    path = Path(path)
    free = shutil.disk_usage(path.parent).free
    if free < nbytes + _FREE_MARGIN:
        raise OSError(errno.ENOSPC, f"no space left on the device for {path}: about "
                                    f"{(nbytes + _FREE_MARGIN) / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free")


@contextmanager
def atomic_write(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (see :func:`temporary_path`); on success rename it
    onto ``path``, else delete it. A full disk becomes one OSError (ENOSPC) naming ``path``. A symlink
    ``path`` is written through: its target is replaced, the link stays."""
    path = Path(os.path.realpath(path))
    tmp = temporary_path(path, keep_suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise disk_full_error(path) from None
        raise


@contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the right to write ``path`` (a lock file ``.name.lock`` beside it, removed on release).

    A second process asking for the same path while the first holds it gets at once
    ``FileExistsError: <path>: another process is writing this file``. A lock file left by a
    killed process is not locked and is simply taken over.
    """
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FileExistsError(f"{path}: another process is writing this file") from None
        # The holder before us may have removed the lock file after we opened it: then our lock is
        # on an orphan, and we must lock the file that is there now.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still holding it, so no one can lock an orphan unnoticed
        os.close(fd)
