"""One GPT whose config switches on each milestone's idea: unigram → bigram → attention → … → dropout.

Every variant has the same contract, ``forward(idx, targets=None) -> (logits, loss)``, with
``idx`` a (B, T) tensor of token ids. Optional extras, both off on the normal path:
``cache`` (a ``KVCache``) for incremental decoding, and ``attention`` (a list) that collects
the (B, n_head, T, T) attention weights of every layer.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from huggingface_hub import PyTorchModelHubMixin
from torch.nn import functional as F


@dataclass
class GPTConfig:
    """Everything that defines a model; saved as its config.json."""
    vocab: str                  # the tokenizer's characters, so a weights folder is self-contained
    block_size: int = 128       # longest context the position table covers
    n_embd: int = 128
    n_layer: int = 0            # 0: no attention at all (milestones 1 and 2)
    n_head: int = 1
    sees_input: bool = True     # False: the unigram, whose prediction ignores its input
    feed_forward: bool = False
    residual: bool = False
    layer_norm: bool = False    # pre-norm in each block, plus a final norm
    dropout: float = 0.0

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __post_init__(self):
        # A config may come from a config.json anyone edited: refuse what would fail later, less clearly.
        if not isinstance(self.vocab, str) or not self.vocab or len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab must be a non-empty string of distinct characters")
        for name, low in (("block_size", 1), ("n_embd", 1), ("n_head", 1), ("n_layer", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number of at least {low}, got {value!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number from 0 to below 1, got {self.dropout!r}")
        if self.n_layer and self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


class KVCache:
    """Preallocated keys and values of every layer, plus an additive mask of the positions filled so far.

    Shapes never change while decoding, so one token's step (``GPT.step``) is a pure function of
    fixed-shape tensors that can be exported once and replayed (``toystory_gpt.onnx_decode``): the new
    token attends over the whole window, the empty slots masked out, and over itself; ``append``
    then writes its keys and values into the next slot. The tensors are only ever changed in place:
    an ONNX stream reads them by address.
    """

    def __init__(self, config: GPTConfig, batch_size: int = 1, device=None, dtype=torch.float32):
        head_size = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, head_size)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.mask = torch.full((1, config.block_size), float("-inf"), device=device, dtype=dtype)  # (1, S): one query row
        self.length = 0  # positions filled so far

    def reset(self) -> None:
        self.mask.fill_(float("-inf"))
        self.length = 0

    def start(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
        """Fill an empty cache from position 0 with a prefill's keys and values: per layer, (B, n_head, T, head_size)."""
        T = keys[0].size(2)
        for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
            self.keys[layer, :, :, :T] = k
            self.values[layer, :, :, :T] = v
        self.mask[:, :T] = 0.0
        self.length = T

    def append(self, new_keys: Sequence[torch.Tensor], new_values: Sequence[torch.Tensor]) -> None:
        """Store one token's keys and values, per layer (B, n_head, 1, head_size), in the next slot."""
        for layer, (k, v) in enumerate(zip(new_keys, new_values, strict=True)):
            self.keys[layer, :, :, self.length] = k[:, :, 0]
            self.values[layer, :, :, self.length] = v[:, :, 0]
        self.mask[:, self.length] = 0.0
        self.length += 1


class CausalSelfAttention(nn.Module):
    """Masked self-attention with n_head heads, concatenated and projected back to n_embd."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, present: list | None = None, attention: list | None = None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if present is not None:  # a prefill collects every layer's keys and values for the KV cache
            present.append((k, v))
        dropout = self.dropout if self.training else 0.0
        if attention is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:  # the explicit path, only when someone asks to see the weights
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, T)
            att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), float("-inf"))
            att = F.softmax(att, dim=-1)
            attention.append(att)
            y = F.dropout(att, dropout) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))

    def decode(self, x, keys, values, mask):
        """One new token ``x`` (B, C) against the cached ``keys``/``values`` (B, nh, S, hs) whose empty slots
        ``mask`` (1, S) hides: its output (B, C) and its own key and value, each (B, nh, 1, hs).

        The new key is not in the cache yet, so its score is computed beside the cached ones and both go
        through one softmax: no write inside the step, and no copy of the window to append to it.
        """
        B, C = x.shape
        q, k, v = self.c_attn(x).view(B, 3 * self.n_head, 1, C // self.n_head).split(self.n_head, dim=1)
        q = q * k.size(-1) ** -0.5
        past = q @ keys.transpose(-2, -1) + mask  # (B, nh, 1, S)
        now = q @ k.transpose(-2, -1)  # (B, nh, 1, 1)
        p_past, p_now = F.softmax(torch.cat([past, now], dim=-1), dim=-1).split([keys.size(2), 1], dim=-1)
        y = p_past @ values + p_now * v  # (B, nh, 1, hs)
        return self.resid_dropout(self.c_proj(y.reshape(B, C))), k, v


class FeedForward(nn.Module):
    """Position-wise MLP: each position thinks about what attention gathered, on its own."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Attention, then (optionally) feed-forward, each optionally pre-normed and residual."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        norm = (lambda: nn.LayerNorm(config.n_embd)) if config.layer_norm else nn.Identity
        self.residual = config.residual
        self.ln_1 = norm()
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm() if config.feed_forward else None
        self.mlp = FeedForward(config) if config.feed_forward else None

    def forward(self, x, present: list | None = None, attention: list | None = None):
        return self._after_attention(x, self.attn(self.ln_1(x), present, attention))

    def decode(self, x, keys, values, mask):
        """``forward`` for one new token (B, C) against a KV cache; see ``CausalSelfAttention.decode``."""
        h, k, v = self.attn.decode(self.ln_1(x), keys, values, mask)
        return self._after_attention(x, h), k, v

    def _after_attention(self, x, h):
        x = x + h if self.residual else h
        if self.mlp is not None:
            h = self.mlp(self.ln_2(x))
            x = x + h if self.residual else h
        return x


class GPT(nn.Module, PyTorchModelHubMixin,
          library_name="toystory-gpt", tags=["character-level", "toy-story", "educational"]):
    """A character-level language model; which ideas it uses is up to its GPTConfig."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        V, C = config.vocab_size, config.n_embd
        if not config.sees_input:
            self.logit_bias = nn.Parameter(torch.zeros(V))  # unigram: one distribution for every position
        elif config.n_layer == 0:
            self.token_logits = nn.Embedding(V, V)  # bigram: a row of next-char logits per char
        else:
            self.wte = nn.Embedding(V, C)
            self.wpe = nn.Embedding(config.block_size, C)
            self.drop = nn.Dropout(config.dropout)
            self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
            self.ln_f = nn.LayerNorm(C) if config.layer_norm else nn.Identity()
            self.lm_head = nn.Linear(C, V, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None, cache: KVCache | None = None, attention: list | None = None):
        B, T = idx.shape
        cfg = self.config
        if not cfg.sees_input:
            logits = self.logit_bias.expand(B, T, -1)
        elif cfg.n_layer == 0:
            logits = self.token_logits(idx)  # (B, T, V)
        elif cache is None:
            logits = self._transformer(idx, attention=attention)
        elif attention is not None:
            raise ValueError("attention maps are collected without a cache (see attention_maps)")
        elif cache.length == 0:
            if T > cfg.block_size:
                raise ValueError(f"sequence of {T} tokens is longer than the context ({cfg.block_size})")
            logits, keys, values = self.prefill(idx)
            cache.start(keys, values)
        else:
            if T != 1:
                raise ValueError(f"after the prefill, feed one token at a time (got {T})")
            if cache.length >= cfg.block_size:
                raise ValueError(f"sequence of {cache.length + 1} tokens is longer than the context ({cfg.block_size})")
            pos = torch.tensor([cache.length], device=idx.device)
            logits, new_keys, new_values = self.step(idx[:, 0], pos, cache.mask, tuple(cache.keys), tuple(cache.values))
            cache.append(new_keys, new_values)
            logits = logits[:, None]  # (B, 1, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def _transformer(self, idx, present: list | None = None, attention: list | None = None):
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device)))  # (B, T, C)
        for block in self.blocks:
            x = block(x, present, attention)
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    def prefill(self, idx):
        """Logits (B, T, V) for ``idx`` (B, T) from position 0, plus every layer's keys and values, each a tuple of
        (B, nh, T, hs) tensors: what a KV cache starts from (``KVCache.start``). A pure function, like ``step``."""
        present: list = []
        logits = self._transformer(idx, present)
        keys, values = zip(*present)
        return logits, keys, values

    def step(self, idx, pos, mask, keys: tuple, values: tuple):
        """Logits (B, V) for one new token ``idx`` (B,) at position ``pos`` (1,), plus its keys and values, each a
        tuple of one (B, nh, 1, hs) tensor per layer; ``keys`` and ``values`` hold one cached (B, nh, S, hs)
        tensor per layer, ``mask`` (1, S) hides their empty slots.

        Tensors in, tensors out, fixed shapes, nothing written: ``toystory_gpt.onnx_decode`` exports it once
        per model and the sampler replays that every character (``KVCache.append`` stores the new keys).
        """
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, C)
        new_keys, new_values = [], []
        for block, cached_keys, cached_values in zip(self.blocks, keys, values):
            x, k, v = block.decode(x, cached_keys, cached_values, mask)
            new_keys.append(k)
            new_values.append(v)
        return self.lm_head(self.ln_f(x)), tuple(new_keys), tuple(new_values)

    @torch.no_grad()
    def attention_maps(self, idx) -> list[torch.Tensor]:
        """The attention weights of every layer, each (B, n_head, T, T), for ``idx`` (B, T)."""
        maps: list[torch.Tensor] = []
        self.forward(idx, attention=maps)
        return maps

    def new_cache(self, batch_size: int = 1) -> KVCache | None:
        """A KV cache for incremental decoding, or None for the models that need no context."""
        if self.config.n_layer == 0:
            return None
        p = next(self.parameters())
        return KVCache(self.config, batch_size, p.device, p.dtype)
