"""The namespaces sandbox, from inside: child.py calls enter() before it runs the program, and
enter() puts the process in new user, PID, mount, network, IPC and UTS namespaces, gives it a file
system of its own, gives up the powers it used to build it, and returns in the process that runs
the program, whose namespace dies with it.

Inside, the program sees the system and Python directories read-only, a /proc of its own PID
namespace, the harmless /dev nodes, and a private size-limited /tmp that holds its directory (the
same path as outside when the evaluator's temporary directory is /tmp); nothing else (no home
directories, no run directory, no sockets under /run), and no network device but a loopback that
is down. The old root is detached with pivot_root (a chroot can be escaped), and all capabilities
are dropped, so the program, root of its user namespace, cannot remount, unmount or mount anything.
Unprivileged user namespaces are all it needs: no root, no setuid helper, no daemon. Imports only
the standard library (child.py is started with -I -S).

A run has at most PROCESSES processes and threads at once (RLIMIT_NPROC, which since Linux 5.14
counts those of each user namespace apart, nested ones included, and which the program cannot
raise), so a fork bomb stops there. Root is exempt from it, so where the evaluator is root the
program runs as nobody, both inside and outside.
"""
import ctypes
import errno
import os
import re
import resource
import socket

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x1000, 0x2000, 0x4000, 0x40000
MNT_DETACH, AT_FDCWD, AT_RECURSIVE = 0x2, -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
SIGKILL = 9
CAPABILITY_VERSION_3 = 0x20080522
SYSCALLS = {"x86_64": {"pivot_root": 155, "mount_setattr": 442},  # no glibc wrappers for these
            "aarch64": {"pivot_root": 41, "mount_setattr": 442}}
DEVICES = ("null", "zero", "full", "random", "urandom")
HOLD = "/.held"  # in the new root: where visible directories under /tmp wait for the private /tmp
PROCESSES = 64  # a run's processes and threads at once (RLIMIT_NPROC), the sandbox's own 1 or 2 included
NOBODY = 65534  # who runs the program when the evaluator is root, whom RLIMIT_NPROC does not bound

libc = ctypes.CDLL(None, use_errno=True)


def _call(what: str, result: int) -> None:
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _mount(source: str, target: str, fstype=None, flags: int = 0, data=None) -> None:
    _call(f"mount {target}", libc.mount(source.encode(), target.encode(), fstype and fstype.encode(),
                                        ctypes.c_ulong(flags), data and data.encode()))


def _syscall(name: str, *args) -> None:
    machine = os.uname().machine
    if machine not in SYSCALLS:
        raise OSError(f"no system call numbers for {machine}")
    _call(name, libc.syscall(SYSCALLS[machine][name], *args))


def processes_unbounded() -> str | None:
    """Why RLIMIT_NPROC cannot bound a run's processes here, or None. Before Linux 5.14 it counted all
    of the user's processes, the evaluator's included; since, those of each user namespace apart."""
    release = os.uname().release
    if tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", release).groups()) < (5, 14):
        return f"Linux {release} counts RLIMIT_NPROC per user, not per user namespace (5.14+)"
    return None


def enter(visible: list[str], tmp_bytes: int, outside: socket.socket | None) -> None:
    """Isolate this process (see above) and return in the one that is to run the program. `outside`:
    where the evaluator is root, a socket to the fork server, which maps nobody in (map_nobody)."""
    _unshare(outside)
    if processes_unbounded() is None:  # only now: set outside, it would bound this user's processes there
        resource.setrlimit(resource.RLIMIT_NPROC, (PROCESSES, PROCESSES))
    _build_root(visible, tmp_bytes)
    _drop_capabilities(as_nobody=outside is not None)
    os.setsid()  # a process group of its own: kill(0, ...) must not reach the process outside
    _fork_and_wait()  # the program is not PID 1: init ignores the signals it gets from inside


def _unshare(outside: socket.socket | None) -> None:
    """New namespaces; returns in PID 1 of the new PID namespace (only children enter it)."""
    uid, gid = os.getuid(), os.getgid()
    _call("unshare", libc.unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET
                                  | CLONE_NEWIPC | CLONE_NEWUTS))
    if outside:
        outside.send(b"u")
        if outside.recv(1) != b"m":
            raise OSError("the fork server could not map nobody into the user namespace")
        outside.close()
    else:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:  # root inside stands for this user outside
                f.write(text)
    _mount("none", "/", flags=MS_REC | MS_PRIVATE)  # nothing done here propagates outside
    _fork_and_wait()
    _call("parent death signal", libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0))  # the evaluator kills the parent


def map_nobody(pid: int, inside: socket.socket) -> None:
    """In the fork server, once run `pid` says it has made its user namespace: map root there to root
    outside, as it would itself, and nobody to nobody, which only a process outside with CAP_SETUID may."""
    if inside.recv(1) != b"u":
        return  # it ended before
    try:
        for name, id_ in (("uid_map", os.getuid()), ("gid_map", os.getgid())):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"0 {id_} 1\n{NOBODY} {NOBODY} 1")
        inside.send(b"m")
    except OSError:
        pass  # it ended, or the maps were refused: without an answer, it fails saying so


def _fork_and_wait() -> None:
    """Return in a child; the parent waits for it and exits with its status (128 + signal if killed)."""
    pid = os.fork()
    if pid == 0:
        return
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    os._exit(code if code >= 0 else 128 - code)


def _build_root(visible: list[str], tmp_bytes: int) -> None:
    """Build the new root on the program's directory outside (the cwd) and move into it."""
    new = os.getcwd()
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    # directories under /tmp (a virtual environment there) would be hidden by the private /tmp:
    # they wait at HOLD/<i> and are moved into it once it is mounted
    in_tmp = [path for path in visible if path.startswith("/tmp/")]
    for i, path in enumerate(in_tmp):
        os.makedirs(f"{new}{HOLD}/{i}")
        _mount(path, f"{new}{HOLD}/{i}", flags=MS_BIND | MS_REC)
    for path in visible:
        if path in in_tmp:
            continue
        os.makedirs(os.path.dirname(new + path), exist_ok=True)
        if os.path.islink(path):  # /bin -> usr/bin on merged-/usr systems
            os.symlink(os.readlink(path), new + path)
        else:
            os.mkdir(new + path)
            _mount(path, new + path, flags=MS_BIND | MS_REC)
    os.mkdir(new + "/dev")
    for name in DEVICES:
        open(f"{new}/dev/{name}", "x").close()
        _mount(f"/dev/{name}", f"{new}/dev/{name}", flags=MS_BIND)
    os.mkdir(new + "/tmp")
    os.mkdir(new + "/proc")  # mounted while the host's /proc is still visible, as the kernel requires
    _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(new)
    _syscall("pivot_root", b".", b".")  # the old root is now stacked on the new one: detach it
    _call("umount old root", libc.umount2(b".", MNT_DETACH))
    os.chdir("/")
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)  # set, clear, propagation, userns
    _syscall("mount_setattr", AT_FDCWD, b"/", AT_RECURSIVE, attr, ctypes.sizeof(attr))
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_bytes},mode=1777")
    for i, path in enumerate(in_tmp):  # read-only already: the recursive setattr reached them
        os.makedirs(path)
        _mount(f"{HOLD}/{i}", path, flags=MS_MOVE)
    home = "/tmp/" + os.path.basename(new)
    os.mkdir(home)
    os.chdir(home)
    os.environ.update(HOME=home, TMPDIR=home)


def _drop_capabilities(as_nobody: bool) -> None:
    """None left, none gained by a later exec (empty bounding set), no setuid gains; `as_nobody`,
    become nobody, whose processes RLIMIT_NPROC counts (root's it does not)."""
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    if ctypes.get_errno() != errno.EINVAL:  # EINVAL: past the last capability
        _call("drop the capability bounding set", -1)
    _call("no_new_privs", libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    if as_nobody:
        os.chown(os.getcwd(), NOBODY, NOBODY)  # its home
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        # a change of user clears these: its own /proc/self readable; death with the process outside
        _call("dumpable", libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))
        _call("parent death signal", libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0))
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; two 32-bit words
    _call("capset", libc.capset(header, data))
