"""`budget-sampler eval` end to end: the run directory, resume after a crash, until-pass, bad input.

Most tests drive a fake Sampler (deterministic samples and engine seconds, one sample finished per
step) so that reports can be compared exactly; one drives the real engine on tiny checkpoints.
"""
import argparse
import errno
import hashlib
import json
import os
import sys

import pytest

from budget_sampler import cli
from budget_sampler.api import LoadOptions, SampleStream
from budget_sampler.cli import eval as eval_cli
from budget_sampler.errors import InvalidInput
from budget_sampler.eval import execute, run
from budget_sampler.params import Completion, GenerationStats

from checkpoints import make_checkpoint

PROBLEMS = [{"task_id": f"T/{j}", "prompt": f'def f{j}(x):\n    """\n    >>> f{j}(0)\n    {j}\n    """\n' if j else
             f"def f{j}(x):\n", "entry_point": f"f{j}",
             "test": f"def check(candidate):\n    assert candidate(0) == {j}\n"} for j in range(4)]  # T/0: no example


class Crash(Exception):
    pass


class FakeEngine:
    crash_after = None  # finish this many samples in the whole process, then raise Crash
    finished = 0
    drawn = []  # (prompt, sample index) of every sample finished in the whole process

    def __init__(self, right):
        self.right, self.requests, self.aborted, self.next_id = right, {}, [], 0
        self.stats = GenerationStats()

    def validate(self, prompt_ids, params):
        pass

    def add_request(self, prompt_ids, params):
        rid, self.next_id = self.next_id, self.next_id + 1
        self.requests[rid] = [prompt_ids, params, 0]
        return rid

    def abort_request(self, rid):
        self.aborted.append(rid)
        self.requests.pop(rid, None)

    def is_active(self, rid):
        return rid in self.requests

    def step(self):
        if FakeEngine.crash_after is not None and FakeEngine.finished >= FakeEngine.crash_after:
            raise Crash("simulated crash")
        rid, (prompt_ids, params, k) = next(iter(self.requests.items()))
        i = params.sample_index(k)
        h = hashlib.sha256(f"{params.seed}/{i}/{params.temperature}".encode()).digest()
        good = h[0] % 3 == 0
        text = self.right[bytes(prompt_ids).decode()] if good else "    return -1\n"
        m = 1 + i % 7  # by index alone: the seeds hold the models' paths, which differ between pytest sessions
        self.requests[rid][2] += 1
        if k + 1 == params.n:
            del self.requests[rid]
        FakeEngine.drawn.append((bytes(prompt_ids).decode(), i))
        self.stats.generated_tokens += m
        self.stats.decode_seconds += m / 1024  # exact in binary: sums do not depend on their order
        FakeEngine.finished += 1
        lps = [-(h[2] % 64) / 32] * m
        return [(rid, Completion(i, text, list(range(m)), sum(lps), "stop", lps))]


class FakeSampler:
    events: list[tuple[str, str]] = []  # ("load" | "close", path), in order

    def __init__(self, path):
        self.engine = FakeEngine({p["prompt"]: f"    return {p['entry_point'][1:]}\n" for p in PROBLEMS})
        self.model_path = path

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        FakeSampler.events.append(("load", path))
        return cls(path)

    def close(self):
        FakeSampler.events.append(("close", self.model_path))

    @property
    def stats(self):
        return self.engine.stats

    def generate(self, prompts, params):  # the warm-up: nothing to warm
        return [[] for _ in prompts]

    def encode(self, prompt):
        return list(prompt.encode())

    def stream(self, prompts, params):  # the real stream, over the fake engine
        return SampleStream(self.engine, [self.encode(p) for p in prompts], params)

    def score(self, prompt, completions):
        return [[-len(c) / 16] * 2 for c in completions]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return [str(make_checkpoint(root / name, "llama", seed=i, hidden_size=32 * (i + 1), num_hidden_layers=i + 1))
            for i, name in enumerate(["small", "large"])]


@pytest.fixture
def bench(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return str(path)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(LoadOptions, "load", lambda self, path: FakeSampler.from_pretrained(path))
    monkeypatch.setattr(FakeEngine, "crash_after", None)
    monkeypatch.setattr(FakeEngine, "finished", 0)
    monkeypatch.setattr(FakeEngine, "drawn", [])
    monkeypatch.setattr(FakeSampler, "events", [])


def args(*argv):
    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    return parser.parse_args(["--timeout", "2", "--workers", "2", *map(str, argv)])


def read_report(out):
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def untimed(out):
    """read_report without what a resumed run measures anew (efficiency: seconds, batches; the rankers'
    own seconds, part of their cost under the time budget), but with the cost of a solved problem in
    samples and FLOPs."""
    report, markdown = read_report(out)
    report["solved"] = {name: {k: e["to_first_pass"][k] for k in ("samples", "flops", "flops_exact")}
                        for name, e in report.pop("efficiency").items()}
    for row in next(t for t in report["budgets"] if t["kind"] == "time")["rows"]:
        del row["winner_rank_score"]
        for cell in row["models"].values():
            del cell["rank_k"], cell["rank_score"], cell["rank_score_ci95"]
    before, _, after = markdown.split("\n## Efficiency")[0].partition("\n## Budget: seconds")
    return report, before + after[after.index("\n## "):]


def assert_no_capped_cell_until_all_drawn(report: dict, top: str, n: int) -> None:
    """Issue 33's acceptance: in every budget table no cell is capped up to the row where the most
    expensive model has drawn its n samples; past it, capped cells are marked and never win."""
    for table in report["budgets"]:
        rows = table["rows"]
        full = max(i for i, row in enumerate(rows) if not row["models"][top]["capped"])
        assert rows[full]["models"][top]["k"] == n
        assert not any(cell["capped"] for row in rows[:full + 1] for cell in row["models"].values()), table["kind"]
        for row in rows:
            assert not {name for name, cell in row["models"].items() if cell["capped"]} & set(row["winner_pass"])


def test_run_directory_and_report(fake, models, bench, tmp_path, capsys):
    out = tmp_path / "out"
    assert eval_cli.main(args("--models", ",".join(models), "--benchmark", bench, "--n", 8,
                         "--max-new-tokens", 16, "--out", out)) == 0
    report, markdown = read_report(out)
    # the large model's 8 samples cost what 29 of the small one's do in paper FLOPs (3.68x), and 52 in exact
    # FLOPs, which count each prompt's prefill once: the large model pays it from 8 samples
    assert report["config"]["counts"] == {models[0]: 52, models[1]: 8}
    assert report["config"]["counts_from"] == "paper FLOPs" and report["config"]["max_n_binds"] == []
    assert report["config"]["top_up"] == {models[0]: "flops_exact"}
    assert report["config"]["budget_models"] == [models[1]]
    assert_no_capped_cell_until_all_drawn(report, models[1], 8)
    small = out / run.model_dir(".", models[0]).name
    samples = [json.loads(line) for line in (small / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 52 * len(PROBLEMS)
    assert {"task_id", "completion", "index", "num_tokens", "logprob", "finish_reason", "seconds"} <= set(samples[0])
    results = [json.loads(line) for line in (small / "samples_results.jsonl").read_text().splitlines()]
    assert {(r["task_id"], r["index"]) for r in results} == {(s["task_id"], s["index"]) for s in samples}
    for s, r in zip(sorted(samples, key=lambda s: (s["task_id"], s["index"])),
                    sorted(results, key=lambda r: (r["task_id"], r["index"]))):
        assert r["passed"] == (s["completion"] != "    return -1\n")
    assert [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()] == PROBLEMS
    m = report["models"][models[0]]
    assert list(m["pass@k"]) == ["1", "2", "4", "8", "16", "32"] and m["greedy_pass@1"] is not None
    assert list(report["models"][models[1]]["pass@k"]) == ["1", "2", "4", "8"]
    assert sum(report["per_problem"][models[0]]["histogram"]["counts"]) == len(PROBLEMS)
    assert m["tokens_per_second"] == 1024  # the fake spends 1/1024 s per token
    assert m["flops_per_sample"]["exact"] < m["flops_per_sample"]["exact_without_prefix_sharing"]
    assert [t["kind"] for t in report["budgets"]] == ["flops", "flops_exact", "eflops", "time"]
    assert report["budgets"][0]["rows"][0]["models"][models[1]]["k"] == 0  # large can't afford 1 small sample
    assert (out / "budget.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Budget: FLOPs, paper" in markdown and markdown in capsys.readouterr().out
    assert report["config"]["sandbox"] == ("namespaces" if sys.platform == "linux" else "process")


def test_max_n_holds_the_top_up_and_the_cells_it_caps_are_marked(fake, models, bench, tmp_path):
    out = tmp_path / "out"
    assert eval_cli.main(args("--models", ",".join(models), "--benchmark", bench, "--n", 8, "--max-n", 40,
                              "--max-new-tokens", 16, "--out", out)) == 0
    report, markdown = read_report(out)
    c = report["config"]
    assert c["counts"] == {models[0]: 40, models[1]: 8}  # 29 by paper FLOPs, 52 by exact FLOPs, held at 40
    assert c["max_n_binds"] == [models[0]] and c["top_up"] == {models[0]: "flops_exact"}
    exact = next(t for t in report["budgets"] if t["kind"] == "flops_exact")
    capped = [row for row in exact["rows"] if row["models"][models[0]]["capped"]]
    assert capped and all(row["models"][models[0]]["k"] == 40 < row["models"][models[0]]["affordable"]
                          and models[0] not in row["winner_pass"] for row in capped)
    assert f"--max-n 40 holds {models[0]} below that" in markdown
    assert f"raised to what it buys under FLOPs, exact ({models[0]})" in markdown


def test_rankers_without_tests_cost_and_fits_are_reported(fake, models, bench, tmp_path):
    out = tmp_path / "out"
    assert eval_cli.main(args("--models", ",".join(models), "--benchmark", bench, "--n-per-model", "8,8",
                              "--max-new-tokens", 16, "--ranker", "self,examples,vote", "--price-per-gpu-hour", 3.6,
                              "--gpu", "h200", "--out", out)) == 0
    report, markdown = read_report(out)
    assert report["config"]["top_up"] == {}  # explicit counts are drawn as given
    small = report["models"][models[0]]
    probes = [json.loads(line) for line in (out / run.model_dir(".", models[0]).name / "examples.jsonl").open()]
    assert len(probes) == 8 * 3 and {p["task_id"] for p in probes} == {"T/1", "T/2", "T/3"}  # T/0 has no example
    # the fake's right samples reproduce the example and pass the test, its wrong ones do neither: at k = n
    # the filter passes every problem with an example that a sample solves; T/0 falls back to self
    rows = {(r["task_id"], r["index"]): r for r in map(json.loads, (out / run.model_dir(".", models[0]).name
                                                                    / "samples.jsonl").open())}
    right = {key: row["completion"] != "    return -1\n" for key, row in rows.items()}
    best = max(sorted(i for t, i in rows if t == "T/0"), key=lambda i: rows["T/0", i]["mean_logprob"])
    solved = [any(ok for (t, _), ok in right.items() if t == task) for task in ("T/1", "T/2", "T/3")]
    assert small["rank_score@k"]["examples"]["8"] == (sum(solved) + right["T/0", best]) / 4
    assert small["rank_score@k"]["vote"]["1"] == pytest.approx(small["pass@k"]["1"])
    assert set(small["rank_score@k_ci95"]) == {"self", "examples", "vote"}
    assert small["rankers"]["examples"]["problems_without_examples"] == 0.25
    eflops = next(t for t in report["budgets"] if t["kind"] == "eflops")
    assert eflops["gpu"] == "h200" and eflops["intensity"] == pytest.approx(67e12 / 4.8e12)  # float32
    cell = eflops["rows"][-1]["models"][models[0]]
    assert set(cell["rank_score"]) == {"self", "examples", "vote"} and cell["rank_k"]["vote"] == cell["k"]
    assert report["cost"]["models"][models[0]]["money"] == pytest.approx(small["seconds_per_sample"] * 8 * 4 / 1000)
    fit = report["coverage"][models[0]]
    assert list(fit["extrapolated"]) == ["16", "32", "64", "128"] and "held_out" in fit
    assert [p["k"] for p in eflops["extrapolated"][models[0]]] == [16, 32, 64, 128]
    for section in ("## Budget: eFLOPs", "## Coverage fits (extrapolated)", "## Cost", "best (rank-score, vote)"):
        assert section in markdown


def test_resume_after_a_crash_gives_the_same_report(fake, models, bench, tmp_path, monkeypatch):
    common = ("--models", ",".join(models), "--benchmark", bench, "--n", 6, "--max-new-tokens", 16,
              "--ranker", f"{models[1]},examples,vote")
    assert eval_cli.main(args(*common, "--out", tmp_path / "a")) == 0
    expected = untimed(tmp_path / "a")
    small = expected[0]["config"]["counts"][models[0]]
    assert small == 45  # what 6 samples of the large model buy the small one in exact FLOPs (paper: 22)

    out = tmp_path / "b"
    FakeEngine.finished, FakeEngine.crash_after = 0, 4 + small * len(PROBLEMS) + 7  # in the small model's top-up
    with pytest.raises(Crash):
        eval_cli.main(args(*common, "--out", out))
    with open(out / run.model_dir(".", models[1]).name / "samples.jsonl", "a") as f:
        f.write('{"task_id": "T/1", "compl')  # killed in the middle of a write
    FakeEngine.crash_after = None

    real, calls = execute.run_program, []

    def crash_on_the_fifth_run(*a, **k):
        calls.append(1)
        if len(calls) == 5:
            raise Crash("simulated crash while executing")
        return real(*a, **k)
    monkeypatch.setattr(execute, "run_program", crash_on_the_fifth_run)
    with pytest.raises(Crash):
        eval_cli.main(args(*common, "--out", out))
    assert not (out / "report.json").exists()

    monkeypatch.setattr(execute, "run_program", real)
    assert eval_cli.main(args(*common, "--out", out)) == 0
    assert untimed(out) == expected

    def no_more_work(*a, **k):
        raise AssertionError("a finished run drew or executed again")
    monkeypatch.setattr(FakeSampler, "from_pretrained", no_more_work)
    monkeypatch.setattr(execute, "run_program", no_more_work)
    assert eval_cli.main(args(*common, "--out", out)) == 0
    assert untimed(out) == expected


def test_a_full_disk_is_one_error_the_file_keeps_its_whole_rows_and_the_rerun_resumes(fake, models, bench, tmp_path,
                                                                                       monkeypatch, capsys):
    common = ["eval", "--models", ",".join(models), "--benchmark", bench, "--n", 6, "--max-new-tokens", 16,
              "--timeout", 2, "--workers", 2]

    def measured_apart(out):  # the report but its measurements (report.py: they differ after a resume)
        return {k: v for k, v in read_report(out)[0].items() if k != "efficiency"}
    assert cli.main(list(map(str, [*common, "--out", tmp_path / "a"]))) == 0
    expected = measured_apart(tmp_path / "a")

    out = tmp_path / "b"
    path = out / run.model_dir(".", models[1]).name / "samples.jsonl"
    write, writes = os.write, []

    def fills_up(fd, data):  # the 8th row of model 2 finds the disk full half-way through it
        if os.readlink(f"/proc/self/fd/{fd}") == str(path):
            writes.append(data)
            if len(writes) == 8:
                write(fd, bytes(data[:len(data) // 2]))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(fd, data)
    monkeypatch.setattr(os, "write", fills_up)
    capsys.readouterr()
    assert cli.main(list(map(str, [*common, "--out", out]))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"budget-sampler eval: error: cannot write {path}: No space left on device")
    assert err.count("\n") == 1
    rows = path.read_text().splitlines(keepends=True)
    assert len(rows) == 7 and all(line.endswith("\n") and json.loads(line) for line in rows)

    monkeypatch.setattr(os, "write", write)  # space again
    assert cli.main(list(map(str, [*common, "--out", out]))) == 0
    assert measured_apart(out) == expected
    assert len(path.read_text().splitlines()) == 6 * len(PROBLEMS)


def test_resume_draws_only_the_missing_sample_indices(fake, models, bench, tmp_path):
    common = ("--models", models[0], "--benchmark", bench, "--n", 5, "--max-new-tokens", 16, "--out", tmp_path)
    assert eval_cli.main(args(*common)) == 0
    path = tmp_path / run.model_dir(".", models[0]).name / "samples.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:3] + lines[9:-4]  # killed mid-task (several times): tasks T/0, T/1 and T/3 lose samples
    path.write_text("".join(kept))
    FakeEngine.drawn = []
    assert eval_cli.main(args(*common)) == 0
    lost = [json.loads(line) for line in lines if line not in kept]
    prompts = {p["task_id"]: p["prompt"] for p in PROBLEMS}
    assert sorted(FakeEngine.drawn) == sorted((prompts[r["task_id"]], r["index"]) for r in lost)
    assert sorted(path.read_text().splitlines()) == sorted(line.rstrip("\n") for line in lines)


def test_until_pass_cancels_a_problem_once_a_sample_passes(fake, models, bench, tmp_path, monkeypatch):
    submit = execute.ExecutionPool.submit

    def submit_and_wait(self, *a):  # results in sample order: which samples get drawn is deterministic
        future = submit(self, *a)
        future.result()
        return future
    monkeypatch.setattr(execute.ExecutionPool, "submit", submit_and_wait)
    n, out, ladder = 12, tmp_path / "out", ",".join(models)
    assert eval_cli.main(args("--models", ladder, "--benchmark", bench, "--n", n, "--max-new-tokens", 16,
                         "--out", out, "--until-pass")) == 0
    report, markdown = read_report(out)
    # the same run uninterrupted and without until-pass: until-pass draws its samples of the same indices
    assert eval_cli.main(args("--models", ladder, "--benchmark", bench, "--n", n, "--max-new-tokens", 16,
                         "--out", tmp_path / "full")) == 0
    counts = report["config"]["counts"]  # paper FLOPs': until-pass has no budget table to top the counts up for
    assert counts == {models[0]: 44, models[1]: 12} and report["config"]["top_up"] == {}
    assert read_report(tmp_path / "full")[0]["config"]["counts"] == {models[0]: 66, models[1]: 12}
    for name in models:
        n = counts[name]
        rows = [json.loads(line) for line in
                (out / run.model_dir(".", name).name / "samples.jsonl").read_text().splitlines()]
        drawn = {p["task_id"]: sorted(r["index"] for r in rows if r["task_id"] == p["task_id"]) for p in PROBLEMS}
        first_pass = {t: next((r["index"] for r in sorted(rows, key=lambda r: r["index"])
                               if r["task_id"] == t and r["completion"] != "    return -1\n"), None) for t in drawn}
        for t, indices in drawn.items():
            assert indices == list(range(n if first_pass[t] is None else first_pass[t] + 1))
        results = (out / run.model_dir(".", name).name / "samples_results.jsonl").read_text().splitlines()
        assert len(results) == len(rows)
        u = report["until_pass"][name]
        assert u["samples_drawn"] == len(rows) < n * len(PROBLEMS)
        assert u["saved"] == pytest.approx(1 - len(rows) / (n * len(PROBLEMS)))
        solved = [t for t in drawn if first_pass[t] is not None]
        assert u["solved"] == len(solved) / len(PROBLEMS)
        assert u["to_first_pass"]["samples"] == pytest.approx(sum(first_pass[t] + 1 for t in solved) / len(solved))
        assert u["tokens"] == sum(r["num_tokens"] for r in rows) and sum(u["first_pass_at"].values()) == len(PROBLEMS)
        assert u["pass@k"]["2"] == sum(first_pass[t] is not None and first_pass[t] < 2 for t in drawn) / len(PROBLEMS)
        full = {(r["task_id"], r["index"]): r["completion"] for r in map(json.loads, (
            tmp_path / "full" / run.model_dir(".", name).name / "samples.jsonl").read_text().splitlines())}
        assert all(full[r["task_id"], r["index"]] == r["completion"] for r in rows)
    assert "budgets" not in report and "## Until a sample passes" in markdown


@pytest.mark.parametrize("argv, message", [
    (["--models", "nope-xl"], "model 'nope-xl' not found"),
    (["--benchmark", "nope"], "benchmark 'nope' is unknown"),
    (["--n", 0], "n=0 is invalid"),
    (["--max-new-tokens", 0], "max_new_tokens=0 is invalid"),
    (["--n", 4, "--k", "1,8"], "k=8 is invalid"),
    (["--benchmark", "BAD_LINE"], r"problems.jsonl:2: not valid JSON"),
    (["--benchmark", "NO_TEST"], "has no 'test'"),
    (["--models", "SMALL,SMALL"], "distinct"),
    (["--ranker", "nope-xl"], "model 'nope-xl' not found"),
    (["--ranker", "self,vote,self"], "give distinct comma-separated rankers"),
    (["--price-per-gpu-hour", -1], "price-per-gpu-hour -1.0 is invalid"),
    (["--max-new-tokens", 10_000], "exceeds its context"),
    (["--n-per-model", "4,4"], "--n-per-model '4,4' is invalid: give 1 comma-separated"),
    (["--n-per-model", "0"], "--n-per-model '0' is invalid"),
    (["--n-per-model", "x"], "--n-per-model 'x' is invalid"),
    (["--n-per-model", "3", "--n", 3], "--n and --n-per-model exclude each other"),
    (["--n", 8, "--max-n", 4], "--max-n 4 is invalid: must be >= n=8"),
])
def test_bad_input_is_one_error_and_writes_nothing(fake, models, bench, tmp_path, argv, message):
    path = tmp_path / "problems.jsonl"
    if "BAD_LINE" in argv:
        path.write_text(json.dumps(PROBLEMS[0]) + "\n{oops\n")
    if "NO_TEST" in argv:
        path.write_text(json.dumps({k: v for k, v in PROBLEMS[0].items() if k != "test"}) + "\n")
    argv = [str(a).replace("BAD_LINE", bench).replace("NO_TEST", bench).replace("SMALL", models[0]) for a in argv]
    n = [] if "--n" in argv or "--n-per-model" in argv else ["--n", 2]
    argv = ["--models", models[0], "--benchmark", bench, *n, "--max-new-tokens", 8] + argv
    out = tmp_path / "out"
    with pytest.raises(InvalidInput, match=message):
        eval_cli.main(args(*argv, "--out", out))
    assert not out.exists()


def test_resuming_with_other_settings_is_refused(fake, models, bench, tmp_path):
    common = ("--models", models[0], "--benchmark", bench, "--n", 2, "--max-new-tokens", 8, "--out", tmp_path)
    assert eval_cli.main(args(*common)) == 0
    with pytest.raises(InvalidInput, match=r"other settings \(temperature=0.8\)"):
        eval_cli.main(args(*common, "--temperature", 0.2))
    if sys.platform == "linux":  # auto ran it in namespaces: results from the process mode may differ
        with pytest.raises(InvalidInput, match=r"other settings \(sandbox='namespaces'\)"):
            eval_cli.main(args(*common, "--sandbox", "process"))


def test_each_model_is_closed_before_the_next_loads(fake, models, bench, tmp_path):
    """A ladder on one GPU: the next model's KV budget is a fraction of the memory then free."""
    assert eval_cli.main(args("--models", ",".join(models), "--benchmark", bench, "--n", 2, "--max-new-tokens", 8,
                              "--out", tmp_path / "out")) == 0
    assert FakeSampler.events[:4] == [("load", models[0]), ("close", models[0]), ("load", models[1]),
                                      ("close", models[1])]


def test_real_engine_on_tiny_checkpoints(models, bench, tmp_path):
    out = tmp_path / "out"
    assert eval_cli.main(args("--models", ",".join(models), "--benchmark", bench, "--n", 3,
                         "--max-new-tokens", 8, "--ranker", models[1], "--budget", "time", "--out", out)) == 0
    report, _ = read_report(out)
    counts = report["config"]["counts"]  # from seconds measured on the first problems (time budget only)
    assert min(counts.values()) == 3 and report["config"]["counts_from"].startswith("seconds per sample")
    pilot = json.loads((out / "counts.json").read_text())
    assert set(pilot["seconds_per_sample"]) == set(models) and pilot["pilot_problems"] == len(PROBLEMS)
    for name in models:
        m = report["models"][name]
        assert m["samples"] == counts[name] * len(PROBLEMS) and m["tokens_per_second"] > 0
        assert list(m["pass@k"])[:2] == ["1", "2"] and 0 <= m["rank_score@k"][models[1]]["2"] <= 1
        kv = m["kv_cache"]
        assert 0 < kv["blocks_peak"] <= kv["blocks_total"] and kv["preemptions"] == 0
    ranks = out / run.model_dir(".", models[0]).name / f"rank_{run.model_dir('.', models[1]).name}.jsonl"
    assert len(ranks.read_text().splitlines()) == counts[models[0]] * len(PROBLEMS)
    assert [t["kind"] for t in report["budgets"]] == ["time"]

    # lose the last samples (in flight at a crash): the resumed run draws them again, identically
    path = out / run.model_dir(".", models[0]).name / "samples.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-5]))
    assert eval_cli.main(args("--models", ",".join(models), "--benchmark", bench, "--n", 3,
                         "--max-new-tokens", 8, "--ranker", models[1], "--budget", "time", "--out", out)) == 0

    def drawn(rows):  # log-probs: float sums over a different batch differ in the last digits
        return sorted((r["task_id"], r["index"], r["completion"], r["logprob"]) for r in map(json.loads, rows))
    again, before = drawn(path.read_text().splitlines()), drawn(lines)
    assert [r[:3] for r in again] == [r[:3] for r in before]
    assert [r[3] for r in again] == pytest.approx([r[3] for r in before], abs=1e-3)


def test_bad_sample_counts_on_the_command_line_are_one_line_exit_2_and_nothing_written(models, bench, tmp_path,
                                                                                         capsys):
    out = tmp_path / "out"
    assert cli.main(["eval", "--models", ",".join(models), "--benchmark", bench, "--n-per-model", "8,zero",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == ("budget-sampler eval: error: --n-per-model '8,zero' is invalid: give 2 comma-separated whole "
                   "numbers >= 1, one per model of --models\n")
    assert not out.exists()
