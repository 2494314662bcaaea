"""SIGINT and SIGTERM handlers installed for a while and then restored (the commands, training).

Light on purpose (no torch): ``equipot --help`` imports it.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_signals_handled(handler: Callable[[int, object], None]) -> Iterator[bool]:
    """Call ``handler(signum, frame)`` on SIGINT and SIGTERM inside the block, restoring the previous
    handlers after it. Yields False (and installs nothing) outside the main thread, where Python
    cannot catch signals."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield True
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def ignore_stop_signals() -> None:
    """Ignore SIGINT and SIGTERM from now on (until a :func:`stop_signals_handled` block restores them):
    a second Ctrl-C must not break the clean-up of the first into a traceback."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
