"""Data parallel on Ray (budget_sampler/eval/distributed.py): `eval --data-parallel 2` on a local Ray
cluster of 2 CPU actors against one process, on a slice of the shipped toy ladder and suite.

Compared: the samples and greedy samples as sets of (task_id, index, completion), and the report's
numbers that do not depend on measured time. Left out: seconds per sample, tokens/s and the
seconds budget (engine seconds differ between two runs of one process, too), and the KV cache
peak (each actor's engine peaks at its own work items, one process's at the whole draw).
Ray is in the test extra: these tests run wherever the suite does.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import ray

from budget_sampler import cli
from budget_sampler.api import LoadOptions
from budget_sampler.cli import eval as eval_cli
from budget_sampler.errors import InvalidInput
from budget_sampler.eval import distributed, run
from budget_sampler.eval.records import SampleSet
from budget_sampler.params import GenerationStats, SamplingParams

# toy-xs draws 9 (paper FLOPs), then 20: what 3 samples of toy-s buy it in eFLOPs (deterministic, unlike seconds)
SLICE = ("--models", "toy-xs,toy-s", "--limit", 6, "--n", 3, "--max-new-tokens", 48, "--budget", "eflops")
MODELS = ("toy-xs", "toy-s")
TIMED = ("seconds_per_sample", "tokens_per_second", "kv_cache")


def args(*argv):
    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    return parser.parse_args(["--timeout", "2", "--workers", "2", *map(str, argv)])


def lines(out, model, stem):
    path = out / run.model_dir(".", model).name / f"{stem}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def drawn(out):
    """Per model and kind, the (task_id, index, completion) of every row; each key must be there once."""
    sets = {}
    for model in MODELS:
        for stem in ("samples", "greedy"):
            rows = lines(out, model, stem)
            keys = [(r["task_id"], r["index"]) for r in rows]
            assert len(keys) == len(set(keys)), f"{model} {stem}: a sample appended twice"
            sets[model, stem] = {(r["task_id"], r["index"], r["completion"]) for r in rows}
    return sets


def numbers(out):
    """report.json without what depends on measured time (see the module docstring)."""
    report = json.loads((out / "report.json").read_text())
    models = {name: {k: v for k, v in m.items() if k not in TIMED} for name, m in report["models"].items()}
    return models, [b for b in report["budgets"] if b["kind"] != "time"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one-process") / "out"
    assert eval_cli.main(args(*SLICE, "--out", out)) == 0
    assert len(lines(out, "toy-xs", "samples")) == 6 * 20
    return out


def test_two_actors_draw_what_one_process_draws_and_resume(one_process, tmp_path):
    out = tmp_path / "out"
    assert eval_cli.main(args(*SLICE, "--out", out, "--data-parallel", 2)) == 0
    assert not ray.is_initialized()  # the local cluster it started is shut down
    assert drawn(out) == drawn(one_process)
    assert numbers(out) == numbers(one_process)
    engine = lines(out, "toy-s", "engine")
    assert len(engine) == 1 and engine[0]["data_parallel"] == 2 and engine[0]["engines_lost"] == 0
    assert engine[0]["generated_tokens"] == sum(r["num_tokens"] for r in
                                                lines(out, "toy-s", "samples") + lines(out, "toy-s", "greedy"))

    # killed mid-draw of toy-s: its last rows never written, one torn; the rerun draws just those
    path = out / "toy-s" / "samples.jsonl"
    kept = path.read_text().splitlines(keepends=True)[:-8]
    path.write_text("".join(kept) + '{"task_id": "toy/')
    assert eval_cli.main(args(*SLICE, "--out", out, "--data-parallel", 2)) == 0
    assert drawn(out) == drawn(one_process)
    assert len(lines(out, "toy-xs", "engine")) == 2  # its draw and its top-up; nothing missing now: no draw
    again = lines(out, "toy-s", "engine")[1]
    assert again["generated_tokens"] == sum(r["num_tokens"] for r in lines(out, "toy-s", "samples")[len(kept):])
    assert numbers(out) == numbers(one_process)


def test_a_killed_actor_loses_nothing(one_process, tmp_path, monkeypatch):
    submit, calls = distributed._submit, []

    def submit_then_kill(actor, item):  # the actor dies with the third item in flight
        ref = submit(actor, item)
        calls.append(item)
        if len(calls) == 3:
            ray.kill(actor)
        return ref
    monkeypatch.setattr(distributed, "_submit", submit_then_kill)
    out = tmp_path / "out"
    assert eval_cli.main(args(*SLICE, "--out", out, "--data-parallel", 2)) == 0
    assert drawn(out) == drawn(one_process)
    assert lines(out, "toy-xs", "engine")[0]["engines_lost"] == 1
    assert calls.count(calls[2]) == 2  # the lost item was drawn again
    assert numbers(out) == numbers(one_process)


def test_a_hung_actor_is_killed_and_replaced_and_loses_nothing(one_process, tmp_path):
    marker = str(tmp_path / "hung")

    def load_sampler(path):  # runs in the actors: the first sampled item drawn anywhere never ends
        sampler = LoadOptions().load(path)
        stream = sampler.stream

        def stream_or_hang(prompts, params):
            if any(p.n > 1 for p in params):
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    pass
                else:
                    time.sleep(3600)
            return stream(prompts, params)
        sampler.stream = stream_or_hang
        return sampler
    out = tmp_path / "out"
    began = time.perf_counter()
    assert run.main(eval_cli.config(args(*SLICE, "--out", out, "--data-parallel", 2, "--item-timeout", 10)),
                    load_sampler) == 0
    assert time.perf_counter() - began < 600  # the hung actor sleeps an hour: it was killed, not waited for
    assert os.path.exists(marker)
    assert drawn(out) == drawn(one_process)
    assert lines(out, "toy-xs", "engine")[0]["engines_lost"] == 1
    assert lines(out, "toy-s", "engine")[0]["engines_lost"] == 0
    assert numbers(out) == numbers(one_process)


def test_sigterm_stops_the_actors_and_the_rerun_resumes(one_process, tmp_path):
    """Ray's init makes SIGTERM a bare exit of its own; eval keeps it an interrupt that unwinds."""
    out = tmp_path / "out"
    argv = ["--timeout", "2", "--workers", "2", *map(str, SLICE), "--out", str(out), "--data-parallel", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "budget_sampler.cli", "eval", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (out / "toy-xs" / "samples.jsonl").is_file():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.endswith("interrupted: rerun the same command to resume\n")
    assert len(lines(out, "toy-xs", "samples")) < 6 * 20
    assert eval_cli.main(args(*SLICE, "--out", out)) == 0  # in one process: the samples do not depend on N
    assert drawn(out) == drawn(one_process)


def test_an_items_deadline_follows_its_size_and_the_measured_rate():
    cluster = distributed.Cluster(data_parallel=2, resources={}, max_batch_size=256)
    assert cluster.item_deadline(100, None) == distributed.FIRST_ITEM_SECONDS  # nothing measured yet
    assert cluster.item_deadline(100, 0.001) == distributed.ITEM_SECONDS_FLOOR
    assert cluster.item_deadline(10_000, 1.0) == distributed.ITEM_SECONDS_FACTOR * 10_000
    assert distributed.Cluster(2, {}, 256, item_timeout=7.5).item_deadline(10_000, 1.0) == 7.5


@pytest.mark.parametrize("argv, message", [
    (["--data-parallel", 0], r"data_parallel=0 is invalid: must be an integer >= 1"),
    (["--data-parallel", 2, "--until-pass"], "--until-pass is not supported with --data-parallel 2"),
    (["--ray-address", "auto", "--until-pass"], "--until-pass is not supported with --ray-address auto"),
    (["--data-parallel", 2, "--device", "cuda:1"], r"--device 'cuda:1' with --data-parallel 2: give 'cpu' or 'cuda'"),
    (["--ray-address", "127.0.0.1:1"], r"--ray-address '127.0.0.1:1': nothing answers at 127.0.0.1:1"),
    (["--data-parallel", 2, "--item-timeout", 0], r"item_timeout=0.0 is invalid: must be > 0 seconds"),
    (["--item-timeout", 5], r"--item-timeout 5.0 is for the Ray actors of --data-parallel N or --ray-address"),
])
def test_bad_flags_are_one_error_and_write_nothing(tmp_path, argv, message):
    out = tmp_path / "out"
    with pytest.raises(InvalidInput, match=message):
        eval_cli.main(args(*SLICE, "--out", out, *argv))
    assert not out.exists()


def test_without_ray_the_flag_fails_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    out = tmp_path / "out"
    assert cli.main(["eval", *map(str, SLICE), "--out", str(out), "--data-parallel", "2"]) == 2
    err = capsys.readouterr().err
    assert err == ("budget-sampler eval: error: --data-parallel 2 needs Ray, which is not installed: "
                   "pip install -e '.[ray]'\n")
    assert not out.exists()


def test_an_error_raised_in_an_actor_is_raised_as_itself(tmp_path):
    def load_sampler(path):  # runs in the actor (a hub id that its node cannot resolve, say)
        raise InvalidInput(f"model {path!r} not found")
    problems = [{"task_id": "T/0", "prompt": "def f(x):\n"}]
    jobs = [(SamplingParams(n=2, max_new_tokens=4), SampleSet(tmp_path, "samples"))]
    with distributed.connect(1, 1, None, "cpu", 256) as cluster:
        with pytest.raises(InvalidInput, match="model 'nope' not found"):
            distributed.generate(cluster, load_sampler, "nope", "nope", problems, 0, jobs)
    assert not (tmp_path / "samples.jsonl").exists()


def test_work_items_keep_requests_whole_and_in_order():
    todo = [(name, list(range(n))) for name, n in zip("abcde", (1, 6, 6, 2, 9))]
    items = distributed.work_items(todo, 7)
    assert [[d for d, _ in item] for item in items] == [["a", "b"], ["c", "d"], ["e"]]
    cluster = distributed.Cluster(data_parallel=2, resources={}, max_batch_size=256)
    assert cluster.item_size(42) == 6  # 4 items an actor
    assert cluster.item_size(10 ** 6) == 4 * 256  # 4 engine batches


def test_engine_counters_add_up_and_peaks_take_the_larger():
    a = GenerationStats(prefill_tokens=10, generated_tokens=100, decode_seconds=1.0, decode_steps=5,
                        kv_blocks_total=64, kv_blocks_peak=30, peak_kv_bytes=300, preemptions=1)
    a.add(GenerationStats(prefill_tokens=5, generated_tokens=50, decode_seconds=0.5, decode_steps=7,
                          kv_blocks_total=64, kv_blocks_peak=40, peak_kv_bytes=400, prefix_kv_bytes=8))
    assert a == GenerationStats(prefill_tokens=15, generated_tokens=150, decode_seconds=1.5, decode_steps=12,
                                kv_blocks_total=64, kv_blocks_peak=40, peak_kv_bytes=400, prefix_kv_bytes=8,
                                preemptions=1)
