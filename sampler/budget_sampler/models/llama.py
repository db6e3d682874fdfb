"""The Llama-style decoder (Llama / CodeLlama / Llama 3, Qwen2, Qwen3, Mistral, StarCoder2, Gemma,
Gemma 2, Gemma 3, Phi-3 / Phi-4, Granite, OLMo 2, and the mixtures of experts Qwen3-MoE and Mixtral)
in plain PyTorch.

Reads top to bottom like gpt-fast: a config taken from the Hugging Face config (the Llama block's
fields, then each family's deltas from the FAMILIES table), the rotary table, then Transformer ->
Block -> attention / MLP / norm. The families differ only in switches of the config: the norm
(RMSNorm, Gemma's (1 + w) RMSNorm, LayerNorm with bias) and where the block applies it (before each
branch, also after it, or only after it), the MLP (gated or not, its activation), biases, q/k
RMSNorm (per head or over the whole projection), partial rotary, per-layer sliding windows and RoPE
bases, soft-capping of attention scores and of the final logits, constant multipliers on the
embeddings, the residual branches, the attention scores and the logits, and routed experts in place
of the MLP (MoE, beside MLP; all of a layer's experts in two stacked tensors). The model knows nothing
about how the KV cache is laid out: each forward gets a batch view (see budget_sampler/cache.py)
that says where to write K/V and how to attend. The per-op math goes through `kernels` (Triton on
CUDA, torch references on CPU).
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

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "longrope")
ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh")}
# Multimodal checkpoints whose language model we load: model_type -> the attribute holding its config.
TEXT_CONFIGS = {"gemma3": "text_config"}


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
    max_position_embeddings: int  # the context we serve exactly
    rope: dict           # Hugging Face's rope parameters: rope_type, rope_theta, the scaling's own
    local_rope: Optional[dict]  # Gemma 3: the sliding layers' rope (None: every layer uses `rope`)
    rotary_dim: int      # leading dims of each head that rotate (Phi-3's partial_rotary_factor)
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    tie_word_embeddings: bool
    layer_windows: tuple  # per layer: a sliding window W (attend to the last W positions) or None
    hidden_act: str
    gated_mlp: bool      # act(gate) * up (Llama) or act(up) (StarCoder2)
    qk_norm: Optional[str]  # RMSNorm of q and k before RoPE: "head" (Qwen3, Gemma 3) | "proj" (OLMo 2)
    block_norms: str     # "pre" (Llama) | "sandwich" (Gemma 2 / 3: branch outputs normed too) | "post" (OLMo 2)
    embed_scale: float   # Gemma: sqrt(hidden_size); Granite: embedding_multiplier
    attn_scale: float    # head_dim ** -0.5; Gemma 2 / 3: query_pre_attn_scalar ** -0.5; Granite: attention_multiplier
    attn_softcap: Optional[float]   # Gemma 2: scores -> cap * tanh(scores / cap)
    final_softcap: Optional[float]  # Gemma 2 / 3: logits -> cap * tanh(logits / cap)
    residual_multiplier: float  # Granite: each branch's output scaled before the residual add
    logits_scaling: float       # Granite: logits divided by it
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
        if c.model_type in TEXT_CONFIGS:  # a multimodal checkpoint: its language model
            c = getattr(c, TEXT_CONFIGS[c.model_type])
            check_model_type(c.model_type)
        fields = _llama_fields(c)
        fields.update(FAMILIES[c.model_type](c))
        if fields["hidden_act"] not in ACTIVATIONS:
            raise InvalidInput(f"hidden_act {fields['hidden_act']!r} is not supported; supported: "
                               f"{', '.join(ACTIVATIONS)}")
        return cls(**fields)

    @property
    def max_context(self) -> int:
        """Longest prompt + generation we attend over exactly."""
        return self.max_position_embeddings


def _rope(params: dict, c) -> dict:
    rope = dict(params)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise InvalidInput(f"rope type {rope_type!r} is not supported; supported: "
                           f"{', '.join(SUPPORTED_ROPE_TYPES)}")
    rope["rope_type"] = rope_type
    rope["rope_theta"] = float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0)))
    return rope


def _rope_fields(c, head_dim: int) -> dict:
    """The rope of full-attention layers and (Gemma 3's per-layer-type parameters) of sliding ones,
    and how many dims of a head rotate."""
    params = dict(getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {})
    if "full_attention" in params:
        rope, local = _rope(params["full_attention"], c), _rope(params["sliding_attention"], c)
    else:
        rope, local = _rope(params, c), None
    factor = rope.get("partial_rotary_factor", getattr(c, "partial_rotary_factor", None) or 1.0)
    rotary_dim = int(head_dim * factor)
    if rotary_dim % 2 or not 0 < rotary_dim <= head_dim:
        raise InvalidInput(f"partial_rotary_factor {factor!r} gives {rotary_dim} rotary dims of head_dim "
                           f"{head_dim}; it must give an even number in (0, head_dim]")
    fields = dict(rope=rope, local_rope=local, rotary_dim=rotary_dim)
    if rope["rope_type"] == "longrope":
        fields |= _longrope(rope, c)
    return fields


def _longrope(rope: dict, c) -> dict:
    """LongRoPE (Phi-3.5, Phi-4-mini): Hugging Face rotates with the short factors while a sequence
    is within original_max_position_embeddings and with the long ones for every position past it,
    which keys already cached cannot follow; so we serve the short factors, exact up to that length,
    which becomes our context. cos/sin are scaled by the attention factor as in HF."""
    original = rope.get("original_max_position_embeddings") or c.original_max_position_embeddings
    factor = rope.get("factor") or c.max_position_embeddings / original
    if rope.get("attention_factor") is None:
        rope["attention_factor"] = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    return {"max_position_embeddings": min(original, c.max_position_embeddings)}


def _layer_windows(c) -> tuple:
    """Per layer: the sliding window or None. HF's layer_types name the sliding layers (Gemma 2 / 3,
    Qwen2 past max_window_layers); without them a sliding_window covers every layer (Mistral,
    Phi-3, StarCoder2)."""
    window = getattr(c, "sliding_window", None)
    types = getattr(c, "layer_types", None)
    if types is None:
        return (window or None,) * c.num_hidden_layers
    return tuple(window if t == "sliding_attention" else None for t in types)


def _llama_fields(c) -> dict:
    """The Llama block (Llama, CodeLlama, Llama 3, Mistral, Phi-3's fused projections): what every
    family starts from."""
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    bias = bool(getattr(c, "attention_bias", False))
    fields = dict(
        model_type=c.model_type, vocab_size=c.vocab_size, hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size, num_layers=c.num_hidden_layers, num_heads=heads,
        num_kv_heads=getattr(c, "num_key_value_heads", None) or heads, head_dim=head_dim,
        norm="rms", norm_eps=getattr(c, "rms_norm_eps", None), max_position_embeddings=c.max_position_embeddings,
        qkv_bias=bias, o_bias=bias, mlp_bias=bool(getattr(c, "mlp_bias", False)),
        tie_word_embeddings=bool(getattr(c, "tie_word_embeddings", False)), layer_windows=_layer_windows(c),
        hidden_act=getattr(c, "hidden_activation", None) or c.hidden_act, gated_mlp=True, qk_norm=None,
        block_norms="pre", embed_scale=1.0, attn_scale=head_dim ** -0.5, attn_softcap=None, final_softcap=None,
        residual_multiplier=1.0, logits_scaling=1.0)
    return fields | _rope_fields(c, head_dim)


def _qwen(c) -> dict:
    """Qwen2 / Qwen3: windows only when use_sliding_window says so (transformers 4 keeps the size)."""
    return {} if getattr(c, "use_sliding_window", False) else {"layer_windows": (None,) * c.num_hidden_layers}


def _qwen2(c) -> dict:
    return _qwen(c) | {"qkv_bias": True, "o_bias": False}


def _qwen3(c) -> dict:
    return _qwen(c) | {"qk_norm": "head"}


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


def _gemma2(c, pattern: int = 2) -> dict:
    """Gemma plus four norms per block, query_pre_attn_scalar, soft-capped scores and logits. Configs
    of transformers without layer_types: layer i slides unless (i + 1) % pattern == 0."""
    fields = _gemma(c) | dict(block_norms="sandwich", attn_scale=c.query_pre_attn_scalar ** -0.5,
                              attn_softcap=c.attn_logit_softcapping, final_softcap=c.final_logit_softcapping)
    if getattr(c, "layer_types", None) is None:
        fields["layer_windows"] = tuple(None if (i + 1) % pattern == 0 else c.sliding_window
                                        for i in range(c.num_hidden_layers))
    return fields


def _gemma3(c) -> dict:
    """Gemma 2 plus per-head q/k norm; its attention applies no soft-capping (HF passes none).
    Configs of transformers without per-layer-type rope parameters name the local base apart."""
    fields = _gemma2(c, getattr(c, "sliding_window_pattern", 6)) | dict(qk_norm="head", attn_softcap=None)
    nested = "full_attention" in (getattr(c, "rope_parameters", None) or {})
    if not nested and getattr(c, "rope_local_base_freq", None) is not None:
        fields["local_rope"] = {"rope_type": "default", "rope_theta": float(c.rope_local_base_freq)}
    return fields


def _granite(c) -> dict:
    return dict(embed_scale=float(c.embedding_multiplier), residual_multiplier=float(c.residual_multiplier),
                attn_scale=float(c.attention_multiplier), logits_scaling=float(c.logits_scaling))


def _olmo2(c) -> dict:
    """Norms after attention and after the MLP only; q/k norm over the whole projection."""
    return dict(block_norms="post", qk_norm="proj")


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
# ModelConfig fields it changes. Phi-3 ships q/k/v and gate/up fused as our matrices are.
FAMILIES = {"llama": lambda c: {}, "mistral": lambda c: {}, "qwen2": _qwen2, "qwen3": _qwen3,
            "starcoder2": _starcoder2, "gemma": _gemma, "qwen3_moe": _qwen3_moe, "mixtral": _mixtral,
            "gemma2": _gemma2, "gemma3_text": _gemma3, "phi3": lambda c: {}, "granite": _granite, "olmo2": _olmo2}
SUPPORTED_MODEL_TYPES = (*FAMILIES, *TEXT_CONFIGS)


def check_model_type(model_type) -> None:
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise InvalidInput(f"model_type {model_type!r} is not supported; supported: "
                           f"{', '.join(SUPPORTED_MODEL_TYPES)}")


def rope_inv_freq(rope: dict, dim: int) -> torch.Tensor:
    """Inverse frequencies of `dim` rotary dims with Hugging Face's `linear`, `llama3` and (short
    factor) `longrope` scalings."""
    inv_freq = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if rope["rope_type"] == "linear":
        inv_freq = inv_freq / rope["factor"]
    elif rope["rope_type"] == "longrope":
        inv_freq = inv_freq / torch.tensor(rope["short_factor"], dtype=torch.float32)
    elif rope["rope_type"] == "llama3":
        factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        old_len = rope["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq


def rope_buffers(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The model's inverse-frequency buffers: `inv_freq`, and `local_inv_freq` for sliding layers
    with a rope of their own (float32, as Hugging Face keeps them)."""
    buffers = {"inv_freq": rope_inv_freq(cfg.rope, cfg.rotary_dim)}
    if cfg.local_rope is not None:
        buffers["local_inv_freq"] = rope_inv_freq(cfg.local_rope, cfg.rotary_dim)
    return buffers


class Norm(nn.Module):
    """A norm fused with the residual add: returns (normed, x + residual), like kernels.rms_norm.
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
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.h, self.hkv, self.d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.scale, self.softcap, self.window = cfg.attn_scale, cfg.attn_softcap, cfg.layer_windows[layer]
        self.qkv_proj = nn.Linear(cfg.hidden_size, (self.h + 2 * self.hkv) * self.d, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.h * self.d, cfg.hidden_size, bias=cfg.o_bias)
        self.qk_norm = cfg.qk_norm
        per_head = cfg.qk_norm == "head"
        self.q_norm = Norm(cfg, self.d if per_head else self.h * self.d) if cfg.qk_norm else None
        self.k_norm = Norm(cfg, self.d if per_head else self.hkv * self.d) if cfg.qk_norm else None

    def forward(self, x, cos, sin, layer: int, batch) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.h * self.d, self.hkv * self.d, self.hkv * self.d], dim=-1)
        if self.qk_norm == "proj":  # OLMo 2: over the whole projection, before it splits into heads
            q, k = self.q_norm(q)[0], self.k_norm(k)[0]
        q, k, v = q.view(n, self.h, self.d), k.view(n, self.hkv, self.d), v.view(n, self.hkv, self.d)
        if self.qk_norm == "head":  # Qwen3, Gemma 3
            q, k = self.q_norm(q)[0], self.k_norm(k)[0]
        k_cache, v_cache = batch.write_cache(layer)
        q = kernels.rope_write_kv(q, k, v, cos, sin, k_cache, v_cache, batch.write_rows)
        out = batch.attend(layer, q, self.scale, self.softcap, self.window)
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


def _add(norm: Optional[Norm], x, residual):
    """(norm(x + residual), x + residual); without a norm (OLMo 2 has no pre-norms) the sum twice."""
    if norm is not None:
        return norm(x, residual)
    x = x if residual is None else x + residual
    return x, x
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
    """Attention then MLP, each a residual branch, with Hugging Face's norm names:
    - "pre" (Llama): input_layernorm before attention, post_attention_layernorm before the MLP;
    - "sandwich" (Gemma 2 / 3): input_layernorm and pre_feedforward_layernorm before the branches,
      post_attention_layernorm and post_feedforward_layernorm on their outputs;
    - "post" (OLMo 2): post_attention_layernorm and post_feedforward_layernorm on the outputs only.
    A branch's output is scaled by residual_multiplier (Granite) and added to the residual stream in
    the next norm (fused), so a block returns (its MLP branch's output, the stream before it)."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer, self.kind, self.multiplier = layer, cfg.block_norms, cfg.residual_multiplier
        self.sliding = cfg.layer_windows[layer] is not None
        self.input_layernorm = Norm(cfg, cfg.hidden_size) if self.kind != "post" else None
        self.post_attention_layernorm = Norm(cfg, cfg.hidden_size)
        self.pre_feedforward_layernorm = Norm(cfg, cfg.hidden_size) if self.kind == "sandwich" else None
        self.post_feedforward_layernorm = Norm(cfg, cfg.hidden_size) if self.kind != "pre" else None
        self.self_attn = Attention(cfg, layer)
        self.mlp = MoE(cfg) if layer in cfg.moe_layers else MLP(cfg)

    def _scaled(self, h):
        return h if self.multiplier == 1.0 else h * self.multiplier

    def forward(self, x, residual, cos, sin, batch):
        h, residual = _add(self.input_layernorm, x, residual)
        h = self.self_attn(h, cos, sin, self.layer, batch)
        if self.kind == "pre":
            h, residual = self.post_attention_layernorm(self._scaled(h), residual)
        else:
            h = self.post_attention_layernorm(h)[0]
            h, residual = _add(self.pre_feedforward_layernorm, self._scaled(h), residual)
        h = self.mlp(h)
        if self.post_feedforward_layernorm is not None:
            h = self.post_feedforward_layernorm(h)[0]
        return self._scaled(h), residual


class Transformer(nn.Module):
    """Token ids in, hidden states out; `logits` applies the (possibly tied) LM head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.norm = Norm(cfg, cfg.hidden_size)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.register_buffer("local_inv_freq", None, persistent=False)  # Gemma 3's sliding layers: their own
        for name, inv_freq in rope_buffers(cfg).items():
            self.register_buffer(name, inv_freq, persistent=False)

    def rope(self, positions: torch.Tensor, inv_freq: torch.Tensor, rope: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [tokens, rotary_dim] in float32, as Hugging Face computes them."""
        freqs = positions.float().unsqueeze(1) * inv_freq.float().unsqueeze(0)
        emb = torch.cat((freqs, freqs), dim=-1)
        factor = rope.get("attention_factor", 1.0)
        if factor != 1.0:  # LongRoPE
            return emb.cos() * factor, emb.sin() * factor
        return emb.cos(), emb.sin()

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch) -> torch.Tensor:
        """input_ids, positions: [tokens]; returns final-normed hidden states [tokens, hidden]."""
        tables = self.rope(positions, self.inv_freq, self.cfg.rope)
        local = tables if self.local_inv_freq is None else self.rope(positions, self.local_inv_freq,
                                                                     self.cfg.local_rope)
        x, residual = self.embed_tokens(input_ids), None
        if self.cfg.embed_scale != 1.0:  # Gemma, Granite; HF rounds Gemma's scale to the weights' dtype first
            x = x * torch.tensor(self.cfg.embed_scale, dtype=x.dtype)
        for block in self.layers:
            x, residual = block(x, residual, *(local if block.sliding else tables), batch)
        x, _ = self.norm(x, residual)
        return x

    def logits(self, hidden: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`out`: a buffer to write them into (the decode step's, which CUDA graphs replay into).
        Granite's logits_scaling and Gemma's final soft-capping apply here, so sampling and every
        log-prob see the logits Hugging Face returns."""
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(hidden, weight) if out is None else torch.matmul(hidden, weight.t(), out=out)
        if self.cfg.logits_scaling != 1.0:
            logits.div_(self.cfg.logits_scaling)
        if self.cfg.final_softcap is not None:
            cap = self.cfg.final_softcap
            logits.div_(cap).tanh_().mul_(cap)
        return logits
