"""Fused sampling: temperature, top-k, top-p, min-p and a counter-based RNG; reference and kernel.

Draw = inverse CDF: one uniform u per row, token = the first kept token whose cumulative
probability (of softmax(logits / T) restricted to the kept tokens) reaches u times the kept mass.
u comes from a counter-based hash of (seed, sample index, step), so a sample's tokens do not depend
on which other samples share its batch, and the Triton kernel draws the very same u (both compute
the same 32-bit integer hash). One hash per row keeps the CPU path cheap at large vocabularies
(a per-token Gumbel draw cost more than the model's forward there). u has 24 bits, the resolution
of a float32 CDF.

Truncation follows Hugging Face's order: temperature, then top-k, then top-p on the top-k
renormalised distribution, then min-p (keep p >= min_p * p_max, order-independent).
The returned log-prob is the chosen token's under the unmodified distribution (T = 1, no truncation).

The kernels never sort. Every truncation keeps {s >= threshold} of the scaled logits s, so they
stream the row a few times: pass 1 (max, log-sum-exp, argmax); top-k's threshold, the k-th largest
s, and top-p's, the smallest s whose mass strictly above is below top_p of the top-k mass, are each
found by a 16-way search on the float's bits (8 passes each; programs of rows that don't use them
return at once); then one pass for the kept mass and one for the inverse-CDF scan. Each row is split
into chunks with one program per (row, chunk), each pass a launch: a pass's per-chunk sums are
combined by the next launch's programs, so small batches of a large vocabulary still fill the GPU.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._triton import sm_count, tl, triton

MASK32 = 0xFFFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser on int64 tensors holding uint32 values (wrapping multiply)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & MASK32
    return x ^ (x >> 16)


def row_keys(seeds: torch.Tensor, sample_idx: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One uint32 key per row from (seed, sample index, step); int64 tensors in, int64 out."""
    seeds = seeds.to(torch.int64)
    h = mix32((seeds & MASK32) ^ 0x243F6A88)
    h = mix32(h ^ ((seeds >> 32) & MASK32))
    h = mix32(h ^ (sample_idx.to(torch.int64) & MASK32))
    return mix32((h + (steps.to(torch.int64) & MASK32) * 0x9E3779B9) & MASK32)


def uniform(keys: torch.Tensor) -> torch.Tensor:
    """u in (0, 1) per row: the 24 high bits of the row key, centred in their bucket."""
    return ((keys >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)


def truncation_mask(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                    min_p: torch.Tensor) -> torch.Tensor:
    """Boolean [B, V]: True where a token survives top-k, top-p and min-p (scaled = logits / T).

    Top-k and top-p keep {s >= threshold}, the threshold being the last value they keep in
    descending order, so tokens tied with it all survive, as in the kernel."""
    B, V = scaled.shape
    keep = torch.ones_like(scaled, dtype=torch.bool)
    if bool((min_p > 0).any()):
        thresh = scaled.max(dim=-1, keepdim=True).values + torch.log(min_p.clamp_min(1e-30)).unsqueeze(1)
        keep &= (scaled >= thresh) | (min_p <= 0).unsqueeze(1)
    use_top_k = bool(((top_k > 0) & (top_k < V)).any())
    if use_top_k or bool((top_p < 1).any()):
        srt = _sorted_descending(scaled)
        if use_top_k:
            k = torch.where(top_k > 0, top_k, V)
            in_top_k = torch.arange(V, device=scaled.device).unsqueeze(0) < k.unsqueeze(1)
            srt_k = srt.masked_fill(~in_top_k, float("-inf"))
        probs = torch.softmax(srt_k if use_top_k else srt, dim=-1)
        # token i survives while the mass strictly above it is below top_p: up to and including
        # the first token whose cumulative mass reaches top_p
        kept = torch.where(top_p < 1, first_reaching(probs, top_p) + 1, V).unsqueeze(1)
        if use_top_k:
            kept = torch.minimum(kept, torch.where(top_k > 0, top_k, V).unsqueeze(1))
        keep &= scaled >= srt.gather(1, kept.clamp(1, V) - 1)  # the top token always survives
    return keep


def first_reaching(w: torch.Tensor, target: torch.Tensor, of_total: bool = False,
                   chunk: int = 64) -> torch.Tensor:
    """Per row of w [B, V] (>= 0), the first index whose cumulative sum reaches target [B]: V if
    none does. With `of_total` (the inverse-CDF draw), target is a fraction of each row's total,
    and the index always has positive weight: past the total (float rounding can draw u * total
    just above the scanned sum) it is the last positive one, as in the kernel.

    A scan in two levels, chunk sums then one chunk's cumulative sum: torch's CPU cumsum along
    the vocabulary is sequential and cost 0.7 ms of a 16 ms decode step at 64 x 6144."""
    B, V = w.shape
    pad = -V % chunk
    blocks = F.pad(w, (0, pad)).view(B, -1, chunk)
    ends = blocks.sum(dim=-1).cumsum(dim=-1)  # [B, chunks]: mass up to each chunk's end
    if of_total:
        target = torch.minimum(target * ends[:, -1], ends[:, -1])
    j = torch.searchsorted(ends, target.unsqueeze(1)).clamp_max(ends.shape[1] - 1)  # first chunk reaching it
    start = torch.where(j > 0, ends.gather(1, (j - 1).clamp_min(0)), 0.0)
    inner = start + blocks.gather(1, j.unsqueeze(2).expand(-1, -1, chunk)).squeeze(1).cumsum(dim=-1)
    if of_total:  # the first index reaching min(target, chunk total) is positive
        i = torch.searchsorted(inner, torch.minimum(target.unsqueeze(1), inner[:, -1:]))
    else:
        i = torch.searchsorted(inner, target.unsqueeze(1))
    return (j * chunk + i).squeeze(1).clamp_max(V)


def _sorted_descending(x: torch.Tensor) -> torch.Tensor:
    """Each row's values in descending order. On CPU numpy's vectorised sort is ~30x faster than
    torch.sort for float32 rows (0.34 ms vs 11.5 ms for 64 x 4096 on one core)."""
    if x.device.type == "cpu":
        import numpy as np
        return torch.from_numpy(np.sort(x.numpy(), axis=-1)[:, ::-1].copy())
    return torch.sort(x, dim=-1, descending=True).values


def sample_ref(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
               top_p: torch.Tensor, min_p: torch.Tensor, seeds: torch.Tensor,
               sample_idx: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, V]; per-row params [B]. Returns (tokens int64 [B], logprobs float32 [B]).

    Passes over [B, V] are what this costs on CPU, so work that no row needs is skipped.
    """
    logits = logits.float()
    V = logits.shape[1]
    logp = torch.log_softmax(logits, dim=-1)  # the unmodified distribution, for the returned log-prob
    greedy = temperature <= 0
    if bool(greedy.all()):
        tokens = logits.argmax(dim=-1)
    else:
        t = torch.where(greedy, 1.0, temperature)
        truncate = bool((min_p > 0).any()) or bool((top_p < 1).any()) or bool(((top_k > 0) & (top_k < V)).any())
        if not truncate and bool((t == 1).all()):
            probs = logp.exp()
        else:
            scaled = logits / t.unsqueeze(1)
            if truncate:
                scaled = scaled.masked_fill(~truncation_mask(scaled, top_k, top_p, min_p), float("-inf"))
            probs = torch.softmax(scaled, dim=-1)
        tokens = first_reaching(probs, uniform(row_keys(seeds, sample_idx, steps)), of_total=True)
        if bool(greedy.any()):
            tokens = torch.where(greedy, logits.argmax(dim=-1), tokens)
    return tokens, logp.gather(1, tokens.unsqueeze(1)).squeeze(1)


@triton.jit
def _mix32(x):
    """`mix32` on uint32 (multiplication wraps mod 2^32, as the reference's masked int64 product)."""
    x = x ^ (x >> 16)
    x = x * 0x85EBCA6B
    x = x ^ (x >> 13)
    x = x * 0xC2B2AE35
    return x ^ (x >> 16)


@triton.jit
def _uniform(seed, sample_idx, step):
    """`uniform(row_keys(...))` for one row."""
    h = _mix32((seed & 0xFFFFFFFF).to(tl.uint32) ^ 0x243F6A88)
    h = _mix32(h ^ ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32))
    h = _mix32(h ^ (sample_idx & 0xFFFFFFFF).to(tl.uint32))
    h = _mix32(h + (step & 0xFFFFFFFF).to(tl.uint32) * 0x9E3779B9)
    return ((h >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)


@triton.jit
def _scaled_chunk(ROW, offs, V, temp):
    """Scaled logits s = raw / T of tokens offs (-inf past V) and their order keys: int64 with the
    float's order (negative floats flip their magnitude bits)."""
    s = tl.load(ROW + offs, mask=offs < V, other=float("-inf")).to(tl.float32) / temp
    bits = s.to(tl.int32, bitcast=True)
    return s, tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(tl.int64)


NB, PASSES = 16, 8  # the threshold search: 16 candidate thresholds per pass, 16^8 = 2^32 keys


@triton.jit
def _chunk_bounds(V, chunk):
    """Tokens [lo, hi) of this program's chunk of its row."""
    lo = tl.program_id(1) * chunk
    return lo, tl.minimum(lo + chunk, V)


@triton.jit
def _online(m, z, x):
    """Running (max, sum of exp(x - max)) updated with block x; -inf everywhere stays (-inf, 0)."""
    m_new = tl.maximum(m, tl.max(x, 0))
    safe = tl.where(m_new > float("-inf"), m_new, 0.0)
    return m_new, z * tl.exp(m - safe) + tl.sum(tl.exp(x - safe), 0)


@triton.jit
def _merged(STATS, row, C, k: tl.constexpr, BLOCK_C: tl.constexpr):
    """The row's (max, sum of exp(x - max)) from its chunks' pairs: k = 0 raw logits, 1 scaled."""
    c = tl.arange(0, BLOCK_C)
    ms = tl.load(STATS + (row * C + c) * 4 + 2 * k, mask=c < C, other=float("-inf"))
    zs = tl.load(STATS + (row * C + c) * 4 + 2 * k + 1, mask=c < C, other=0.0)
    m = tl.max(ms, 0)
    return m, tl.sum(zs * tl.exp(ms - tl.where(m > float("-inf"), m, 0.0)), 0)


@triton.jit
def _narrow(PART, lo, hi, target, C, BLOCK_C: tl.constexpr, NB: tl.constexpr):
    """One step of the threshold search: the pass over [lo, hi] evaluated G(t_j) = sum of w over the
    tokens with key > t_j (and key >= the search's first lo) at NB thresholds t_j spread over it;
    PART[c, j] holds chunk c's share. G does not increase with t, so the interval narrows to the
    piece where G drops below target. Every program of a row sums the same shares in the same
    order, so all agree bit for bit."""
    j = tl.arange(0, NB)
    c = tl.arange(0, BLOCK_C)
    t = lo + (j * (hi - lo)) // NB
    g = tl.sum(tl.load(PART + c[:, None] * NB + j[None, :], mask=(c < C)[:, None], other=0.0), 0)
    n = tl.sum((g >= target).to(tl.int32), 0)  # G(t_j) >= target exactly for j < n
    t_below = tl.sum(tl.where(j == n - 1, t, 0), 0)
    t_above = tl.where(n < NB, tl.sum(tl.where(j == n, t, 0), 0), hi)
    return tl.where(n == 0, lo, t_below + 1), tl.where(n == 0, lo, t_above)


@triton.jit
def _search_interval(SEARCH, PART, row, C, p, which, key_min, target,
                     BLOCK_C: tl.constexpr, NB: tl.constexpr, PASSES: tl.constexpr):
    """[lo, hi] that pass p of search `which` (0 top-k, 1 top-p) splits: the whole key range above
    key_min for p = 0, else pass p - 1's interval (SEARCH, two slots used in turn) narrowed by its
    shares. One program per row records it for pass p + 1: no program of pass p reads that slot."""
    if p == 0:
        lo = key_min
        hi = tl.full([], 2147483647, tl.int64)  # G(hi) = 0 < target
    else:
        at = ((row * 2 + which) * 2 + (p - 1) % 2) * 2
        lo, hi = _narrow(PART + (p - 1) * C * NB, tl.load(SEARCH + at), tl.load(SEARCH + at + 1), target, C,
                         BLOCK_C, NB)
    if (tl.program_id(1) == 0) & (p < PASSES):
        at = ((row * 2 + which) * 2 + p % 2) * 2
        tl.store(SEARCH + at, lo)
        tl.store(SEARCH + at + 1, hi)
    return lo, hi


@triton.jit
def _stats_kernel(LOGITS, TEMPERATURE, STATS, ARGMAX, stride_b, V, chunk, BLOCK_V: tl.constexpr):
    """Per chunk: (max, sum of exp) of the raw logits and of the scaled ones, and the first argmax."""
    row = tl.program_id(0).to(tl.int64)
    C = tl.num_programs(1)
    ROW = LOGITS + row * stride_b
    temperature = tl.load(TEMPERATURE + row)
    temp = tl.where(temperature > 0.0, temperature, 1.0)  # temperature 0: greedy
    lo, hi = _chunk_bounds(V, chunk)
    m_raw = tl.full([], float("-inf"), tl.float32)
    z_raw = tl.zeros([], tl.float32)
    m = tl.full([], float("-inf"), tl.float32)
    z = tl.zeros([], tl.float32)
    argmax = lo
    for start in range(lo, hi, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        raw = tl.load(ROW + offs, mask=offs < hi, other=float("-inf")).to(tl.float32)
        block_max, block_arg = tl.max(raw, 0, return_indices=True, return_indices_tie_break_left=True)
        argmax = tl.where(block_max > m_raw, start + block_arg, argmax)  # first max, like torch
        m_raw, z_raw = _online(m_raw, z_raw, raw)
        m, z = _online(m, z, raw / temp)
    at = (row * C + tl.program_id(1)) * 4
    tl.store(STATS + at, m_raw)
    tl.store(STATS + at + 1, z_raw)
    tl.store(STATS + at + 2, m)
    tl.store(STATS + at + 3, z)
    tl.store(ARGMAX + row * C + tl.program_id(1), argmax)


@triton.jit
def _top_k_mass(KEYS, KMASS, row, C, z, use_k, BLOCK_C: tl.constexpr):
    """The smallest order key top-k keeps and the mass it keeps (all keys, all mass without top-k)."""
    key_min = tl.full([], -2147483648, tl.int64)
    z_k = z
    if use_k:
        key_min = tl.load(KEYS + row * 2)
        c = tl.arange(0, BLOCK_C)
        z_k = tl.sum(tl.load(KMASS + row * C + c, mask=c < C, other=0.0), 0)
    return key_min, z_k


@triton.jit
def _min_p_cut(MIN_P, row, m):
    """The smallest scaled logit min-p keeps: max + log(min_p) (-inf without min-p); the kept mass
    and the draw must cut at the same value."""
    min_p = tl.load(MIN_P + row)
    return tl.where(min_p > 0.0, m + tl.log(tl.maximum(min_p, 1e-30)), float("-inf"))


@triton.jit
def _row(TEMPERATURE, TOP_K, V):
    """This program's row, the row's chunk count, temperature and top-k, and whether top-k applies."""
    row = tl.program_id(0).to(tl.int64)
    temperature = tl.load(TEMPERATURE + row)
    top_k = tl.load(TOP_K + row)
    return row, tl.num_programs(1), temperature, top_k, (temperature > 0.0) & (top_k > 0) & (top_k < V)


@triton.jit
def _search_kernel(LOGITS, TEMPERATURE, TOP_K, TOP_P, STATS, SEARCH, PART, KEYS, KMASS, stride_b, V, chunk, p,
                   TOP_P_SEARCH: tl.constexpr, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr, NB: tl.constexpr,
                   PASSES: tl.constexpr):
    """Pass p of top-k's threshold search (on counts) or top-p's (on mass, among the top-k):
    this chunk's shares of G at the NB thresholds that split the pass's interval."""
    row, C, temperature, top_k, use_k = _row(TEMPERATURE, TOP_K, V)
    if TOP_P_SEARCH:
        top_p = tl.load(TOP_P + row)
        use = (temperature > 0.0) & (top_p < 1.0)
    else:
        use = use_k
    if use:
        m, z = _merged(STATS, row, C, 1, BLOCK_C)
        PART += row * (PASSES * C * NB)
        if TOP_P_SEARCH:
            key_min, z_k = _top_k_mass(KEYS, KMASS, row, C, z, use_k, BLOCK_C)
            lo, hi = _search_interval(SEARCH, PART, row, C, p, 1, key_min, top_p * z_k, BLOCK_C, NB, PASSES)
        else:
            key_min = tl.full([], -2147483648, tl.int64)
            lo, hi = _search_interval(SEARCH, PART, row, C, p, 0, key_min, top_k.to(tl.float32), BLOCK_C, NB, PASSES)
        j = tl.arange(0, NB)
        t = lo + (j * (hi - lo)) // NB
        start0, end = _chunk_bounds(V, chunk)
        ROW = LOGITS + row * stride_b
        g = tl.zeros([BLOCK, NB], tl.float32)  # per lane; reduced once, after the loop
        for start in range(start0, end, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            s, key = _scaled_chunk(ROW, offs, end, temperature)
            if TOP_P_SEARCH:
                w = tl.exp(s - m)
            else:
                w = tl.full([BLOCK], 1.0, tl.float32)
            w = tl.where((offs < end) & (key >= key_min), w, 0.0)
            g += tl.where(key[:, None] > t[None, :], w[:, None], 0.0)
        tl.store(PART + (p * C + tl.program_id(1)) * NB + j, tl.sum(g, 0))


@triton.jit
def _mass_kernel(LOGITS, TEMPERATURE, TOP_K, TOP_P, MIN_P, STATS, SEARCH, PART_K, PART_P, KEYS, KMASS, OUT,
                 stride_b, V, chunk, FINAL: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr,
                 NB: tl.constexpr, PASSES: tl.constexpr):
    """Ends a search: the smallest kept key after top-k (KEYS[row, 0]), or, FINAL, after top-p too
    (KEYS[row, 1]); and this chunk's kept mass (sum of exp(s - max)) under it: top-p's base, or,
    FINAL, with min-p applied too, the draw's."""
    row, C, temperature, top_k, use_k = _row(TEMPERATURE, TOP_K, V)
    if FINAL:
        use = temperature > 0.0
    else:
        use = use_k
    if use:
        m, z = _merged(STATS, row, C, 1, BLOCK_C)
        s_min = float("-inf")
        if FINAL:
            key_min, z_k = _top_k_mass(KEYS, KMASS, row, C, z, use_k, BLOCK_C)
            top_p = tl.load(TOP_P + row)
            if top_p < 1.0:
                _, key_min = _search_interval(SEARCH, PART_P + row * (PASSES * C * NB), row, C, PASSES, 1, key_min,
                                              top_p * z_k, BLOCK_C, NB, PASSES)
            s_min = _min_p_cut(MIN_P, row, m)
        else:
            _, key_min = _search_interval(SEARCH, PART_K + row * (PASSES * C * NB), row, C, PASSES, 0,
                                          tl.full([], -2147483648, tl.int64), top_k.to(tl.float32), BLOCK_C, NB,
                                          PASSES)
        if tl.program_id(1) == 0:
            if FINAL:
                tl.store(KEYS + row * 2 + 1, key_min)
            else:
                tl.store(KEYS + row * 2, key_min)
        start0, end = _chunk_bounds(V, chunk)
        ROW = LOGITS + row * stride_b
        total = tl.zeros([BLOCK_V], tl.float32)  # per lane; reduced once, after the loop
        for start in range(start0, end, BLOCK_V):
            s, key = _scaled_chunk(ROW, start + tl.arange(0, BLOCK_V), end, temperature)
            total += tl.where((key >= key_min) & (s >= s_min), tl.exp(s - m), 0.0)
        tl.store(OUT + row * C + tl.program_id(1), tl.sum(total, 0))


@triton.jit
def _draw_kernel(LOGITS, TEMPERATURE, MIN_P, SEEDS, SAMPLE_IDX, STEPS, STATS, KEYS, DMASS, FIRST, LAST,
                 stride_b, V, chunk, BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr):
    """Inverse CDF over this chunk: the first kept token whose cumulative mass (vocabulary order,
    the chunks before it included) reaches u times the kept mass, and the chunk's last kept token."""
    row = tl.program_id(0).to(tl.int64)
    C = tl.num_programs(1)
    temperature = tl.load(TEMPERATURE + row)
    if temperature > 0.0:
        m, z = _merged(STATS, row, C, 1, BLOCK_C)
        key_min = tl.load(KEYS + row * 2 + 1)
        s_min = _min_p_cut(MIN_P, row, m)
        c = tl.arange(0, BLOCK_C)
        masses = tl.load(DMASS + row * C + c, mask=c < C, other=0.0)
        target = _uniform(tl.load(SEEDS + row).to(tl.int64), tl.load(SAMPLE_IDX + row).to(tl.int64),
                          tl.load(STEPS + row).to(tl.int64)) * tl.sum(masses, 0)
        running = tl.sum(tl.where(c < tl.program_id(1), masses, 0.0), 0)
        start0, end = _chunk_bounds(V, chunk)
        ROW = LOGITS + row * stride_b
        first = tl.full([], V, tl.int32)
        last = tl.full([], -1, tl.int32)
        for start in range(start0, end, BLOCK_V):
            offs = start + tl.arange(0, BLOCK_V)
            s, key = _scaled_chunk(ROW, offs, end, temperature)
            kept = (offs < end) & (key >= key_min) & (s >= s_min)
            w = tl.where(kept, tl.exp(s - m), 0.0)
            reached = kept & (running + tl.cumsum(w, 0) >= target)
            first = tl.minimum(first, tl.min(tl.where(reached, offs, V), 0))
            last = tl.maximum(last, tl.max(tl.where(kept, offs, -1), 0))
            running += tl.sum(w, 0)
        tl.store(FIRST + row * C + tl.program_id(1), first)
        tl.store(LAST + row * C + tl.program_id(1), last)


@triton.jit
def _finish_kernel(LOGITS, TEMPERATURE, STATS, ARGMAX, FIRST, LAST, TOKENS, LOGPROBS, stride_b, V, C,
                   BLOCK_C: tl.constexpr):
    """Per row: the token (greedy: the first maximum; else the first chunk's draw, or the last kept
    token where rounding left the scan just short of its target) and its log-prob at T = 1."""
    row = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    m_raw, z_raw = _merged(STATS, row, C, 0, BLOCK_C)
    chunk_max = tl.load(STATS + (row * C + c) * 4, mask=c < C, other=float("-inf"))
    argmax = tl.load(ARGMAX + row * C + c, mask=c < C, other=V)
    x = tl.min(tl.where((chunk_max == m_raw) & (c < C), argmax, V), 0)
    if tl.load(TEMPERATURE + row) > 0.0:
        first = tl.min(tl.load(FIRST + row * C + c, mask=c < C, other=V), 0)
        last = tl.max(tl.load(LAST + row * C + c, mask=c < C, other=-1), 0)
        x = tl.where(first < V, first, last)
    tl.store(TOKENS + row, x.to(tl.int64))
    tl.store(LOGPROBS + row, tl.load(LOGITS + row * stride_b + x).to(tl.float32) - m_raw - tl.log(z_raw))


def chunk_size(B: int, V: int, device: torch.device) -> int:
    """Tokens per chunk: enough chunks that B x chunks programs fill every SM several times (one
    program per row left most of the GPU idle at small batches: 1.6 ms per step at n=16 on an
    H200), none under 2048 tokens (each pass costs a chunk a few microseconds however short)."""
    chunks = max(1, min(triton.cdiv(8 * sm_count(device), B), triton.cdiv(V, 2048)))
    return triton.cdiv(triton.cdiv(V, chunks), 1024) * 1024


def sample_triton(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                  top_p: torch.Tensor, min_p: torch.Tensor, seeds: torch.Tensor,
                  sample_idx: torch.Tensor, steps: torch.Tensor, *,
                  chunks: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `sample_ref`; a fixed sequence of launches over (row, chunk) programs, no host
    sync (CUDA-graph capturable). `chunks` overrides how many chunks each row is split into."""
    B, V = logits.shape
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    device = logits.device
    tokens = torch.empty(B, dtype=torch.int64, device=device)
    logprobs = torch.empty(B, dtype=torch.float32, device=device)
    if B == 0:
        return tokens, logprobs
    chunk = chunk_size(B, V, device) if chunks is None else triton.cdiv(V, chunks)
    C = triton.cdiv(V, chunk)
    block_v = min(triton.next_power_of_2(chunk), 1024)
    stats = torch.empty(B, C, 4, dtype=torch.float32, device=device)
    argmax, first, last = (torch.empty(B, C, dtype=torch.int32, device=device) for _ in range(3))
    part_k, part_p = (torch.empty(B, PASSES, C, NB, dtype=torch.float32, device=device) for _ in range(2))
    kmass, dmass = (torch.empty(B, C, dtype=torch.float32, device=device) for _ in range(2))
    search = torch.empty(B, 2, 2, 2, dtype=torch.int64, device=device)  # per search, two slots of [lo, hi]
    keys = torch.empty(B, 2, dtype=torch.int64, device=device)  # the smallest key kept: by top-k, by all
    grid, stride = (B, C), logits.stride(0)
    tile = dict(BLOCK_C=triton.next_power_of_2(C), NB=NB, PASSES=PASSES, num_warps=4)

    _stats_kernel[grid](logits, temperature, stats, argmax, stride, V, chunk, BLOCK_V=block_v, num_warps=4)
    for top_p_search, part, mass in ((False, part_k, kmass), (True, part_p, dmass)):
        for p in range(PASSES):
            _search_kernel[grid](logits, temperature, top_k, top_p, stats, search, part, keys, kmass, stride, V, chunk,
                                 p, TOP_P_SEARCH=top_p_search, BLOCK=min(block_v, 256), **tile)
        _mass_kernel[grid](logits, temperature, top_k, top_p, min_p, stats, search, part_k, part_p, keys, kmass, mass,
                           stride, V, chunk, FINAL=top_p_search, BLOCK_V=block_v, **tile)
    _draw_kernel[grid](logits, temperature, min_p, seeds, sample_idx, steps, stats, keys, dmass, first, last, stride, V,
                       chunk, BLOCK_V=block_v, BLOCK_C=tile["BLOCK_C"], num_warps=4)
    _finish_kernel[(B,)](logits, temperature, stats, argmax, first, last, tokens, logprobs, stride, V, C,
                         BLOCK_C=tile["BLOCK_C"], num_warps=1)
    return tokens, logprobs
