"""The namespaces mode's launcher: a process that the evaluator starts once per worker thread and
that forks a process for each test run, which enters its namespaces (jail.py) and runs the program
(child.py). A run so costs a fork instead of Python's start-up, which more than pays for setting
up and tearing down its namespaces (README, "The sandbox", has the numbers).

Started by path as `python -I -S forkserver.py SITE_DIRS VISIBLE_DIRS TMP_BYTES` with one end of
a Unix socket (SOCK_SEQPACKET) as its stdin. Each request is one message: JSON (dir, token,
timeout, cpu_seconds, memory_bytes, file_bytes) with four file descriptors attached (the run's
stdin, stdout, stderr, and the pipe for the token); the answer is JSON (returncode, timed_out).
Where the evaluator is root, it also maps nobody into each run's user namespace (jail.map_nobody).
Exits when the evaluator closes its end. The programs cannot reach it: they live in a PID namespace
of their own. Runs forked from one server share its hash seed (PYTHONHASHSEED), unlike fresh
interpreters.
"""
import json
import os
import select
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import child  # noqa: E402
import jail  # noqa: E402

del sys.path[0], sys.modules["child"], sys.modules["jail"]  # a program may not import them


def serve(channel: socket.socket, site_dirs: str, visible: list[str], tmp_bytes: int) -> None:
    while True:
        message, fds, _, _ = socket.recv_fds(channel, 1 << 16, 4)
        if not message:
            return
        request = json.loads(message)
        # where the evaluator is root, the program runs as nobody, whom only this process can map in
        ours, theirs = socket.socketpair() if os.getuid() == 0 else (None, None)
        pid = os.fork()
        if pid == 0:
            _run_child(channel, request, fds, site_dirs, visible, tmp_bytes, ours, theirs)
        for fd in fds:
            os.close(fd)
        if theirs:
            theirs.close()
        result = json.dumps(_wait(pid, request["timeout"], ours)).encode()
        try:
            channel.send(result)
        except (BrokenPipeError, ConnectionResetError):
            return  # the evaluator has gone (stopped by a signal) while the run was in progress


def _run_child(channel, request, fds, site_dirs, visible, tmp_bytes, ours, theirs) -> None:
    """In the forked process: become the run's process, as if freshly started, and never return."""
    try:
        channel.close()
        if ours:
            ours.close()
        os.chdir(request["dir"])
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds[:3]:
            os.close(fd)
        child.run(fds[3], request["token"].encode(), request["cpu_seconds"], request["memory_bytes"],
                  request["file_bytes"], site_dirs, lambda: jail.enter(visible, tmp_bytes, theirs))
    except BaseException:
        import traceback
        traceback.print_exc()  # into the run's output
    finally:
        os._exit(1)


def _wait(pid: int, timeout: float, ours) -> dict:
    """Wait for the run, mapping nobody in when it asks on `ours`; past `timeout`, kill it (its PID 1
    dies with it, and the rest with that)."""
    pidfd = os.pidfd_open(pid)
    deadline = time.monotonic() + timeout
    ready = select.select([pidfd, ours] if ours else [pidfd], [], [], timeout)[0]
    if ours:
        if ours in ready:
            jail.map_nobody(pid, ours)
            ready = select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]
        ours.close()
    timed_out = pidfd not in ready
    os.close(pidfd)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    return {"returncode": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), "timed_out": timed_out}


if __name__ == "__main__":
    with socket.socket(fileno=os.dup(0)) as channel:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        serve(channel, sys.argv[1], sys.argv[2].split(os.pathsep), int(sys.argv[3]))
