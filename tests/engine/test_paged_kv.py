"""Paged KV under a memory budget: preemption (recompute) gives the samples of an unconstrained
run; cancel and stream work under preemption; blocks all come back; budgets parse and fail clearly;
out of memory (injected) in a decode step, a prefill or a graph capture lowers the batch or retries
and changes no sample. With the engine's overlap (step t + 1 launched before step t is
postprocessed: CUDA's default, run here on CPU) every sample is the same too.

Token ids must be identical. Log-probs agree to 1e-4: CPU BLAS picks its kernel by batch size
(a row's logits move by ~1e-6 when the batch around it changes, with or without preemption)."""
import pytest
import torch

from budget_sampler import InvalidInput, Sampler, SamplingParams
from budget_sampler.cache import PrefillBatch
from budget_sampler.engine import default_block_size
from budget_sampler.memory import kv_bytes_per_token, parse_memory
from budget_sampler.runner import graph_batch_sizes

BS = default_block_size(torch.device("cpu"))  # tokens per block on CPU

PROMPTS = ["def add(a, b):\n    return", "for i in range(10):\n", "x"]
# varied lengths: stop strings and EOS end samples early, at different steps
PARAMS = SamplingParams(n=64, temperature=1.0, top_p=0.95, max_new_tokens=40, stop=["10", "Tr", "St"], seed=5)


@pytest.fixture(scope="module")
def ample(tiny_llama):
    s = Sampler.from_pretrained(str(tiny_llama), max_batch_size=32)
    return s, s.generate(PROMPTS, PARAMS)


def tight(tiny_llama, tokens: int, max_batch_size: int = 32) -> Sampler:
    """A sampler whose pool holds `tokens` tokens (in usable blocks)."""
    from budget_sampler.models import load_hf_config
    from budget_sampler.models.llama import ModelConfig
    cfg = ModelConfig.from_hf(load_hf_config(tiny_llama))
    return Sampler.from_pretrained(str(tiny_llama), max_batch_size=max_batch_size,
                                   kv_cache_memory=(tokens // BS + 1) * BS * kv_bytes_per_token(cfg, torch.float32))


def assert_same(got, want):
    for per_got, per_want in zip(got, want):
        assert [c.index for c in per_got] == [c.index for c in per_want]
        for a, b in zip(per_got, per_want):
            assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason and a.text == b.text
            torch.testing.assert_close(torch.tensor(a.token_logprobs), torch.tensor(b.token_logprobs),
                                       atol=1e-4, rtol=0)


@pytest.mark.parametrize("overlap", [False, True], ids=["in-turn", "overlap"])
def test_preemption_gives_the_samples_of_an_unconstrained_run(tiny_llama, ample, overlap):
    big, want = ample
    assert big.stats.preemptions == 0
    reasons = {c.finish_reason for per in want for c in per}
    assert reasons == {"stop", "eos", "length"}  # lengths vary
    s = tight(tiny_llama, tokens=192)
    s.engine.overlap = overlap
    got = s.generate(PROMPTS, PARAMS)
    assert s.stats.preemptions > 20, s.stats
    assert s.stats.kv_blocks_total == 192 // BS == s.stats.kv_blocks_peak
    assert_same(got, want)
    assert s.engine.pool.num_used == 0 and not s.engine.has_unfinished()


@pytest.mark.parametrize("overlap", [False, True], ids=["in-turn", "overlap"])
def test_padded_batches_give_the_same_samples(tiny_llama, ample, overlap):
    """The bookkeeping of CUDA-graph replay (batches padded to captured sizes, padding rows on the
    scratch slot in a group of their own), run eagerly on CPU, under preemption too."""
    _, want = ample
    s = tight(tiny_llama, tokens=320, max_batch_size=32)
    s.engine.overlap = overlap
    s.engine.runner.padded_sizes = graph_batch_sizes(32)
    assert_same(s.generate(PROMPTS, PARAMS), want)
    assert s.stats.preemptions > 0


@pytest.mark.parametrize("overlap", [False, True], ids=["in-turn", "overlap"])
def test_cancel_and_stream_under_preemption(tiny_llama, ample, overlap):
    _, want = ample
    s = tight(tiny_llama, tokens=160)
    s.engine.overlap = overlap
    stream = s.stream(PROMPTS, PARAMS)
    got = {0: [], 1: [], 2: []}
    for i, c in stream:
        got[i].append(c)
        if i == 1 and len(got[1]) == 3:
            stream.cancel(1)
    assert len(got[1]) == 3 and len(got[0]) == len(got[2]) == 64
    assert s.stats.preemptions > 0
    by_index = {i: {c.index: c for c in want[i]} for i in range(3)}
    for i in range(3):
        for c in got[i]:
            assert c.token_ids == by_index[i][c.index].token_ids
    assert s.engine.pool.num_used == 0 and not s.engine.has_unfinished()


def test_greedy_under_preemption_with_refill(tiny_llama):
    p = SamplingParams(n=5, temperature=0, max_new_tokens=60, ignore_eos=True)
    want = Sampler.from_pretrained(str(tiny_llama), max_batch_size=4).generate(PROMPTS, p)
    s = tight(tiny_llama, tokens=144, max_batch_size=4)
    assert [[c.token_ids for c in per] for per in s.generate(PROMPTS, p)] == \
        [[c.token_ids for c in per] for per in want]
    assert s.stats.preemptions > 0


def test_a_sample_that_cannot_fit_alone_fails_up_front(tiny_llama):
    s = tight(tiny_llama, tokens=3 * BS)
    need = 1 + -(-48 // BS)
    with pytest.raises(InvalidInput, match=rf"needs {need} KV blocks of {BS} tokens, but the KV cache holds 3"):
        s.generate(["x"], SamplingParams(max_new_tokens=48))
    assert not s.engine.has_unfinished()
    s.generate(["x"], SamplingParams(max_new_tokens=2 * BS, ignore_eos=True))  # 1 + 2 blocks fit


def test_prompt_kv_is_stored_once(tiny_llama):
    """Prefix blocks do not depend on n; suffix blocks grow with the samples decoded together."""
    prompt = PROMPTS[0] * 6
    peaks = []
    for n in (1, 32):
        s = Sampler.from_pretrained(str(tiny_llama), max_batch_size=32)
        s.generate([prompt], SamplingParams(n=n, max_new_tokens=20, ignore_eos=True, seed=0))
        prompt_blocks = -(-len(s.encode(prompt)) // BS)
        assert s.stats.prefix_kv_bytes == prompt_blocks * BS * kv_bytes_per_token(s.model.cfg, torch.float32)
        peaks.append(s.stats.kv_blocks_peak)
    sample_blocks = -(-19 // BS)  # KV is written for all but the last of 20 tokens
    assert peaks == [prompt_blocks + sample_blocks, prompt_blocks + sample_blocks * 32]


@pytest.mark.parametrize("text, value", [("0.9", 0.9), ("1.0", 1.0), ("40GB", 40 * 10 ** 9), ("512MB", 512 * 10 ** 6),
                                         ("2GiB", 2 << 30), ("1.5 gb", 1_500_000_000), ("1000000", 1000000)])
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("value, match", [("12 parsecs", "memory size"), ("", "memory size"), (1.5, r"\(0, 1\]"),
                                          (0.0, r"\(0, 1\]"), (-5, "> 0"), (True, "bytes"), (100, "holds no KV block")])
def test_bad_kv_cache_memory(tiny_llama, value, match):
    with pytest.raises(InvalidInput, match=match):
        Sampler.from_pretrained(str(tiny_llama), kv_cache_memory=value)


def test_cuda_fraction_counts_memory_the_allocator_holds_unused(monkeypatch):
    """A freed model's KV pool stays reserved by torch's caching allocator: the next model of a
    ladder must be able to budget it, not only what the driver reports free."""
    from budget_sampler.memory import kv_cache_bytes
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * 2 ** 30, 80 * 2 ** 30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 60 * 2 ** 30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 4 * 2 ** 30)
    assert kv_cache_bytes(0.5, torch.device("cuda")) == (10 + 60 - 4) * 2 ** 30 // 2


def test_fraction_and_default_budgets(tiny_llama):
    s = Sampler.from_pretrained(str(tiny_llama), max_batch_size=4, kv_cache_memory="0.5")
    most = 4 * (256 // BS + 1)  # never more than max_batch_size full contexts
    assert s.stats.kv_blocks_total == most
    with pytest.raises(InvalidInput, match="cuda_graphs=True needs the model on a CUDA device"):
        Sampler.from_pretrained(str(tiny_llama), cuda_graphs=True)


class FakeGraph:
    """Stands for a captured decode step on CPU: replay runs the step eagerly, as captured."""
    def __init__(self, runner, size):
        self.replay = lambda: runner._decode_step(size, size + 1)

    def pool(self):
        return None


def oom_over(limit: int):
    """A step that runs out of memory above `limit` rows."""
    def check(rows: int):
        if rows > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory at {rows} rows (injected)")
    return check


@pytest.mark.parametrize("overlap", [False, True], ids=["in-turn", "overlap"])
def test_out_of_memory_in_a_decode_step_halves_the_batch_and_changes_no_sample(tiny_llama, ample, monkeypatch,
                                                                               caplog, overlap):
    _, want = ample
    s = Sampler.from_pretrained(str(tiny_llama), max_batch_size=32)
    s.engine.overlap = overlap
    runner, launch, check = s.engine.runner, s.engine.runner.launch, oom_over(10)

    def tight_launch():
        check(runner.batch_size)
        return launch()
    monkeypatch.setattr(runner, "launch", tight_launch)
    assert_same(s.generate(PROMPTS, PARAMS), want)
    assert s.engine.scheduler.max_running == 8 and s.stats.preemptions >= 24
    warnings = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    assert warnings == ["out of memory in a decode step of 32 samples: running at most 16 from now on "
                        "(16 preempted, to resume unchanged)",
                        "out of memory in a decode step of 16 samples: running at most 8 from now on "
                        "(8 preempted, to resume unchanged)"]


def test_out_of_memory_with_one_sample_running_names_the_numbers(tiny_llama, monkeypatch):
    s = Sampler.from_pretrained(str(tiny_llama), max_batch_size=4)
    monkeypatch.setattr(s.engine.runner, "launch", lambda: oom_over(0)(1))
    with pytest.raises(InvalidInput, match=r"out of memory in a decode step with one sample running \(\d+ prompt "
                                           r"\+ 1 new tokens\) beside a KV cache of [\d.]+ GiB: lower kv_cache_memory"):
        s.generate(["x"], SamplingParams(n=4, max_new_tokens=8, seed=0))


@pytest.mark.parametrize("failures", [1, 2])
def test_out_of_memory_in_a_prefill_is_tried_once_more(tiny_llama, ample, monkeypatch, caplog, failures):
    _, want = ample
    s = Sampler.from_pretrained(str(tiny_llama), max_batch_size=32)
    model, forward, failed = s.engine.model, s.engine.model.forward, []

    def forward_or_oom(ids, positions, batch):
        if isinstance(batch, PrefillBatch) and len(failed) < failures:
            failed.append(len(ids))
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return forward(ids, positions, batch)
    monkeypatch.setattr(model, "forward", forward_or_oom)
    if failures == 2:
        with pytest.raises(InvalidInput, match=r"out of memory in the prefill of a prompt of \d+ tokens beside a KV "
                                               r"cache of [\d.]+ GiB: lower kv_cache_memory or shorten the prompt"):
            s.generate(PROMPTS, PARAMS)
        return
    assert_same(s.generate(PROMPTS, PARAMS), want)
    assert [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()] == \
        [f"out of memory in the prefill of a prompt of {failed[0]} tokens: trying again"]


def test_out_of_memory_capturing_graphs_caps_the_batch_at_the_largest_captured(tiny_llama, ample, monkeypatch,
                                                                              caplog):
    """The capture loop on CPU: sizes above 16 run out of memory, so batches are padded to the sizes
    captured and capped at 16; the samples do not change."""
    _, want = ample
    s = Sampler.from_pretrained(str(tiny_llama), max_batch_size=32)
    runner, check = s.engine.runner, oom_over(16)
    runner.padded_sizes = graph_batch_sizes(32)

    def capture_one(size, pool):
        check(size)
        return FakeGraph(runner, size)
    monkeypatch.setattr(runner, "_capture_one", capture_one)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    runner._capture()
    assert sorted(runner.graphs) == runner.padded_sizes == [1, 2, 4, 8, 16] and runner.max_rows == 16
    assert [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()] == \
        ["out of memory capturing the decode step's CUDA graphs for batches of 32: batches of at most 16 from now on"]
    s.engine.scheduler.max_running = runner.max_rows  # as the engine does after its own capture
    assert_same(s.generate(PROMPTS, PARAMS), want)
