"""Decoding: a model's next-token logits one character at a time, without recomputing the whole window.

Every decoder has two calls, ``start(ids)`` and ``push(token)``, each returning the next-token logits (V,):

* ``Recompute`` runs the whole window through ``forward`` every time: the naive way, and all that the
  unigram and bigram need (they see at most the current character);
* ``Cached`` keeps every layer's keys and values in a ``KVCache`` and runs only the new token (``step``);
* ``onnx_decode.OnnxDecoder`` runs the same ``prefill`` and ``step`` exported to ONNX Runtime.

``new_decoder`` picks one. Positions are learned and absolute, so a full window cannot slide one
character at a time: every cached key would move to a new position. When the window is full, a
decoder keeps its newest ``refill_length`` tokens and encodes them again from position 0 in one
batched pass, so the model always sees between half and a whole window of context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .model import GPT, GPTConfig
from .recorder import Recorder

if TYPE_CHECKING:
    from .onnx_decode import OnnxDecoding


def refill_length(block_size: int) -> int:
    """How many of its newest tokens a decoder keeps when its window is full."""
    return max(1, block_size // 2)


class KVCache:
    """Every layer's keys and values for one sequence, preallocated, and an additive mask of the slots filled.

    Shapes never change while decoding, so ``step`` is a pure function of fixed-shape tensors that can be
    exported once and replayed; the tensors are only ever changed in place (ONNX Runtime reads them where
    they lie), through NumPy views, which write a handful of numbers faster than torch indexing.
    """

    def __init__(self, config: GPTConfig):
        shape = (config.n_layer, 1, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.keys, self.values = torch.zeros(shape), torch.zeros(shape)  # (L, 1, nh, S, hs)
        self.mask = torch.full((1, config.block_size), float("-inf"))  # (1, S): one query row
        self._keys, self._values, self._mask = self.keys.numpy(), self.values.numpy(), self.mask.numpy()
        self.length = 0  # slots filled so far

    def start(self, keys, values) -> None:
        """Empty the cache and fill it from position 0 with a prefill's keys and values, per layer (1, nh, T, hs)."""
        T = keys[0].shape[2]
        self._mask.fill(float("-inf"))
        for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
            self._keys[layer, :, :, :T] = k
            self._values[layer, :, :, :T] = v
        self._mask[0, :T] = 0.0
        self.length = T

    def append(self, new_keys: np.ndarray, new_values: np.ndarray) -> None:
        """Store one token's keys and values, all layers stacked (L, 1, nh, 1, hs), in the next slot."""
        if self.length >= self._mask.shape[1]:
            raise ValueError(f"sequence of {self.length + 1} tokens is longer than the context ({self._mask.shape[1]})")
        self._keys[:, :, :, self.length] = new_keys[:, :, :, 0]
        self._values[:, :, :, self.length] = new_values[:, :, :, 0]
        self._mask[0, self.length] = 0.0
        self.length += 1


def prefill(model: GPT, idx):
    """Logits (1, T, V) for ``idx`` (1, T) from position 0, plus every layer's keys and values, each a tuple
    of (1, nh, T, hs) tensors: what a KV cache starts from. A pure function, like ``step``."""
    with Recorder(model, "blocks.*.attn.keys", "blocks.*.attn.values") as seen:
        logits, _ = model(idx)
    layers = range(model.config.n_layer)
    return (logits, tuple(seen[f"blocks.{i}.attn.keys"] for i in layers),
            tuple(seen[f"blocks.{i}.attn.values"] for i in layers))


def step(model: GPT, idx, pos, mask, keys: tuple, values: tuple):
    """Logits (1, V) for one new token ``idx`` (1,) at position ``pos`` (1,), and its keys and values, a tuple
    of one (1, nh, 1, hs) tensor per layer, given one cached (1, nh, S, hs) tensor per layer in ``keys`` and
    ``values`` whose empty slots ``mask`` (1, S) hides.

    Tensors in, tensors out, fixed shapes, nothing written: ``onnx_decode`` exports exactly this. The new
    key is not in the cache yet, so its score is computed beside the cached ones and both go through one
    softmax: no write inside the step, and no copy of the window to append to.
    """
    x = model.embed(idx, pos)  # (1, C)
    B, C = x.shape
    new_keys, new_values = [], []
    for block, cached_keys, cached_values in zip(model.blocks, keys, values):
        attn = block.attn
        q, k, v = attn.c_attn(block.ln_1(x)).view(B, 3 * attn.n_head, 1, C // attn.n_head).split(attn.n_head, dim=1)
        q = q * k.size(-1) ** -0.5
        past = q @ cached_keys.transpose(-2, -1) + mask  # (1, nh, 1, S)
        now = q @ k.transpose(-2, -1)  # (1, nh, 1, 1)
        p_past, p_now = torch.softmax(torch.cat([past, now], dim=-1), dim=-1).split([cached_keys.size(2), 1], dim=-1)
        y = p_past @ cached_values + p_now * v  # (1, nh, 1, hs)
        x = block.after_attention(x, attn.resid_dropout(attn.c_proj(y.reshape(B, C))))
        new_keys.append(k)
        new_values.append(v)
    return model.head(x), tuple(new_keys), tuple(new_values)


class Decoder:
    """Feeds a model its context one token at a time and returns next-token logits; subclasses say how."""

    def __init__(self, model: GPT, window: int):
        self.model = model
        self.size = window
        self.window: list[int] = []

    def start(self, ids: list[int]) -> np.ndarray:
        if not ids:
            raise ValueError("the decoder needs at least one token of context")
        self.window = list(ids[-self.size:])
        return self.encode(self.window)

    def push(self, token: int) -> np.ndarray:
        self.window.append(token)
        if len(self.window) > self.size:
            self.window = self.window[-refill_length(self.size):]
            return self.encode(self.window)
        return self.advance(token)

    def encode(self, ids: list[int]) -> np.ndarray:
        """The logits after ``ids``, read from position 0 on (forgetting anything before)."""
        raise NotImplementedError

    def advance(self, token: int) -> np.ndarray:
        """The logits after ``token``, which has just been appended to the window."""
        raise NotImplementedError


def _last(logits: torch.Tensor) -> np.ndarray:
    return logits[0, -1].detach().float().cpu().numpy()


class Recompute(Decoder):
    """The whole window through ``forward`` at every token: simple, and the reference the others must match."""

    def __init__(self, model: GPT):
        super().__init__(model, model.config.block_size if model.config.has_attention else 1)
        self.device = next(model.parameters()).device

    def encode(self, ids: list[int]) -> np.ndarray:
        # No no_grad here: its few microseconds are a fifth of the unigram's whole step. Outside one, autograd
        # records this forward for nothing; _last detaches.
        return _last(self.model(torch.tensor([ids], device=self.device))[0])

    def advance(self, token: int) -> np.ndarray:
        return self.encode(self.window)


class Cached(Decoder):
    """One token at a time against a KV cache, in PyTorch."""

    def __init__(self, model: GPT):
        super().__init__(model, model.config.block_size)
        self.cache = KVCache(model.config)

    @torch.no_grad()
    def encode(self, ids: list[int]) -> np.ndarray:
        logits, keys, values = prefill(self.model, torch.tensor([ids]))
        self.cache.start(keys, values)
        return _last(logits)

    @torch.no_grad()
    def advance(self, token: int) -> np.ndarray:
        cache = self.cache
        logits, new_keys, new_values = step(self.model, torch.tensor([token]), torch.tensor([cache.length]),
                                            cache.mask, tuple(cache.keys), tuple(cache.values))
        cache.append(torch.stack(new_keys).numpy(), torch.stack(new_values).numpy())
        return logits[0].numpy()


def new_decoder(model: GPT, use_cache: bool = True, exported: OnnxDecoding | None = None) -> Decoder:
    """The decoder for ``model``: ONNX Runtime when an export of it is given, else the KV cache in PyTorch;
    the full recompute for models without attention, off the CPU, or with ``use_cache=False``
    (the same logits every way, to float rounding)."""
    if not model.config.has_attention or not use_cache or next(model.parameters()).device.type != "cpu":
        return Recompute(model)
    if exported is not None:
        return exported.decoder()
    return Cached(model)
