"""Fused sampling: temperature, top-k, top-p, min-p and a counter-based RNG; reference and kernel.

Draw = Gumbel-max: argmax over kept tokens of logits / T + g, g = -log(-log(u)), which samples
exactly from softmax(logits / T) restricted to the kept tokens, with no sort needed for the draw.
u comes from a counter-based hash of (seed, sample index, step, token id), so a sample's tokens do
not depend on which other samples share its batch, and the Triton kernel reproduces the reference's
noise bit for bit (both compute the same 32-bit integer hash).

Truncation follows Hugging Face's order: temperature, then top-k, then top-p on the top-k
renormalised distribution, then min-p (keep p >= min_p * p_max, order-independent).
The returned log-prob is the chosen token's under the unmodified distribution (T = 1, no truncation).
"""
from __future__ import annotations

import torch

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


def uniform_noise(keys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """u in (0, 1) per (row, token): 24 high bits of mix32(key ^ mix32(token * golden))."""
    tok = torch.arange(vocab_size, device=keys.device, dtype=torch.int64)
    h = mix32(keys.unsqueeze(1) ^ mix32((tok * 0x9E3779B1) & MASK32).unsqueeze(0))
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)


def truncation_mask(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                    min_p: torch.Tensor) -> torch.Tensor:
    """Boolean [B, V]: True where a token survives top-k, top-p and min-p (scaled = logits / T)."""
    B, V = scaled.shape
    keep = torch.ones_like(scaled, dtype=torch.bool)
    if bool((min_p > 0).any()):
        thresh = scaled.max(dim=-1, keepdim=True).values + torch.log(min_p.clamp_min(1e-30)).unsqueeze(1)
        keep &= (scaled >= thresh) | (min_p <= 0).unsqueeze(1)
    if bool(((top_k > 0) & (top_k < V)).any()) or bool((top_p < 1).any()):
        srt, idx = torch.sort(scaled, dim=-1, descending=True)
        rank = torch.arange(V, device=scaled.device).unsqueeze(0)
        k = torch.where(top_k > 0, top_k, V).unsqueeze(1)
        srt = srt.masked_fill(rank >= k, float("-inf"))
        probs = torch.softmax(srt, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each token
        keep_sorted = (rank < k) & (before < top_p.unsqueeze(1))
        keep &= torch.zeros_like(keep).scatter(1, idx, keep_sorted)
    return keep


def sample_ref(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
               top_p: torch.Tensor, min_p: torch.Tensor, seeds: torch.Tensor,
               sample_idx: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, V]; per-row params [B]. Returns (tokens int64 [B], logprobs float32 [B])."""
    logits = logits.float()
    greedy = temperature <= 0
    scaled = logits / torch.where(greedy, 1.0, temperature).unsqueeze(1)
    keep = truncation_mask(scaled, top_k, top_p, min_p)
    u = uniform_noise(row_keys(seeds, sample_idx, steps), logits.shape[1])
    gumbel = -torch.log(-torch.log(u))
    scores = torch.where(keep, scaled + gumbel, float("-inf"))
    tokens = torch.where(greedy, logits.argmax(dim=-1), scores.argmax(dim=-1))
    logprobs = torch.log_softmax(logits, dim=-1).gather(1, tokens.unsqueeze(1)).squeeze(1)
    return tokens, logprobs
