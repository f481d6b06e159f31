"""A small Llama-style decoder in plain PyTorch (>= 1.13): the example of a hookable model.

Token embedding, pre-norm decoder layers (RMSNorm; attention with separate q/k/v/o projections,
grouped-query attention and rotary position embeddings in the Llama/HF "rotate half" form; a
SwiGLU MLP), a final norm and an LM head; a per-layer KV cache. Weights are random (seeded), so
it checks the capture's mechanics, not a language model's attention patterns.

Its attention modules follow the hook contract of hooks.py: an integer ``layer_idx`` and an
``attention_interface`` attribute with the signature of Hugging Face's attention functions,
called with the query after RoPE and the layer's whole KV cache (not repeated over the group).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch
from torch import nn


@dataclass
class TinyLlamaConfig:
    vocab_size: int = 256
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    eos_token_id: int = -1  # none by default

    def validate(self) -> "TinyLlamaConfig":
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "num_key_value_heads", "head_dim"):
            value = getattr(self, key)
            if type(value) is not int or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
        for key in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, key)
            if type(value) not in (int, float) or not value > 0:
                raise ValueError(f"{key} must be a number > 0, got {value!r}")
        if type(self.eos_token_id) is not int or not -1 <= self.eos_token_id < self.vocab_size:
            raise ValueError(f"eos_token_id must be -1 (none) or a token id in [0, "
                             f"{self.vocab_size}), got {self.eos_token_id!r}")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2 != 0:
            raise ValueError("head_dim must be even (rotary embeddings rotate pairs)")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[b, kv_heads, s, d] -> [b, kv_heads * groups, s, d] (query head j uses KV head j // groups)."""
    if groups == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, **kwargs):
    """softmax(q k^T * scaling + mask) v with GQA; returns ([b, q_len, heads, d], weights)."""
    groups = query.shape[1] // key.shape[1]
    k = repeat_kv(key, groups)
    v = repeat_kv(value, groups)
    weights = torch.matmul(query, k.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = torch.softmax(weights.float(), dim=-1).to(query.dtype)
    return torch.matmul(weights, v).transpose(1, 2).contiguous(), weights


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: TinyLlamaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scaling = 1.0 / math.sqrt(config.head_dim)
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=False)
        self.attention_interface = eager_attention_forward  # the hook point (hooks.py)

    def forward(self, x, cos, sin, attention_mask, cache):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = cache.update(k, v, self.layer_idx)
        out, _ = self.attention_interface(self, q, k, v, attention_mask, scaling=self.scaling)
        return self.o_proj(out.reshape(b, t, self.heads * self.head_dim))


class Layer(nn.Module):
    def __init__(self, config: TinyLlamaConfig, layer_idx: int):
        super().__init__()
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x, cos, sin, attention_mask, cache):
        x = x + self.self_attn(self.input_norm(x), cos, sin, attention_mask, cache)
        h = self.post_norm(x)
        return x + self.down_proj(nn.functional.silu(self.gate_proj(h)) * self.up_proj(h))


class KVCache:
    """Per-layer keys and values, [b, kv_heads, tokens, d], appended at every forward."""

    def __init__(self, layers: int):
        self.keys = [None] * layers
        self.values = [None] * layers

    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def update(self, k, v, layer):
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class TinyLlama(nn.Module):
    """`model(input_ids, past_key_values=None, use_cache=True)` -> `.logits`, `.past_key_values`,
    as a Hugging Face causal LM is called."""

    def __init__(self, config: TinyLlamaConfig):
        super().__init__()
        self.config = config.validate()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Layer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        inv_freq = 1.0 / (config.rope_theta **
                          (torch.arange(0, config.head_dim, 2, dtype=torch.float32) / config.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, input_ids, past_key_values=None, use_cache=True, **kwargs):
        cache = past_key_values if past_key_values is not None else KVCache(len(self.layers))
        b, t = input_ids.shape
        start = cache.length()
        positions = torch.arange(start, start + t, device=input_ids.device, dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        x = self.embed_tokens(input_ids)
        cos, sin = emb.cos().to(x.dtype)[None, None], emb.sin().to(x.dtype)[None, None]
        mask = None
        if t > 1:  # causal over the cached tokens and the new ones
            allowed = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(start)
            mask = torch.zeros(t, start + t, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(~allowed, torch.finfo(x.dtype).min)[None, None]
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache)
        logits = self.lm_head(self.norm(x))
        return SimpleNamespace(logits=logits, past_key_values=cache if use_cache else None)


def build(config: TinyLlamaConfig | None = None, seed: int = 0) -> TinyLlama:
    """A TinyLlama with weights drawn from `seed` (normal, std 2 / sqrt(fan-in) for the
    projections so that attention is not uniform)."""
    config = config or TinyLlamaConfig()
    generator = torch.Generator().manual_seed(seed)
    model = TinyLlama(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                continue
            fan_in = p.shape[-1]
            p.copy_(torch.randn(p.shape, generator=generator) * (2.0 / math.sqrt(fan_in)))
    return model.eval()
