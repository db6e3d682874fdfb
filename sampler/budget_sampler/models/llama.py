"""The Llama-style decoder (Llama / CodeLlama / Llama 3, Qwen2, Qwen3, Mistral, StarCoder2, Gemma, and
the mixtures of experts Qwen3-MoE and Mixtral) in plain PyTorch.

Reads top to bottom like gpt-fast: a config taken from the Hugging Face config, the rotary table,
then Transformer -> Block -> attention / MLP / norm. The families differ only in a few switches of
the config: the norm (RMSNorm, Gemma's (1 + w) RMSNorm, LayerNorm with bias), the MLP (gated or
not, its activation), biases, Qwen3's per-head q/k RMSNorm, Gemma's scaled embedding, and routed
experts in place of the MLP (MoE, beside MLP; all of a layer's experts in two stacked tensors). The model
knows nothing about how the KV cache is laid out: each forward gets a batch view (see
budget_sampler/cache.py) that says where to write K/V and how to attend. The per-op math goes through
`kernels` (Triton on CUDA, torch references on CPU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

import budget_sampler_kernels as kernels

from ..errors import InvalidInput

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
# Families that share the architecture but need attention our kernels do not have.
UNSUPPORTED_MODEL_TYPES = {
    "gemma2": "its attention-logit soft-capping and alternating sliding-window layers are not in "
              "our attention kernels",
}
ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh")}


@dataclass
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    norm: str  # "rms" | "gemma_rms" (scales by 1 + w, in float32) | "layer" (LayerNorm with bias)
    norm_eps: float
    max_position_embeddings: int
    rope_theta: float
    rope_scaling: dict
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    tie_word_embeddings: bool
    sliding_window: Optional[int]
    hidden_act: str
    gated_mlp: bool      # act(gate) * up (Llama) or act(up) (StarCoder2)
    qk_norm: bool        # Qwen3: RMSNorm over each query and key head before RoPE
    embed_scale: float   # Gemma multiplies the embeddings by sqrt(hidden_size)
    # mixture of experts (Qwen3-MoE, Mixtral): the layers whose MLP is routed experts, each token's
    # top num_experts_per_tok of num_experts, each expert a gated MLP of moe_intermediate_size
    moe_layers: tuple[int, ...] = ()
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = False  # renormalise the top-k routing weights to sum to 1

    @classmethod
    def from_hf(cls, c) -> "ModelConfig":
        """Normalise a transformers config of any supported family (transformers 4.x and 5.x): the
        Llama block's fields, then the family's deltas (FAMILIES)."""
        check_model_type(c.model_type)
        fields = _llama_fields(c)
        fields.update(FAMILIES[c.model_type](c))
        if fields["hidden_act"] not in ACTIVATIONS:
            raise InvalidInput(f"hidden_act {fields['hidden_act']!r} is not supported; supported: "
                               f"{', '.join(ACTIVATIONS)}")
        return cls(**fields)

    @property
    def max_context(self) -> int:
        """Longest prompt + generation we attend over exactly (full attention inside the window)."""
        if self.sliding_window:
            return min(self.max_position_embeddings, self.sliding_window)
        return self.max_position_embeddings


def _rope_fields(c) -> dict:
    rope = dict(getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise InvalidInput(f"rope type {rope_type!r} is not supported; supported: "
                           f"{', '.join(SUPPORTED_ROPE_TYPES)}")
    rope["rope_type"] = rope_type
    return dict(rope_theta=float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))), rope_scaling=rope)


def _llama_fields(c) -> dict:
    """The Llama block (Llama, CodeLlama, Llama 3, Mistral): what every family starts from."""
    heads = c.num_attention_heads
    bias = bool(getattr(c, "attention_bias", False))
    return dict(
        model_type=c.model_type, vocab_size=c.vocab_size, hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size, num_layers=c.num_hidden_layers, num_heads=heads,
        num_kv_heads=getattr(c, "num_key_value_heads", None) or heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads,
        norm="rms", norm_eps=getattr(c, "rms_norm_eps", None), max_position_embeddings=c.max_position_embeddings,
        **_rope_fields(c), qkv_bias=bias, o_bias=bias, mlp_bias=bool(getattr(c, "mlp_bias", False)),
        tie_word_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
        sliding_window=getattr(c, "sliding_window", None),
        hidden_act=getattr(c, "hidden_activation", None) or c.hidden_act,
        gated_mlp=True, qk_norm=False, embed_scale=1.0)


def _qwen(c) -> dict:
    """Qwen2 / Qwen3: a window only when use_sliding_window says so."""
    return {"sliding_window": c.sliding_window if getattr(c, "use_sliding_window", False) else None}


def _qwen2(c) -> dict:
    return _qwen(c) | {"qkv_bias": True, "o_bias": False}


def _qwen3(c) -> dict:
    return _qwen(c) | {"qk_norm": True}


def _starcoder2(c) -> dict:
    """LayerNorm with bias, a plain (not gated) MLP, one use_bias switch for every projection."""
    bias = bool(c.use_bias)
    return dict(norm="layer", norm_eps=c.norm_epsilon, qkv_bias=bias, o_bias=bias,
                mlp_bias=bool(getattr(c, "mlp_bias", False)) or bias, gated_mlp=False)


def _gemma(c) -> dict:
    """(1 + w) RMSNorm, embeddings x sqrt(hidden); older configs say gelu, meaning tanh (transformers
    5 corrects it too)."""
    act = getattr(c, "hidden_activation", None) or c.hidden_act
    return dict(norm="gemma_rms", embed_scale=c.hidden_size ** 0.5,
                hidden_act="gelu_pytorch_tanh" if act == "gelu" else act)


def _experts(c, layers, width: int, renormalize: bool) -> dict:
    """Routed experts in `layers`: top num_experts_per_tok of num_experts (Mixtral's num_local_experts in
    transformers 4), each a SiLU-gated MLP `width` wide."""
    experts, top_k = getattr(c, "num_experts", None) or c.num_local_experts, c.num_experts_per_tok
    if not 1 <= top_k <= experts:
        raise InvalidInput(f"num_experts_per_tok={top_k!r} is invalid: must be between 1 and num_experts ({experts})")
    if c.hidden_act != "silu":
        raise InvalidInput(f"hidden_act {c.hidden_act!r} is not supported for routed experts; supported: silu")
    return dict(moe_layers=tuple(layers), num_experts=experts, num_experts_per_tok=top_k, moe_intermediate_size=width,
                norm_topk_prob=renormalize)


def _qwen3_moe(c) -> dict:
    """Qwen3's attention; layer i is routed experts unless it is in mlp_only_layers or (i + 1) is not a
    multiple of decoder_sparse_step (then a dense MLP of intermediate_size); renormalised top-k when
    norm_topk_prob."""
    dense = set(c.mlp_only_layers or [])
    layers = [i for i in range(c.num_hidden_layers) if i not in dense and (i + 1) % c.decoder_sparse_step == 0]
    return _qwen3(c) | _experts(c, layers, c.moe_intermediate_size, bool(c.norm_topk_prob))


def _mixtral(c) -> dict:
    """Mistral's block with every MLP routed experts of intermediate_size, top-k always renormalised."""
    return _experts(c, range(c.num_hidden_layers), c.intermediate_size, True)


# Each supported model_type's deltas from the Llama block: a function of the HF config returning the
# ModelConfig fields it changes.
FAMILIES = {"llama": lambda c: {}, "mistral": lambda c: {}, "qwen2": _qwen2, "qwen3": _qwen3,
            "starcoder2": _starcoder2, "gemma": _gemma, "qwen3_moe": _qwen3_moe, "mixtral": _mixtral}
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)


def check_model_type(model_type) -> None:
    if model_type in UNSUPPORTED_MODEL_TYPES:
        raise InvalidInput(f"model_type {model_type!r} is not supported: {UNSUPPORTED_MODEL_TYPES[model_type]}; "
                           f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise InvalidInput(f"model_type {model_type!r} is not supported; supported: "
                           f"{', '.join(SUPPORTED_MODEL_TYPES)}")


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Inverse frequencies with Hugging Face's `linear` and `llama3` scalings."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    s = cfg.rope_scaling
    if s["rope_type"] == "linear":
        inv_freq = inv_freq / s["factor"]
    elif s["rope_type"] == "llama3":
        factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old_len = s["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq


class Norm(nn.Module):
    """A pre-norm fused with the residual add: returns (normed, x + residual), like kernels.rms_norm.
    Llama's RMSNorm runs the kernel; Gemma's and StarCoder2's LayerNorm follow Hugging Face in torch."""

    def __init__(self, cfg: ModelConfig, dim: int):
        super().__init__()
        self.kind, self.eps = cfg.norm, cfg.norm_eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if self.kind == "layer" else None

    def forward(self, x, residual=None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "rms":
            return kernels.rms_norm(x, self.weight, self.eps, residual)
        if residual is not None:
            x = x + residual
        if self.kind == "layer":
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps), x
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weight.float())).to(x.dtype), x


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.h, self.hkv, self.d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.qkv_proj = nn.Linear(cfg.hidden_size, (self.h + 2 * self.hkv) * self.d, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.h * self.d, cfg.hidden_size, bias=cfg.o_bias)
        self.q_norm = Norm(cfg, self.d) if cfg.qk_norm else None
        self.k_norm = Norm(cfg, self.d) if cfg.qk_norm else None

    def forward(self, x, cos, sin, layer: int, batch) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.h * self.d, self.hkv * self.d, self.hkv * self.d], dim=-1)
        q, k, v = q.view(n, self.h, self.d), k.view(n, self.hkv, self.d), v.view(n, self.hkv, self.d)
        if self.q_norm is not None:  # Qwen3
            q, k = self.q_norm(q)[0], self.k_norm(k)[0]
        k_cache, v_cache = batch.write_cache(layer)
        q = kernels.rope_write_kv(q, k, v, cos, sin, k_cache, v_cache, batch.write_rows)
        out = batch.attend(layer, q, 1.0 / math.sqrt(self.d))
        return self.o_proj(out.reshape(n, self.h * self.d))


class MLP(nn.Module):
    """Gated: down(act(gate) * up), gate and up in one matrix. Not gated (StarCoder2): down(act(up))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gated, self.act = cfg.gated_mlp, ACTIVATIONS[cfg.hidden_act]
        up = nn.Linear(cfg.hidden_size, (2 if self.gated else 1) * cfg.intermediate_size, bias=cfg.mlp_bias)
        if self.gated:
            self.gate_up_proj = up
        else:
            self.up_proj = up
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x):
        if not self.gated:
            return self.down_proj(self.act(self.up_proj(x)))
        if self.act is F.silu:
            return self.down_proj(kernels.silu_and_mul(self.gate_up_proj(x)))
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(self.act(gate) * up)


class MoE(nn.Module):
    """Routed experts in place of the MLP (Qwen3-MoE, Mixtral), as Hugging Face's TopKRouter and
    Experts: router logits -> softmax in float32 -> top-k -> renormalised (Mixtral always, Qwen3-MoE
    when norm_topk_prob); the weights stay float32 (HF's Qwen3-MoE rounds them to the model's dtype).
    Each expert is a SiLU-gated MLP; gate/up of all experts stacked in one [E, 2I, H] tensor, down in
    [E, H, I], so kernels.moe_experts runs them as grouped GEMMs."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.top_k, self.renormalize = cfg.num_experts_per_tok, cfg.norm_topk_prob
        e, i, h = cfg.num_experts, cfg.moe_intermediate_size, cfg.hidden_size
        self.gate = nn.Linear(h, e, bias=False)
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, h))
        self.down_proj = nn.Parameter(torch.empty(e, h, i))

    def forward(self, x):
        probs = torch.softmax(self.gate(x).float(), dim=-1)
        weights, ids = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return kernels.moe_experts(x, self.gate_up_proj, self.down_proj, weights, ids)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.input_layernorm = Norm(cfg, cfg.hidden_size)
        self.post_attention_layernorm = Norm(cfg, cfg.hidden_size)
        self.self_attn = Attention(cfg)
        self.mlp = MoE(cfg) if layer in cfg.moe_layers else MLP(cfg)

    def forward(self, x, residual, cos, sin, batch):
        h, residual = self.input_layernorm(x, residual)
        h = self.self_attn(h, cos, sin, self.layer, batch)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class Transformer(nn.Module):
    """Token ids in, hidden states out; `logits` applies the (possibly tied) LM head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.norm = Norm(cfg, cfg.hidden_size)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [tokens, head_dim] in float32, as Hugging Face computes them."""
        freqs = positions.float().unsqueeze(1) * self.inv_freq.float().unsqueeze(0)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch) -> torch.Tensor:
        """input_ids, positions: [tokens]; returns final-normed hidden states [tokens, hidden]."""
        cos, sin = self.rope(positions)
        x, residual = self.embed_tokens(input_ids), None
        if self.cfg.embed_scale != 1.0:  # Gemma; HF rounds the scale to the weights' dtype first
            x = x * torch.tensor(self.cfg.embed_scale, dtype=x.dtype)
        for block in self.layers:
            x, residual = block(x, residual, cos, sin, batch)
        x, _ = self.norm(x, residual)
        return x

    def logits(self, hidden: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`out`: a buffer to write them into (the decode step's, which CUDA graphs replay into)."""
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        if out is not None:
            return torch.matmul(hidden, weight.t(), out=out)
        return F.linear(hidden, weight)
