"""Rank 0's watch over the ranks it spawned, so that a rank that stops answering fails the run with a
message naming it instead of hanging it: the model's all-reduces would otherwise wait for it for as
long as the process group's timeout (gloo: 30 minutes; NCCL may wait for ever).

Every spawned rank beats (writes the monotonic clock into its slot of a shared array) once a second
from a thread of its own, which runs while its main thread waits in a collective. While a call that
needs the other ranks runs on rank 0, a rank whose process has exited, or whose last beat is older
than SILENT_SECONDS (stopped, or stuck holding the interpreter), has stopped answering: the watchdog
kills the spawned ranks, which ends rank 0's waiting collective with an error, and the call raises
RankFailure naming the rank. If rank 0 still does not return (a collective that does not notice its
peers died), the process exits with the message after GRACE_SECONDS.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

BEAT_SECONDS = 1.0
SILENT_SECONDS = 60.0
GRACE_SECONDS = 30.0
SETTLE_SECONDS = 5.0


class RankFailure(RuntimeError):
    """A tensor-parallel rank stopped answering; the Sampler cannot go on (close it)."""


def beat(beats, rank: int) -> None:
    """In a spawned rank: beat from a daemon thread until the process ends."""
    def run():
        while True:
            beats[rank] = time.monotonic()
            time.sleep(BEAT_SECONDS)
    beats[rank] = time.monotonic()
    threading.Thread(target=run, daemon=True, name=f"tensor-parallel-beat-{rank}").start()


class Watchdog:
    def __init__(self, beats, workers: list):
        self.beats, self.workers = beats, workers  # workers[i] is rank i + 1's process
        self.failure: Optional[str] = None
        self._call: Optional[str] = None
        self._closed = False
        threading.Thread(target=self._watch, daemon=True, name="tensor-parallel-watchdog").start()

    @contextmanager
    def watching(self, call: str) -> Iterator[None]:
        """Run a call that needs every rank; RankFailure if one stops answering meanwhile."""
        if self.failure:
            raise RankFailure(self.failure)
        self._call = call
        try:
            yield
        except Exception as e:
            # a collective's error (RuntimeError) may be a rank's end not seen yet; others are the call's own
            if self.failure is None and (failure := self._settled(call) if isinstance(e, RuntimeError)
                                         else self._stopped(call)):
                self._fail(failure)
            if self.failure:
                raise RankFailure(self.failure) from e
            raise
        finally:
            self._call = None

    def _stopped(self, call: str) -> Optional[str]:
        """Why a rank has stopped answering during `call`, or None while all answer."""
        now = time.monotonic()
        for rank, worker in enumerate(self.workers, start=1):
            if not worker.is_alive():
                return f"tensor-parallel rank {rank} exited (exit code {worker.exitcode}) during {call}"
            if now - self.beats[rank] > SILENT_SECONDS:
                return (f"tensor-parallel rank {rank} stopped answering during {call}: no sign of life for "
                        f"{now - self.beats[rank]:.0f} s (stopped, or stuck holding its interpreter)")
        return None

    def _settled(self, call: str) -> Optional[str]:
        """_stopped, after the call failed: a killed rank's sockets close before its process is seen
        to exit, so give that a moment (SETTLE_SECONDS) before taking the error as the call's own."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while (failure := self._stopped(call)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return failure

    def _fail(self, failure: str) -> None:
        """The run cannot go on: stop every spawned rank (those left wait on the one that stopped)."""
        self.failure = failure + "; the other ranks were stopped"
        for worker in self.workers:
            worker.kill()

    def close(self) -> None:
        self._closed = True

    def _watch(self) -> None:
        while self.failure is None and not self._closed:
            time.sleep(BEAT_SECONDS)
            call = self._call
            failure = call and self._stopped(call)
            if not failure:
                continue
            self._fail(failure)
            deadline = time.monotonic() + GRACE_SECONDS
            while self._call is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self._call is not None:  # rank 0 is still waiting in a collective that cannot end
                os.write(2, f"error: {self.failure}; exiting\n".encode())
                os._exit(1)
