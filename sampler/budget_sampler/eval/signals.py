"""SIGINT and SIGTERM stop a command the way Ctrl-C does, by a KeyboardInterrupt in the main thread, so that
every `with` and `finally` on the way out runs: rows are appended whole or not at all (budget_sampler/jsonl.py), an
item's rows in hand are written first (`held`), files are closed, engines, Ray actors and sandbox workers are
stopped; the CLI then exits 128 + the signal's number. A second signal exits at once, for a cleanup that hangs.

Without this, SIGTERM would kill the process where it stands (or, once Ray is connected, exit it through
Ray's own handler) and skip all of that.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Thread(threading.local):
    holding = 0  # `held` blocks open in this thread
    pending: Optional[int] = None  # a signal that came during them


_thread = _Thread()
_received: Optional[int] = None  # the first signal since `interruptible` began


def _handle(signum: int, frame) -> None:
    global _received
    if _received is not None:
        os.write(2, f"{signal.Signals(signum).name} again: exiting at once\n".encode())
        os._exit(128 + signum)
    _received = signum
    if _thread.holding:
        _thread.pending = signum
    else:
        raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM raise KeyboardInterrupt (where the main thread runs it;
    elsewhere the block runs as it is)."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received = None
    old = {s: signal.signal(s, _handle) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def exit_code() -> int:
    """128 + the signal that stopped the block (a KeyboardInterrupt that was no signal of ours: SIGINT's)."""
    return 128 + (_received or signal.SIGINT)


@contextmanager
def held() -> Iterator[None]:
    """Rows in hand are written whole: a signal that comes during the block takes effect as it ends."""
    _thread.holding += 1
    try:
        yield
    finally:
        _thread.holding -= 1
        if not _thread.holding and _thread.pending is not None:
            signum, _thread.pending = _thread.pending, None
            raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def kept() -> Iterator[None]:
    """Keep these handlers through a library's setup that replaces them (ray.init makes SIGTERM a bare
    sys.exit, which Ray's own code, unlike KeyboardInterrupt, does not clean up after)."""
    old = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for s, handler in old.items():
                if handler is not None:
                    signal.signal(s, handler)
