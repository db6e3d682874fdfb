"""Faults that a run must survive: `budget-sampler eval` as a subprocess on a slice of the toy ladder, killed
(SIGKILL, SIGTERM) at seeded random moments of drawing, test execution, ranking and the report and resumed
after each; a read-only run directory; a disk that fills while `generate --out` writes. The run finally
completed must equal an uninterrupted one: every row once, none missing, the same report.

A moment is "the run has at least T rows (T seeded within its stage's rows, and past what the process
started with), then a seeded delay of up to 20 ms"; in the report, whose files are written whole, and for
a moment whose rows a stop before went past: "the process rewrote problems.jsonl (its plan is done), then a
seeded share (up to 0.6) of the time an uninterrupted rerun spends after that".
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from budget_sampler import cli
from budget_sampler.eval import signals

MODELS = ("toy-xs", "toy-s")
CMD = [sys.executable, "-m", "budget_sampler.cli", "eval", "--models", ",".join(MODELS), "--limit", "6", "--n", "2",
       "--ranker", "toy-s", "--budget", "flops", "--timeout", "3", "--workers", "2"]
STAGES = {"draw": [f"{m}/{s}.jsonl" for m in MODELS for s in ("greedy", "samples")],
          "execute": [f"{m}/{s}_results.jsonl" for m in MODELS for s in ("greedy", "samples")],
          "rank": ["toy-xs/rank_toy-s.jsonl"]}
KEYED = [f for files in STAGES.values() for f in files]
MOMENTS = {"draw": (7, 1), "execute": (6, 1), "rank": (3, 1), "report": (4, 1)}  # (SIGKILL, SIGTERM) per stage
TIMED = ("seconds", "logprob", "mean_logprob")  # a row's fields that depend on its batch (see test_eval_run)
MESSAGE = "interrupted: rerun the same command to resume\n"


def start(out, err):
    return subprocess.Popen(CMD + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=err)


def lines(path):
    """The whole lines of a file (a SIGKILL may tear the last)."""
    return path.read_text().splitlines(keepends=True) if path.is_file() else []


def progress(out, stage):
    return sum(line.endswith("\n") for f in STAGES[stage] for line in lines(out / f))


def keyed(path, torn_ok=False):
    """Rows by (task_id, index); each key once, every line whole (but a torn last one if `torn_ok`)."""
    rows = lines(path)
    if torn_ok and rows and not rows[-1].endswith("\n"):
        rows = rows[:-1]
    assert all(line.endswith("\n") for line in rows), f"{path}: a torn row"
    parsed = [json.loads(line) for line in rows]
    out = {(r["task_id"], r["index"]): r for r in parsed}
    assert len(out) == len(parsed), f"{path}: a row appended twice"
    return out


def report(out):
    """report.json without what depends on measured time or the machine (versions, hardware, efficiency)."""
    r = json.loads((out / "report.json").read_text())
    for m in r["models"].values():
        for k in ("seconds_per_sample", "tokens_per_second", "kv_cache"):
            m.pop(k)
    return {k: v for k, v in r.items() if k not in ("versions", "hardware", "efficiency")}


def assert_same_run(out, ref):
    for f in KEYED:
        got, want = keyed(out / f), keyed(ref / f)
        assert got.keys() == want.keys(), f"{f}: rows missing or extra"
        for key, row in want.items():
            assert {k: v for k, v in got[key].items() if k not in TIMED} == \
                {k: v for k, v in row.items() if k not in TIMED}, f"{f} {key}"
            for k in set(TIMED) & set(row) - {"seconds"}:
                assert got[key][k] == pytest.approx(row[k], abs=1e-3), f"{f} {key} {k}"
    cache = [json.loads(line)["key"] for line in lines(out / "exec_cache.jsonl")]
    assert len(cache) == len(set(cache)), "a program's result cached twice"
    assert report(out) == report(ref)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, each stage's row count, and how long a rerun of it takes after its plan."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert subprocess.run(CMD + ["--out", str(out)], stdout=subprocess.DEVNULL).returncode == 0
    began = time.time_ns()
    proc = start(out, subprocess.DEVNULL)
    planned = wait_for(proc, lambda: (out / "problems.jsonl").stat().st_mtime_ns >= began)
    assert proc.wait() == 0
    return out, {stage: progress(out, stage) for stage in STAGES}, time.perf_counter() - planned


def wait_for(proc, reached) -> float:
    while proc.poll() is None and not reached():
        time.sleep(0.002)
    return time.perf_counter()


def moments(rng, rows):
    """(signal, a row count to wait for (None in the report), a share of the report time, a delay), the row
    counts over all stages in their order, each stage's drawn from its own rows."""
    out, before = [], 0
    for stage, (kills, terms) in MOMENTS.items():
        sigs = [signal.SIGKILL] * kills + [signal.SIGTERM] * terms
        rng.shuffle(sigs)
        targets = [None] * len(sigs) if stage == "report" else \
            sorted(rng.sample(range(before + 1, before + rows[stage] + 1), len(sigs)))
        out += [(sig, target, rng.uniform(0, 0.6), rng.uniform(0, 0.02)) for sig, target in zip(sigs, targets)]
        before += rows.get(stage, 0)
    return out


def done(out):
    return sum(progress(out, stage) for stage in STAGES)


def test_killed_at_random_moments_and_resumed_it_equals_an_uninterrupted_run(reference, tmp_path):
    ref, rows, after_plan = reference
    out, err = tmp_path / "out", tmp_path / "stderr"
    began = time.perf_counter()
    landed = []  # the stage each stop came in
    for sig, target, share, delay in moments(random.Random(0), rows):
        started = time.time_ns()
        with open(err, "wb") as f:
            proc = start(out, f)
            if target is not None and done(out) < sum(rows.values()):  # past what the process starts with
                target = max(target, done(out) + 1)
                wait_for(proc, lambda: done(out) >= target)
                time.sleep(delay)
            else:  # every row is there (a stop may go past its stage's moments): the report
                wait_for(proc, lambda: (out / "problems.jsonl").is_file() and
                         (out / "problems.jsonl").stat().st_mtime_ns >= started)
                time.sleep(share * after_plan)
            landed.append(next((s for s in STAGES if progress(out, s) < rows[s]), "report"))
            proc.send_signal(sig)
            rc = proc.wait(timeout=120)
        if sig == signal.SIGKILL:
            assert rc == -signal.SIGKILL, f"{landed[-1]}: the run ended before its kill (exit {rc})"
        else:
            assert rc == 143, f"{landed[-1]}: SIGTERM gave exit {rc}: {err.read_text()[-2000:]}"
            assert err.read_text().endswith(MESSAGE)
        for f in KEYED:
            keyed(out / f, torn_ok=sig == signal.SIGKILL)  # valid and without duplicates after every stop
    stopped = time.perf_counter() - began
    assert subprocess.run(CMD + ["--out", str(out)], stdout=subprocess.DEVNULL).returncode == 0
    assert_same_run(out, ref)
    assert set(landed) == {*STAGES, "report"}
    print(f"{len(landed)} stops in {stopped:.0f} s, by stage: { {s: landed.count(s) for s in (*STAGES, 'report')} }")


def test_a_read_only_run_dir_is_one_error_and_the_rerun_resumes(reference, tmp_path):
    ref, rows, _ = reference
    out = tmp_path / "out"
    proc = start(out, subprocess.DEVNULL)
    wait_for(proc, lambda: progress(out, "draw") >= rows["draw"] // 2)
    proc.kill()
    proc.wait()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for p in [out, *out.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    # root writes anyway: drop the capabilities that let it (util-linux setpriv)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    if drop and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only directory is writable")
    r = subprocess.run(drop + CMD + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    assert r.returncode == 2
    assert r.stderr.startswith(f"budget-sampler eval: error: cannot write {out}") and r.stderr.count("\n") == 1
    assert "Permission denied" in r.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    for p in [out, *out.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    assert subprocess.run(CMD + ["--out", str(out)], stdout=subprocess.DEVNULL).returncode == 0
    assert_same_run(out, ref)


GENERATE = ["generate", "--model", "toy-xs", "--prompt", "def f(xs):\n", "-n", "4", "--max-new-tokens", "8",
            "--seed", "0"]


def test_a_full_disk_leaves_no_partial_output(tmp_path, monkeypatch, capsys):
    def full(fd):
        raise OSError(28, os.strerror(28))
    monkeypatch.setattr(os, "fsync", full)  # the last step of a whole-file write before its rename
    out = tmp_path / "samples.jsonl"
    assert cli.main([*GENERATE, "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after its progress bar
    assert err.startswith(f"budget-sampler generate: error: cannot write {out}: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_generate_leaves_no_partial_output(tmp_path):
    out = tmp_path / "samples.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "budget_sampler.cli", *GENERATE[:-6], "-n", "64", "--max-new-tokens",
                             "400", "--ignore-eos", "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = b""
    while b"generate:" not in err and (byte := proc.stderr.read(1)):  # its progress bar: drawing
        err += byte
    proc.send_signal(signal.SIGTERM)
    err += proc.communicate(timeout=60)[1]
    assert proc.returncode == 143 and b"interrupted\n" in err  # the progress bar, left open, ends it at exit
    assert list(tmp_path.iterdir()) == []


SLOW_CLEANUP = """
import time
from budget_sampler.eval.signals import interruptible
with interruptible():
    try:
        print("running", flush=True)
        time.sleep(60)
    finally:
        print("cleaning up", flush=True)
        time.sleep(60)
"""


def test_a_second_signal_exits_at_once():
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLEANUP], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "running\n"  # the handlers are in place (imports take seconds)
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline() == "cleaning up\n"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130


def test_a_signal_while_rows_are_in_hand_waits_for_them(monkeypatch):
    written = []
    with signals.interruptible():
        with pytest.raises(KeyboardInterrupt):
            with signals.held():
                signal.raise_signal(signal.SIGTERM)
                written.append("the rest of the item")
        assert signals.exit_code() == 143
    assert written == ["the rest of the item"]
