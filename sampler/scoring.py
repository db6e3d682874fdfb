"""Teacher-forced log-probs of given completions after one prompt (the likelihood ranker).

The prompt is prefilled once into the engine's prefix pool; the completions run as suffixes that
share it, through the same shared-prefix attention as decoding (row (b, t) attends to the prefix
and to the first t+1 tokens of completion b: causal by construction).
"""
from __future__ import annotations

import torch

from .cache import PrefillBatch, SuffixBatch, SuffixCache

MAX_ROWS = 4096  # query rows per forward: bounds activation and logits memory


@torch.inference_mode()
def score(engine, prompt_ids: list[int], completions: list[list[int]]) -> list[list[float]]:
    model, pool, device = engine.model, engine.pool, engine.device
    n = len(prompt_ids)
    handle = pool.alloc(n)
    try:
        hidden = model(torch.tensor(prompt_ids, device=device), torch.arange(n, device=device),
                       PrefillBatch(pool, handle))
        first = torch.log_softmax(model.logits(hidden[-1:])[0].float(), dim=-1)
        order = sorted(range(len(completions)), key=lambda i: len(completions[i]))
        out: list[list[float]] = [[] for _ in completions]
        chunk: list[int] = []
        for i in order + [None]:
            width = max((len(completions[j]) for j in chunk), default=0)
            if i is not None and (len(chunk) + 1) * max(width, len(completions[i])) <= MAX_ROWS:
                chunk.append(i)
                continue
            if chunk:
                for j, lp in zip(chunk, _score_chunk(model, pool, handle, n, [completions[j] for j in chunk],
                                                     first, device)):
                    out[j] = lp
            chunk = [i] if i is not None else []
        return out
    finally:
        pool.free(handle)


def _score_chunk(model, pool, handle, n_prompt, seqs, first, device) -> list[list[float]]:
    b, t = len(seqs), max(len(s) for s in seqs)
    if t == 0:
        return [[] for _ in seqs]
    suffix = SuffixCache(model.cfg, b, device, pool.dtype)
    suffix.ensure(t)
    tokens = torch.tensor([s + [0] * (t - len(s)) for s in seqs], device=device)  # padding is never read
    steps = torch.arange(t, device=device)
    batch = SuffixBatch(pool, suffix, [(handle, b * t)], torch.arange(b).repeat_interleave(t),
                        (steps + 1).repeat(b).cpu())
    logits = model.logits(model(tokens.flatten(), (n_prompt + steps).repeat(b), batch)).view(b, t, -1)
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(2, tokens[:, 1:].unsqueeze(-1))
    head = first[tokens[:, 0]].unsqueeze(1)
    full = torch.cat([head, logprobs.squeeze(-1)], dim=1)
    return [full[k, :len(s)].tolist() for k, s in enumerate(seqs)]
