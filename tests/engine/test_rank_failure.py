"""A tensor-parallel rank that stops answering (stopped by SIGSTOP, or killed) fails the call that needs it
with RankFailure naming it, instead of hanging rank 0 in the model's all-reduce (budget_sampler/parallel/watchdog.py).
A module of its own: test_tensor_parallel.py keeps a tensor-parallel Sampler open for its whole module."""
import multiprocessing
import os
import signal

import pytest
import torch.distributed as dist

from budget_sampler import Sampler, SamplingParams
from budget_sampler.parallel import watchdog
from budget_sampler.parallel.watchdog import RankFailure


@pytest.mark.parametrize("how, message", [
    (signal.SIGSTOP, r"tensor-parallel rank 1 stopped answering during (add_request|step): no sign of life for \d+ s "
     r"\(stopped, or stuck holding its interpreter\)"),
    (signal.SIGKILL, r"tensor-parallel rank 1 exited \(exit code -9\) during (add_request|step)"),
])
def test_a_rank_that_stops_answering_fails_the_call_naming_it(tiny_llama, monkeypatch, how, message):
    monkeypatch.setattr(watchdog, "SILENT_SECONDS", 3.0)
    s = Sampler.from_pretrained(str(tiny_llama), tensor_parallel=2, max_batch_size=8)
    try:
        [rank_1] = [p for p in multiprocessing.active_children() if p.name == "tensor-parallel-rank-1"]
        os.kill(rank_1.pid, how)
        params = SamplingParams(n=2, max_new_tokens=8, seed=0)
        with pytest.raises(RankFailure, match=message + "; the other ranks were stopped"):
            s.generate(["def f(xs):\n"], params)
        with pytest.raises(RankFailure, match=message):  # at once, from then on
            s.generate(["def f(xs):\n"], params)
    finally:
        s.close()
    assert multiprocessing.active_children() == [] and not dist.is_initialized()
