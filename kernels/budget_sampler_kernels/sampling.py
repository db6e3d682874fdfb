"""Fused sampling: temperature, top-k, top-p, min-p and a counter-based RNG; reference and kernel.

Every truncation keeps {s >= threshold} of the scaled logits s = logits / T, in Hugging Face's
order: top-k, then top-p on the top-k renormalised distribution (a token survives while the mass
strictly above it is below top_p), then min-p (keep p >= min_p * p_max, order-independent). The
returned log-prob is the chosen token's under the unmodified distribution (T = 1, no truncation).

The draw is rejection sampling over nested candidate sets (after FlashInfer's sorting-free
sampling, Ye et al. 2025), so no threshold is searched for: round r draws a token j from the
candidates (inverse CDF: the first candidate whose cumulative mass, in vocabulary order, reaches
u_r times theirs) and accepts it when it is kept: its s passes min-p, with top-p the mass above it
is below top_p, with top-k fewer than k tokens are above it. A rejected j proves every token with
s <= s_j is cut, so the next round's candidates are those above it; each round's draw is exact
given the candidates, so the accepted token follows the truncated distribution exactly. With
top-p a round accepts with probability >= top_p (the nucleus holds that share of any candidate
set containing it), so one round almost always suffices; top-k accepts with the top k's share of
the candidates' mass, high for a trained model's peaked rows. After ROUNDS rejections, and for
rows with both top-k and top-p (top-p's mass is then the top-k's, known only once the top-k are),
the kept set is found exactly (each threshold by search) and drawn from with u_ROUNDS.

u_r comes from a counter-based hash of (seed, sample index, step, r), so a sample's tokens do not
depend on which other samples share its batch, and the Triton kernel draws the very same u_r as
the reference (both compute the same 32-bit integer hash) and makes the same decisions: CPU and
GPU draw the same tokens unless float rounding decides a draw (u within ~1e-6 of a CDF boundary).
One hash per row and round keeps the CPU path cheap at large vocabularies (a per-token Gumbel draw
cost more than the model's forward there). u_r has 24 bits, the resolution of a float32 CDF.

The kernels never sort. Each row is split into chunks, one program per (row, chunk); a launch is a
pass, and a pass's per-chunk sums are combined by the next launch's programs, so small batches of
a large vocabulary still fill the GPU. Under the paper's sampling (top-p) a step streams the logits
twice: stats (max, log-sum-exp, argmax per chunk), then the check of round 0's token (the mass and
count above it, per chunk: also the next round's candidate masses); each draw scans only the one
chunk of its row that holds the target. Launches of rows with nothing to do return at once. The
fallback's threshold searches are 16-way searches on the float's bits (8 passes each).
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


ROUNDS = 3  # rejection rounds before the exact fallback: each accepts with probability >= top_p
ROUND_SALT = 0x7FEB352D  # round r's uniform hashes the row key plus r times this (mod 2^32)


def _salt(r: int) -> int:
    return r * ROUND_SALT & MASK32


def uniform(keys: torch.Tensor, r: int) -> torch.Tensor:
    """Round r's u in (0, 1) per row: the 24 high bits of the hashed row key, centred in their bucket."""
    h = mix32((keys + _salt(r)) & MASK32)
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)


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
    blocks = (F.pad(w, (0, pad)) if pad else w).reshape(B, -1, chunk)  # (F.pad copies even with no padding)
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


def draw_ref(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor,
             keys: torch.Tensor) -> torch.Tensor:
    """Tokens [B] drawn from the truncated softmax of scaled [B, V]: the rejection rounds, then
    the exact fallback for rows they did not settle (the kernel's algorithm, vectorised). A pass
    over [B, V] is what costs here, so later rounds take only the rejected rows."""
    B, V = scaled.shape
    w = torch.softmax(scaled, dim=-1)  # (the kernel's exp(s - max) over its sum: decisions compare ratios)
    cut = torch.full((B,), float("-inf"), device=scaled.device)  # min-p keeps s >= max + log(min_p)
    if bool((min_p > 0).any()):
        cut = torch.where(min_p > 0, torch.log(min_p.clamp_min(1e-30)), cut) + scaled.amax(dim=-1)
    with_k = (top_k > 0) & (top_k < V)
    tokens = torch.full((B,), -1, dtype=torch.int64, device=scaled.device)
    rows = torch.nonzero(~(with_k & (top_p < 1))).flatten()  # (top-p among the top-k needs their mass)
    s, ws, ks, k, p, c, wk = ((x[rows] for x in (scaled, w, keys, top_k, top_p, cut, with_k)) if len(rows) < B
                              else (scaled, w, keys, top_k, top_p, cut, with_k))
    cand, z = ws, (ws.sum(dim=-1) if bool((p < 1).any()) else p)  # z: top-p's measure (unused without)
    any_min_p, any_k = bool((min_p > 0).any()), bool(with_k.any())
    for r in range(ROUNDS if len(rows) else 0):
        j = first_reaching(cand, uniform(ks, r), of_total=True)
        s_j = s.gather(1, j.unsqueeze(1))
        passes = s_j.squeeze(1) >= c
        accept = passes & (p >= 1) & ~wk
        if not bool(accept.all()):  # the mass above j that min-p keeps, and how many tokens are above it
            higher = s > s_j
            above = torch.where(higher & (s >= c.unsqueeze(1)) if any_min_p else higher, ws, 0.0)
            accept |= passes & ((p >= 1) | (above.sum(dim=-1) < p * z)) \
                & (~wk | (higher.sum(dim=-1) < k if any_k else True))
        tokens[rows[accept]] = j[accept]
        if bool(accept.all()):
            break
        rest = ~accept
        rows, cand, s, ws, ks, k, p, z, c, wk = (x[rest] for x in (rows, above, s, ws, ks, k, p, z, c, wk))
    left = torch.nonzero(tokens < 0).flatten()
    if not len(left):
        return tokens
    keep = truncation_mask(scaled[left], top_k[left], top_p[left], min_p[left])
    tokens[left] = first_reaching(torch.where(keep, w[left], 0.0), uniform(keys[left], ROUNDS), of_total=True)
    return tokens


def sample_ref(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
               top_p: torch.Tensor, min_p: torch.Tensor, seeds: torch.Tensor,
               sample_idx: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, V]; per-row params [B]. Returns (tokens int64 [B], logprobs float32 [B])."""
    logits = logits.float()
    sampled = temperature > 0
    if bool(sampled.all()):
        tokens = draw_ref(logits / temperature.unsqueeze(1), top_k, top_p, min_p, row_keys(seeds, sample_idx, steps))
    else:
        tokens = logits.argmax(dim=-1)  # temperature 0: greedy
        rows = torch.nonzero(sampled).flatten()
        if len(rows):
            tokens[rows] = draw_ref(logits[rows] / temperature[rows].unsqueeze(1), top_k[rows], top_p[rows],
                                    min_p[rows], row_keys(seeds[rows], sample_idx[rows], steps[rows]))
    return tokens, torch.log_softmax(logits, dim=-1).gather(1, tokens.unsqueeze(1)).squeeze(1)


@triton.jit
def _mix32(x):
    """`mix32` on uint32 (multiplication wraps mod 2^32, as the reference's masked int64 product)."""
    x = x ^ (x >> 16)
    x = x * 0x85EBCA6B
    x = x ^ (x >> 13)
    x = x * 0xC2B2AE35
    return x ^ (x >> 16)


@triton.jit
def _uniform(SEEDS, SAMPLE_IDX, STEPS, row, SALT: tl.constexpr):
    """`uniform(row_keys(...), r)` for one row; SALT = r * ROUND_SALT mod 2^32."""
    seed = tl.load(SEEDS + row).to(tl.int64)
    h = _mix32((seed & 0xFFFFFFFF).to(tl.uint32) ^ 0x243F6A88)
    h = _mix32(h ^ ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32))
    h = _mix32(h ^ (tl.load(SAMPLE_IDX + row).to(tl.int64) & 0xFFFFFFFF).to(tl.uint32))
    h = _mix32(h + (tl.load(STEPS + row).to(tl.int64) & 0xFFFFFFFF).to(tl.uint32) * 0x9E3779B9)
    h = _mix32(h + SALT)
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
def _search_kernel(LOGITS, TEMPERATURE, TOP_K, TOP_P, STATS, SEARCH, PART, KEYS, KMASS, DONE, stride_b, V, chunk, p,
                   TOP_P_SEARCH: tl.constexpr, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr, NB: tl.constexpr,
                   PASSES: tl.constexpr):
    """Pass p of the fallback's top-k threshold search (on counts) or top-p's (on mass, among the
    top-k), for rows the rounds did not settle: this chunk's shares of G at the NB thresholds that
    split the pass's interval."""
    row, C, temperature, top_k, use_k = _row(TEMPERATURE, TOP_K, V)
    if TOP_P_SEARCH:
        top_p = tl.load(TOP_P + row)
        use = (temperature > 0.0) & (top_p < 1.0) & (tl.load(DONE + row) < 0)
    else:
        use = use_k & (tl.load(DONE + row) < 0)
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
def _mass_kernel(LOGITS, TEMPERATURE, TOP_K, TOP_P, MIN_P, STATS, SEARCH, PART_K, PART_P, KEYS, KMASS, DONE, OUT,
                 stride_b, V, chunk, FINAL: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr,
                 NB: tl.constexpr, PASSES: tl.constexpr):
    """Ends a search: the smallest kept key after top-k (KEYS[row, 0]), or, FINAL, after top-p too
    (KEYS[row, 1]), for rows the rounds did not settle; and this chunk's kept mass (sum of
    exp(s - max)) under it: top-p's base, or, FINAL, with min-p applied too, the fallback draw's."""
    row, C, temperature, top_k, use_k = _row(TEMPERATURE, TOP_K, V)
    if FINAL:
        use = (temperature > 0.0) & (tl.load(DONE + row) < 0)
    else:
        use = use_k & (tl.load(DONE + row) < 0)
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
def _scan(ROW, lo, hi, temperature, m, key_min, s_low, s_min, running, target, V, BLOCK_V: tl.constexpr):
    """Inverse CDF over tokens [lo, hi) kept by key >= key_min, s > s_low and s >= s_min, the mass
    before lo being `running`: the first whose cumulative mass reaches target (V if none), and
    the last kept one (-1 if none)."""
    first = tl.full([], V, tl.int32)
    last = tl.full([], -1, tl.int32)
    for start in range(lo, hi, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        s, key = _scaled_chunk(ROW, offs, hi, temperature)
        kept = (offs < hi) & (key >= key_min) & (s > s_low) & (s >= s_min)
        w = tl.where(kept, tl.exp(s - m), 0.0)
        reached = kept & (running + tl.cumsum(w, 0) >= target)
        first = tl.minimum(first, tl.min(tl.where(reached, offs, V), 0))
        last = tl.maximum(last, tl.max(tl.where(kept, offs, -1), 0))
        running += tl.sum(w, 0)
    return first, last


@triton.jit
def _in_rounds(TOP_K, TOP_P, row, V):
    """Whether a sampled row is drawn by the rounds (not with both top-k and top-p: top-p's mass
    is then the top-k's, known only after top-k's search), and whether it has top-k."""
    top_k = tl.load(TOP_K + row)
    use_k = (top_k > 0) & (top_k < V)
    return ~(use_k & (tl.load(TOP_P + row) < 1.0)), use_k, top_k


@triton.jit
def _pick_kernel(LOGITS, TEMPERATURE, TOP_K, TOP_P, MIN_P, SEEDS, SAMPLE_IDX, STEPS, STATS, MASS, COUNT, CAND,
                 DONE, stride_b, V, chunk, C, B, R: tl.constexpr, SALT: tl.constexpr, DRAW: tl.constexpr,
                 BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr):
    """One program per row. Settles round R - 1 (accepts its token, or its candidates become the
    tokens above it) and, with DRAW, draws round R's token: the chunk where the candidates'
    cumulative mass reaches u_R times theirs, then the token within it (the only chunk scanned).
    A token past min-p with neither top-p nor top-k is accepted at once."""
    row = tl.program_id(0).to(tl.int64)
    temperature = tl.load(TEMPERATURE + row)
    rounds, use_k, top_k = _in_rounds(TOP_K, TOP_P, row, V)
    if (temperature > 0.0) & rounds:
        m, z = _merged(STATS, row, C, 1, BLOCK_C)
        s_min = _min_p_cut(MIN_P, row, m)
        top_p = tl.load(TOP_P + row)
        c = tl.arange(0, BLOCK_C)
        ROW = LOGITS + row * stride_b
        if R == 0:  # the candidates: every token (min-p's cut needs the max)
            done = tl.full([], -1, tl.int64)
            s_low = float("-inf")
            s_cut = float("-inf")
            ms = tl.load(STATS + (row * C + c) * 4 + 2, mask=c < C, other=float("-inf"))
            zs = tl.load(STATS + (row * C + c) * 4 + 3, mask=c < C, other=0.0)
            masses = zs * tl.exp(ms - m)
        else:
            done = tl.load(DONE + row)
            j = tl.where(done < 0, tl.load(CAND + (R - 1) * B + row), 0)  # unwritten for rows settled before
            s_low = tl.load(ROW + j).to(tl.float32) / temperature
            s_cut = s_min
            at = ((R - 1) * B + row) * C + c
            masses = tl.load(MASS + at, mask=c < C, other=0.0)
            if done < 0:
                higher = tl.sum(tl.load(COUNT + at, mask=c < C, other=0), 0)
                if (s_low >= s_min) & ((top_p >= 1.0) | (tl.sum(masses, 0) < top_p * z)) & (~use_k | (higher < top_k)):
                    done = j
                    tl.store(DONE + row, j)
        if DRAW:
            if done < 0:
                ends = tl.cumsum(masses, 0)
                target = _uniform(SEEDS, SAMPLE_IDX, STEPS, row, SALT) * tl.max(ends, 0)
                k = tl.minimum(tl.sum(((ends < target) & (c < C)).to(tl.int32), 0), C - 1)
                before = tl.sum(tl.where(c == k - 1, ends, 0.0), 0)
                lo = k * chunk
                first, last = _scan(ROW, lo, tl.minimum(lo + chunk, V), temperature, m, -2147483648, s_low, s_cut,
                                    before, target, V, BLOCK_V)
                j = tl.where(first < V, first, last).to(tl.int64)
                tl.store(CAND + R * B + row, j)
                if (top_p >= 1.0) & ~use_k & (tl.load(ROW + j).to(tl.float32) / temperature >= s_min):
                    tl.store(DONE + row, j)


@triton.jit
def _check_kernel(LOGITS, TEMPERATURE, TOP_K, TOP_P, MIN_P, STATS, CAND, DONE, MASS, COUNT, stride_b, V, chunk, B,
                  R: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr):
    """Round R's unsettled rows, this chunk's share of what the round's token is weighed by: the
    mass above it among the tokens min-p keeps (top-p's measure, and the next round's candidate
    mass) and how many tokens are above it (top-k's)."""
    row = tl.program_id(0).to(tl.int64)
    C = tl.num_programs(1)
    rounds = _in_rounds(TOP_K, TOP_P, row, V)[0]
    temperature = tl.load(TEMPERATURE + row)
    if (temperature > 0.0) & rounds & (tl.load(DONE + row) < 0):
        m, z = _merged(STATS, row, C, 1, BLOCK_C)
        s_min = _min_p_cut(MIN_P, row, m)
        ROW = LOGITS + row * stride_b
        s_j = tl.load(ROW + tl.load(CAND + R * B + row)).to(tl.float32) / temperature
        start0, end = _chunk_bounds(V, chunk)
        total = tl.zeros([BLOCK_V], tl.float32)  # per lane; reduced once, after the loop
        count = tl.zeros([BLOCK_V], tl.int32)
        for start in range(start0, end, BLOCK_V):
            offs = start + tl.arange(0, BLOCK_V)
            s = _scaled_chunk(ROW, offs, end, temperature)[0]
            higher = (offs < end) & (s > s_j)
            total += tl.where(higher & (s >= s_min), tl.exp(s - m), 0.0)
            count += higher.to(tl.int32)
        at = (R * B + row) * C + tl.program_id(1)
        tl.store(MASS + at, tl.sum(total, 0))
        tl.store(COUNT + at, tl.sum(count, 0))


@triton.jit
def _draw_kernel(LOGITS, TEMPERATURE, MIN_P, SEEDS, SAMPLE_IDX, STEPS, STATS, KEYS, DMASS, DONE, FIRST, LAST,
                 stride_b, V, chunk, SALT: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr):
    """The fallback's inverse CDF over this chunk, for rows the rounds did not settle: the first
    kept token whose cumulative mass (vocabulary order, the chunks before it included) reaches u
    times the kept mass, and the chunk's last kept token."""
    row = tl.program_id(0).to(tl.int64)
    C = tl.num_programs(1)
    temperature = tl.load(TEMPERATURE + row)
    if (temperature > 0.0) & (tl.load(DONE + row) < 0):
        m, z = _merged(STATS, row, C, 1, BLOCK_C)
        c = tl.arange(0, BLOCK_C)
        masses = tl.load(DMASS + row * C + c, mask=c < C, other=0.0)
        target = _uniform(SEEDS, SAMPLE_IDX, STEPS, row, SALT) * tl.sum(masses, 0)
        start0, end = _chunk_bounds(V, chunk)
        first, last = _scan(LOGITS + row * stride_b, start0, end, temperature, m, tl.load(KEYS + row * 2 + 1),
                            float("-inf"), _min_p_cut(MIN_P, row, m),
                            tl.sum(tl.where(c < tl.program_id(1), masses, 0.0), 0), target, V, BLOCK_V)
        tl.store(FIRST + row * C + tl.program_id(1), first)
        tl.store(LAST + row * C + tl.program_id(1), last)


@triton.jit
def _finish_kernel(LOGITS, TEMPERATURE, STATS, ARGMAX, DONE, FIRST, LAST, TOKENS, LOGPROBS, stride_b, V, C,
                   BLOCK_C: tl.constexpr):
    """Per row: the token (greedy: the first maximum; else the accepted round's, or the fallback's
    first chunk's draw, or its last kept token where rounding left the scan just short of its
    target) and its log-prob at T = 1."""
    row = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    m_raw, z_raw = _merged(STATS, row, C, 0, BLOCK_C)
    chunk_max = tl.load(STATS + (row * C + c) * 4, mask=c < C, other=float("-inf"))
    argmax = tl.load(ARGMAX + row * C + c, mask=c < C, other=V)
    x = tl.min(tl.where((chunk_max == m_raw) & (c < C), argmax, V), 0).to(tl.int64)
    if tl.load(TEMPERATURE + row) > 0.0:
        x = tl.load(DONE + row)
        if x < 0:
            first = tl.min(tl.load(FIRST + row * C + c, mask=c < C, other=V), 0)
            last = tl.max(tl.load(LAST + row * C + c, mask=c < C, other=-1), 0)
            x = tl.where(first < V, first, last).to(tl.int64)
    tl.store(TOKENS + row, x)
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
    mass = torch.empty(ROUNDS, B, C, dtype=torch.float32, device=device)  # per round: candidate mass above its token
    count = torch.empty(ROUNDS, B, C, dtype=torch.int32, device=device)  # per round: tokens above it
    cand = torch.empty(ROUNDS, B, dtype=torch.int64, device=device)  # per round: the token drawn
    done = torch.full((B,), -1, dtype=torch.int64, device=device)  # the accepted token, -1 while none
    search = torch.empty(B, 2, 2, 2, dtype=torch.int64, device=device)  # per search, two slots of [lo, hi]
    keys = torch.empty(B, 2, dtype=torch.int64, device=device)  # the smallest key kept: by top-k, by all
    grid, stride = (B, C), logits.stride(0)
    tile = dict(BLOCK_C=triton.next_power_of_2(C), NB=NB, PASSES=PASSES, num_warps=4)
    per_row = dict(BLOCK_V=block_v, BLOCK_C=tile["BLOCK_C"], num_warps=4)

    _stats_kernel[grid](logits, temperature, stats, argmax, stride, V, chunk, BLOCK_V=block_v, num_warps=4)
    for r in range(ROUNDS + 1):
        _pick_kernel[(B,)](logits, temperature, top_k, top_p, min_p, seeds, sample_idx, steps, stats, mass, count,
                           cand, done, stride, V, chunk, C, B, R=r, SALT=_salt(r), DRAW=r < ROUNDS, **per_row)
        if r < ROUNDS:
            _check_kernel[grid](logits, temperature, top_k, top_p, min_p, stats, cand, done, mass, count, stride, V,
                                chunk, B, R=r, **per_row)
    # the fallback, for rows the rounds did not settle: the exact thresholds, then the draw
    for top_p_search, part, kept in ((False, part_k, kmass), (True, part_p, dmass)):
        for p in range(PASSES):
            _search_kernel[grid](logits, temperature, top_k, top_p, stats, search, part, keys, kmass, done, stride, V,
                                 chunk, p, TOP_P_SEARCH=top_p_search, BLOCK=min(block_v, 256), **tile)
        _mass_kernel[grid](logits, temperature, top_k, top_p, min_p, stats, search, part_k, part_p, keys, kmass, done,
                           kept, stride, V, chunk, FINAL=top_p_search, BLOCK_V=block_v, **tile)
    _draw_kernel[grid](logits, temperature, min_p, seeds, sample_idx, steps, stats, keys, dmass, done, first, last,
                       stride, V, chunk, SALT=_salt(ROUNDS), **per_row)
    _finish_kernel[(B,)](logits, temperature, stats, argmax, done, first, last, tokens, logprobs, stride, V, C,
                         BLOCK_C=tile["BLOCK_C"], num_warps=1)
    return tokens, logprobs
