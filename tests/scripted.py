"""A Sampler whose engine emits given token ids: the real scheduler, postprocess, text rule, API and
everything above it run; only the model's sampled tokens are replaced by scripts."""
from __future__ import annotations


def logprob_of(step: int) -> float:
    """The log-prob a scripted token reports at a step (distinct, so kept sums can be checked)."""
    return -0.5 - step / 64


def script(sampler, monkeypatch, scripts: dict[tuple[int, ...], list[list[int]]], pad: int) -> None:
    """scripts[prompt ids][sample index] is what that sample emits; past its end, `pad`."""
    engine = sampler.engine

    def next_of(s) -> tuple[int, float]:
        ids, step = scripts[tuple(s.request.prompt_ids)][s.index], len(s.token_ids)
        return (ids[step] if step < len(ids) else pad), logprob_of(step)

    def emit(samples):
        pairs = [next_of(s) for s in samples]
        return [t for t, _ in pairs], [lp for _, lp in pairs]

    monkeypatch.setattr(engine.runner, "decode", lambda: emit(engine._batch))
    monkeypatch.setattr(engine.runner, "sample_first", lambda samples, logits: emit(samples))
