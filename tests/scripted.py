"""A Sampler whose engine emits given token ids: the real scheduler, postprocess, text rule, API and
everything above it run; only the model's sampled tokens (and the top log-probs read from its logits)
are replaced by scripts."""
from __future__ import annotations

import torch

from budget_sampler.runner import Launched


def logprob_of(step: int) -> float:
    """The log-prob a scripted token reports at a step (distinct, so kept sums can be checked)."""
    return -0.5 - step / 64


def script(sampler, monkeypatch, scripts: dict[tuple[int, ...], list[list[int]]], pad: int) -> None:
    """scripts[prompt ids][sample index] is what that sample emits; past its end, `pad`."""
    engine = sampler.engine

    def next_of(s) -> tuple[int, float]:
        ids, step = scripts[tuple(s.request.prompt_ids)][s.index], len(s.token_ids)
        return (ids[step] if step < len(ids) else pad), logprob_of(step)

    vocab, last = sampler.config.vocab_size, []  # the last step's (token, log-prob) per row

    def emit(samples):
        last[:] = [next_of(s) for s in samples]
        return [t for t, _ in last], [lp for _, lp in last]

    def launch():  # the engine postprocesses each step before it launches the next (no overlap on CPU)
        return Launched(torch.tensor(emit(engine._batch), dtype=torch.float64), None)

    def top_logprobs(rows, k):
        """The step's top k per row, as the runner reads them from its logits: the scripted token
        first, then the next ids, each less likely."""
        return [[((last[r][0] + j) % vocab, last[r][1] - j) for j in range(k)] for r in rows]

    monkeypatch.setattr(engine.runner, "launch", launch)
    monkeypatch.setattr(engine.runner, "sample_first", lambda samples, logits: emit(samples))
    monkeypatch.setattr(engine.runner, "top_logprobs", top_logprobs)
