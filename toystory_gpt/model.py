"""The ladder in one model: a character-level GPT whose GPTConfig switches each milestone's idea on.

Every milestone has the same contract, ``forward(idx, targets=None) -> (logits, loss)``, with ``idx`` a
(B, T) tensor of token ids. Generating one character at a time lives in ``decoding.py``; watching a
forward pass from outside (attention weights, what each block adds) in ``recorder.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from huggingface_hub import PyTorchModelHubMixin
from torch.nn import functional as F

from .dropout import Dropout


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

    @property
    def has_attention(self) -> bool:
        """False for the unigram and the bigram: they see at most the current character, so need no context."""
        return self.n_layer > 0

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
        if self.has_attention and self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


class Probe(nn.Identity):
    """A named point where a recorder can read a tensor; ``watched`` says whether one does, so that tensors
    the fast path never forms (attention weights) are computed only for someone who looks."""

    def __init__(self):
        super().__init__()
        self.watched = 0  # recorders currently hooked here


def attend(q, keys, values, masks, weigh=None, sizes: tuple[int, list[int]] | None = None):
    """Scaled dot-product attention, written once: softmax(q·kᵀ/√hs + mask)·v for queries q (B, nh, Tq, hs).

    The keys and values may come in several blocks (each (B, nh, Tk, hs), with an additive mask broadcasting
    to (B, nh, Tq, Tk)) that share one softmax: decoding passes the cache and the new token apart, so neither
    is copied to join the other. ``weigh`` sees the weights before they are applied (a probe, dropout).
    ``sizes``: the head size and each block's Tk, where the caller knows them as numbers: an export then reads no
    shape (each read would become arithmetic at run time, in every step).
    """
    head_size, lengths = sizes or (q.size(-1), [k.size(-2) for k in keys])
    scale = head_size ** -0.5
    scores = [(q @ k.transpose(-2, -1)) * scale for k in keys]
    # The mask in the scores' own precision: a float32 mask would promote bfloat16 scores under autocast.
    scores = torch.cat([s + mask.to(s.dtype) for s, mask in zip(scores, masks)], dim=-1)
    weights = F.softmax(scores, dim=-1)
    if weigh is not None:
        weights = weigh(weights)
    parts = weights.split(lengths, dim=-1)
    y = parts[0] @ values[0]
    for part, v in zip(parts[1:], values[1:]):
        y = y + part @ v
    return y


def causal_mask(T: int, device=None):
    """(T, T) additive mask: 0 where a position may look (itself and before), -inf after it."""
    return torch.full((T, T), float("-inf"), device=device).triu(1)


class CausalSelfAttention(nn.Module):
    """Masked self-attention with n_head heads, concatenated and projected back to n_embd."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_dropout = Dropout(config.dropout)  # on the attention weights, as GPT-2 does
        self.resid_dropout = Dropout(config.dropout)
        self.keys, self.values, self.weights = Probe(), Probe(), Probe()

    def heads(self, x):
        """Queries, keys and values (B, nh, T, hs) of x (B, T, C)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        return (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.heads(x)
        k, v = self.keys(k), self.values(v)
        # The fused kernel computes the same as ``attend`` but never forms the weights: spell them out when
        # someone watches them or dropout must zero some (its own dropout would leave the fused kernel anyway).
        if self.weights.watched or (self.training and self.attn_dropout.p):
            y = attend(q, [k], [v], [causal_mask(T, x.device)], lambda w: self.attn_dropout(self.weights(w)))
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.project(y)

    def project(self, y):
        """The heads (B, nh, T, hs) side by side again (B, T, C), projected."""
        B, nh, T, hs = y.shape
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, nh * hs)))


class FeedForward(nn.Module):
    """Position-wise MLP: each position thinks about what attention gathered, on its own."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = Dropout(config.dropout)

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

    def forward(self, x):
        return self.after_attention(x, self.attn(self.ln_1(x)))

    def after_attention(self, x, h):
        """The rest of the block, given attention's output ``h``; one-token decoding shares it."""
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
        elif not config.has_attention:
            self.token_logits = nn.Embedding(V, V)  # bigram: a row of next-char logits per char
        else:
            self.wte = nn.Embedding(V, C)
            self.wpe = nn.Embedding(config.block_size, C)
            self.drop = Dropout(config.dropout)
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

    def forward(self, idx, targets=None):
        B, T = idx.shape
        cfg = self.config
        if not cfg.sees_input:
            logits = self.logit_bias.expand(B, T, -1)
        elif not cfg.has_attention:
            logits = self.token_logits(idx)  # (B, T, V)
        else:
            if T > cfg.block_size:
                raise ValueError(f"sequence of {T} tokens is longer than the context ({cfg.block_size})")
            x = self.embed(idx, torch.arange(T, device=idx.device))  # (B, T, C)
            for block in self.blocks:
                x = block(x)
            logits = self.head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def embed(self, idx, pos):
        """Token plus position embeddings: the residual stream's start."""
        return self.drop(self.wte(idx) + self.wpe(pos))

    def head(self, x):
        """Next-token logits from the residual stream."""
        return self.lm_head(self.ln_f(x))
