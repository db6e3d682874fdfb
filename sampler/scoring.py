"""Teacher-forced log-probs of given completions after one prompt (the likelihood ranker).

The prompt is prefilled once; the completions run as suffixes that share it, through the same
shared-prefix attention as decoding (row (b, t) attends to the prefix and to the first t+1 tokens
of completion b: causal by construction). Scoring keeps its KV in small pools of its own, sized to
the prompt and to each chunk of completions, so it never takes blocks from running samples.
"""
from __future__ import annotations

import torch

from .cache import BlockPool, PrefillBatch, SuffixBatch, cdiv

MAX_ROWS = 4096  # query rows per forward: bounds activation and logits memory


@torch.inference_mode()
def score(engine, prompt_ids: list[int], completions: list[list[int]]) -> list[list[float]]:
    model, device, bs = engine.model, engine.device, engine.pool.block_size
    n = len(prompt_ids)
    prefix = BlockPool(model.cfg, cdiv(n, bs) + 1, bs, device, engine.pool.k.dtype)
    blocks = prefix.allocate(cdiv(n, bs))
    hidden = model(torch.tensor(prompt_ids, device=device), torch.arange(n, device=device),
                   PrefillBatch(prefix, blocks, n))
    first = torch.log_softmax(model.logits(hidden[-1:])[0].float(), dim=-1)
    prefix_table = torch.tensor([blocks], device=device, dtype=torch.int32)
    out: list[list[float]] = [[] for _ in completions]
    chunk: list[int] = []
    for i in [i for i, c in enumerate(completions) if c] + [None]:
        if i is not None and sum(len(completions[j]) for j in chunk) + len(completions[i]) <= MAX_ROWS:
            chunk.append(i)
            continue
        if chunk:
            scored = _score_chunk(model, prefix, prefix_table, n, [completions[j] for j in chunk], first)
            for j, lp in zip(chunk, scored):
                out[j] = lp
        chunk = [i] if i is not None else []
    return out


def _score_chunk(model, prefix: BlockPool, prefix_table, n_prompt, seqs, first) -> list[list[float]]:
    """One forward over every token of `seqs` (one row per token, no padding)."""
    device, bs = prefix.device, prefix.block_size
    pool = BlockPool(model.cfg, sum(cdiv(len(s), bs) for s in seqs) + 1, bs, device, prefix.k.dtype)
    tables = torch.zeros(len(seqs), max(cdiv(len(s), bs) for s in seqs), dtype=torch.int32)
    for j, s in enumerate(seqs):
        tables[j, :cdiv(len(s), bs)] = torch.tensor(pool.allocate(cdiv(len(s), bs)), dtype=torch.int32)
    lengths = torch.tensor([len(s) for s in seqs])
    steps = torch.cat([torch.arange(len(s)) for s in seqs])
    tokens = torch.tensor([t for s in seqs for t in s], device=device)
    batch = SuffixBatch(prefix, pool, torch.tensor([0, len(tokens)], device=device, dtype=torch.int32), prefix_table,
                        torch.tensor([n_prompt], device=device, dtype=torch.int32),
                        tables.repeat_interleave(lengths, dim=0).to(device), (steps + 1).to(device, torch.int32))
    logits = model.logits(model(tokens, (n_prompt + steps).to(device), batch))
    # row r predicts the token of row r + 1 when both belong to the same completion
    logprobs = torch.log_softmax(logits[:-1].float(), dim=-1).gather(1, tokens[1:].unsqueeze(1)).squeeze(1).tolist()
    out, row = [], 0
    for s in seqs:
        out.append([first[s[0]].item()] + logprobs[row:row + len(s) - 1])
        row += len(s)
    return out
