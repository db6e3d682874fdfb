"""Teacher-forced log-probs of given completions after one prompt (the likelihood ranker).

The prompt is prefilled once; the completions run as suffixes that share it, through the same
shared-prefix attention as decoding (row (b, t) attends to the prefix and to the first t+1 tokens
of completion b: causal by construction). Scoring keeps its KV in small pools of its own, sized to
the prompt and to each chunk of completions, so it never takes blocks from running samples. With
top_k > 0 each position also yields its k most likely tokens (the server's top_logprobs and echo).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import BlockPool, PrefillBatch, SuffixBatch, block_tables, cdiv

MAX_ROWS = 4096  # query rows per forward: bounds activation and logits memory


@dataclass
class Scored:
    logprobs: list[float]                # each token's log-prob given everything before it
    top: list[list[tuple[int, float]]]  # per token, the top_k (token id, log-prob), best first


@torch.inference_mode()
def score(engine, prompt_ids: list[int], completions: list[list[int]], top_k: int = 0) -> list[Scored]:
    model, device, bs = engine.model, engine.device, engine.pool.block_size
    n = len(prompt_ids)
    prefix = BlockPool(model.cfg, cdiv(n, bs) + 1, bs, device, engine.pool.k.dtype)
    blocks = prefix.allocate(cdiv(n, bs))
    hidden = model(torch.tensor(prompt_ids, device=device), torch.arange(n, device=device),
                   PrefillBatch(prefix, blocks, n))
    first = torch.log_softmax(model.logits(hidden[-1:]).float(), dim=-1)  # [1, vocab]
    prefix_table = torch.tensor([blocks], device=device, dtype=torch.int32)
    out = [Scored([], []) for _ in completions]
    chunk: list[int] = []
    for i in [i for i, c in enumerate(completions) if c] + [None]:
        if i is not None and sum(len(completions[j]) for j in chunk) + len(completions[i]) <= MAX_ROWS:
            chunk.append(i)
            continue
        if chunk:
            seqs = [completions[j] for j in chunk]
            for j, scored in zip(chunk, _score_chunk(model, prefix, prefix_table, n, seqs, first, top_k)):
                out[j] = scored
        chunk = [i] if i is not None else []
    return out


def _score_chunk(model, prefix: BlockPool, prefix_table, n_prompt, seqs, first, top_k) -> list[Scored]:
    """One forward over every token of `seqs` (one row per token, no padding)."""
    device, bs = prefix.device, prefix.block_size
    pool = BlockPool(model.cfg, sum(cdiv(len(s), bs) for s in seqs) + 1, bs, device, prefix.k.dtype)
    tables = block_tables([pool.allocate(cdiv(len(s), bs)) for s in seqs], max(cdiv(len(s), bs) for s in seqs))
    lengths = torch.tensor([len(s) for s in seqs])
    steps = torch.cat([torch.arange(len(s)) for s in seqs])
    tokens = torch.tensor([t for s in seqs for t in s], device=device)
    batch = SuffixBatch(prefix, pool, torch.tensor([0, len(tokens)], device=device, dtype=torch.int32), prefix_table,
                        torch.tensor([n_prompt], device=device, dtype=torch.int32),
                        tables.repeat_interleave(lengths, dim=0).to(device), (steps + 1).to(device, torch.int32))
    logits = model.logits(model(tokens, (n_prompt + steps).to(device), batch))
    # row r's token was drawn from row r - 1's distribution, or from the prompt's last position
    # for the first token of a completion (starts)
    starts = (lengths.cumsum(0) - lengths).to(device)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, tokens.roll(-1).unsqueeze(1)).squeeze(1).roll(1)
    chosen[starts] = first[0, tokens[starts]]
    chosen = chosen.tolist()
    top_ids = top_lps = None
    if top_k:
        top, top_first = logprobs.topk(top_k, dim=-1), first.topk(top_k, dim=-1)
        top_ids, top_lps = top.indices.roll(1, dims=0), top.values.roll(1, dims=0)
        top_ids[starts], top_lps[starts] = top_first.indices, top_first.values
        top_ids, top_lps = top_ids.tolist(), top_lps.tolist()
    out, row = [], 0
    for s in seqs:
        span = range(row, row + len(s))
        out.append(Scored(chosen[row:row + len(s)],
                          [list(zip(top_ids[r], top_lps[r])) for r in span] if top_k else [[] for _ in s]))
        row += len(s)
    return out
