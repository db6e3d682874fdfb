"""Teacher-forced log-probs of given completions after one prompt (the likelihood ranker).

The prompt is prefilled once into the engine's prefix pool; the completions run as suffixes that
share it, through the same shared-prefix attention as decoding (row (b, t) attends to the prefix
and to the first t+1 tokens of completion b: causal by construction). With top_k > 0 each position
also yields its k most likely tokens (the server's top_logprobs and echo).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import PrefillBatch, SuffixBatch, SuffixCache

MAX_ROWS = 4096  # query rows per forward: bounds activation and logits memory


@dataclass
class Scored:
    logprobs: list[float]                # each token's log-prob given everything before it
    top: list[list[tuple[int, float]]]  # per token, the top_k (token id, log-prob), best first


@torch.inference_mode()
def score(engine, prompt_ids: list[int], completions: list[list[int]], top_k: int = 0) -> list[Scored]:
    model, pool, device = engine.model, engine.pool, engine.device
    n = len(prompt_ids)
    handle = pool.alloc(n)
    try:
        hidden = model(torch.tensor(prompt_ids, device=device), torch.arange(n, device=device),
                       PrefillBatch(pool, handle))
        first = torch.log_softmax(model.logits(hidden[-1:]).float(), dim=-1)
        order = sorted(range(len(completions)), key=lambda i: len(completions[i]))
        out: list[Scored] = [Scored([], []) for _ in completions]
        chunk: list[int] = []
        for i in order + [None]:
            width = max((len(completions[j]) for j in chunk), default=0)
            if i is not None and (len(chunk) + 1) * max(width, len(completions[i])) <= MAX_ROWS:
                chunk.append(i)
                continue
            if chunk:
                seqs = [completions[j] for j in chunk]
                for j, scored in zip(chunk, _score_chunk(model, pool, handle, n, seqs, first, top_k)):
                    out[j] = scored
            chunk = [i] if i is not None else []
        return out
    finally:
        pool.free(handle)


def _score_chunk(model, pool, handle, n_prompt, seqs, first, top_k) -> list[Scored]:
    b, t = len(seqs), max(len(s) for s in seqs)
    if t == 0:
        return [Scored([], []) for _ in seqs]
    device = first.device
    suffix = SuffixCache(model.cfg, b, device, pool.dtype)
    suffix.ensure(t)
    tokens = torch.tensor([s + [0] * (t - len(s)) for s in seqs], device=device)  # padding is never read
    steps = torch.arange(t, device=device)
    batch = SuffixBatch(pool, suffix, [(handle, b * t)], torch.arange(b).repeat_interleave(t),
                        (steps + 1).repeat(b).cpu())
    logits = model.logits(model(tokens.flatten(), (n_prompt + steps).repeat(b), batch)).view(b, t, -1)
    # row k predicts token k: the prompt's last position predicts the first, row k-1 the k-th
    rows = torch.cat([first.expand(b, 1, -1), torch.log_softmax(logits[:, :-1].float(), dim=-1)], dim=1)
    chosen = rows.gather(2, tokens.unsqueeze(-1)).squeeze(-1)
    top = rows.topk(top_k, dim=-1) if top_k else None
    return [Scored(chosen[k, :len(s)].tolist(),
                   [list(zip(ids, lps)) for ids, lps in zip(top.indices[k, :len(s)].tolist(),
                                                            top.values[k, :len(s)].tolist())]
                   if top is not None else [[] for _ in s])
            for k, s in enumerate(seqs)]
