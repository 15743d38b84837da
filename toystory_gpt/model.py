"""One GPT whose config switches on each milestone's idea: unigram → bigram → attention → … → dropout.

Every variant has the same contract, ``forward(idx, targets=None) -> (logits, loss)``, with
``idx`` a (B, T) tensor of token ids. Optional extras, both off on the normal path:
``cache`` (a ``KVCache``) for incremental decoding, and ``attention`` (a list) that collects
the (B, n_head, T, T) attention weights of every layer.
"""

import math
import threading
import warnings
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


_TRACE_LOCK = threading.Lock()


class KVCache:
    """Preallocated keys and values of every layer, plus an additive mask of the positions filled so far.

    Shapes never change while decoding, so one token's step (``GPT.step``) can be traced once and
    replayed: a new token writes its key/value at its position and attends over the whole window,
    the empty slots masked out.
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



class CausalSelfAttention(nn.Module):
    """Masked self-attention with n_head heads, concatenated and projected back to n_embd."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, kv: tuple | None = None, attention: list | None = None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        mask = None
        if kv is not None:
            keys, values, pos, window_mask = kv
            if pos is None:  # prefill: the sequence fills the cache from position 0, plain causal attention
                keys[:, :, :T] = k
                values[:, :, :T] = v
            else:  # one new token: attend over the whole window, the empty slots masked out
                keys.index_copy_(2, pos, k)
                values.index_copy_(2, pos, v)
                k, v, mask = keys, values, window_mask
        causal = mask is None and T > 1
        dropout = self.dropout if self.training else 0.0
        if attention is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)
        else:  # the explicit path, only when someone asks to see the weights
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, S)
            if causal:
                att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), float("-inf"))
            elif mask is not None:
                att = att + mask
            att = F.softmax(att, dim=-1)
            attention.append(att)
            y = F.dropout(att, dropout) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


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

    def forward(self, x, kv: tuple | None = None, attention: list | None = None):
        h = self.attn(self.ln_1(x), kv, attention)
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
            logits = self._transformer(idx, torch.arange(T, device=idx.device), attention=attention)
        elif cache.length == 0:  # prefill
            if T > cfg.block_size:
                raise ValueError(f"sequence of {T} tokens is longer than the context ({cfg.block_size})")
            cache.mask[:, :T] = 0.0
            logits = self._transformer(idx, torch.arange(T, device=idx.device), cache, attention=attention)
            cache.length = T
        else:
            if T != 1:
                raise ValueError(f"after the prefill, feed one token at a time (got {T})")
            if cache.length >= cfg.block_size:
                raise ValueError(f"sequence of {cache.length + 1} tokens is longer than the context ({cfg.block_size})")
            pos = torch.tensor([cache.length], device=idx.device)
            step = self.step if self.training or B != 1 else self.traced_step(cache)  # recorded for one stream
            logits = step(idx, pos, cache.keys, cache.values, cache.mask)
            cache.length += 1
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def _transformer(self, idx, pos, cache: KVCache | None = None, attention: list | None = None):
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            # With a cache this is the prefill (position None): keys and values are written from slot 0.
            kv = (cache.keys[layer], cache.values[layer], None, cache.mask) if cache is not None else None
            x = block(x, kv, attention)
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    def step(self, idx, pos, keys, values, mask):
        """Logits (B, 1, V) for one new token ``idx`` (B, 1) at position ``pos`` (1,), given the cache's tensors.

        Tensors in, tensors out, fixed shapes: ``torch.jit.trace`` can record it once per model, and the
        sampler replays that recording every character instead of going through Python op by op.
        """
        mask.index_fill_(1, pos, 0.0)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, 1, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, (keys[layer], values[layer], pos, mask))
        return self.lm_head(self.ln_f(x))

    def traced_step(self, cache: KVCache):
        """``step`` recorded once with ``torch.jit.trace`` and replayed: about twice as fast per character on a CPU,
        where a one-token step is hundreds of tiny ops and Python's dispatch of each costs more than its math.

        The recording shares this model's parameters (later weight changes are seen) and is made in eval
        mode, so it is for sampling only. Where tracing is unavailable, ``step`` itself is returned.
        """
        traced = self.__dict__.get("_traced_step")  # in __dict__, not a submodule: never saved, never trained
        if traced is not None:
            return traced
        with _TRACE_LOCK:  # one recording per model, and the warnings filter below is process-wide state
            if "_traced_step" not in self.__dict__:
                device = cache.mask.device
                example = (torch.zeros(1, 1, dtype=torch.long, device=device), torch.zeros(1, dtype=torch.long, device=device),
                           cache.keys.clone(), cache.values.clone(), cache.mask.clone())  # the recording runs it once
                try:
                    with torch.no_grad(), warnings.catch_warnings():
                        # TorchScript is deprecated upstream, and it warns about shapes read as Python ints,
                        # which are fixed here by design (the KV cache is preallocated).
                        warnings.simplefilter("ignore")
                        traced = torch.jit.trace_module(self, {"step": example}, check_trace=False).step
                except Exception:  # no TorchScript in this build: the eager step gives the same logits
                    traced = self.step
                self.__dict__["_traced_step"] = traced
            return self.__dict__["_traced_step"]

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
