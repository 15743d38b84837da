"""Sampling: next-token logits with a key/value cache, then temperature / top-k picking, one character at a time."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from . import onnx_decode
from .model import GPT
from .tokenizer import CharTokenizer

# An empty prompt starts the text as if at the beginning of a line.
START = "\n"


class Decoder:
    """Feeds a model its context token by token and returns next-token logits.

    Positions are learned and absolute, so a context cannot simply slide: every token would move
    to a new position and the cached keys/values would all be stale. When the window is full,
    the decoder keeps its most recent half, re-encodes it from position 0 in one batched pass,
    and continues from there: the model always sees between half and a full window of context,
    and the re-encode costs one forward pass every ``block_size / 2`` characters.
    Both the re-encode and each token's step run in ONNX Runtime (``toystory_gpt.onnx_decode``)
    where it is available, else in PyTorch (``GPT.prefill``, ``GPT.step``).
    ``use_cache=False`` recomputes the whole window every step (the naive way), same logits;
    ``onnx=False`` keeps the cached path in PyTorch (the same logits to float rounding, ~1e-6).
    """

    def __init__(self, model: GPT, use_cache: bool = True, onnx: bool = True):
        self.model = model
        self.block_size = model.config.block_size
        self.contextless = model.config.n_layer == 0  # unigram and bigram only need the last token
        self.cache = model.new_cache() if use_cache else None
        fast = onnx_decode.for_model(model) if onnx and self.cache is not None and not model.training else None
        self.fast = fast.stream(self.cache) if fast is not None else None
        self.window: list[int] = []

    def _logits(self, ids: list[int], cache=None) -> np.ndarray:
        logits, _ = self.model(torch.tensor([ids]), cache=cache)
        return logits[0, -1].detach().float().cpu().numpy()

    def start(self, ids: list[int]) -> np.ndarray:
        if not ids:
            raise ValueError("the decoder needs at least one token of context")
        self.window = list(ids[-self.block_size:])
        return self._refill()

    def push(self, token: int) -> np.ndarray:
        if self.contextless:
            self.window = [token]
            return self._logits(self.window)
        self.window.append(token)
        if len(self.window) > self.block_size:
            self.window = self.window[-max(1, self.block_size // 2):]
            return self._refill()
        if self.cache is None:
            return self._logits(self.window)
        if self.fast is not None:
            return self.fast(token)
        return self._logits([token], self.cache)

    def _refill(self) -> np.ndarray:
        if self.contextless:
            return self._logits(self.window[-1:])
        if self.cache is None:
            return self._logits(self.window)
        if self.fast is not None and len(self.window) == self.fast.prefill_length:
            return self.fast.prefill(self.window)
        self.cache.reset()
        return self._logits(self.window, self.cache)


def pick(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """Choose the next token: greedy at temperature 0, else sample from the (top-k) softmax
    (tokens tied with the k-th largest logit all stay in).

    In NumPy on purpose: these are 77 numbers, and a handful of NumPy calls on them cost a few
    microseconds where the same in PyTorch (``torch.multinomial`` alone: ~17 µs) rivals a model step.
    """
    if temperature == 0:
        return int(np.argmax(logits))
    # Shift first, so the likeliest logit is 0 and the rest negative, and divide in float64: a tiny
    # temperature then gives -inf (probability 0) instead of overflowing to inf and a NaN softmax.
    with np.errstate(over="ignore"):  # that -inf is wanted
        z = (logits - logits.max()).astype(np.float64) / temperature
    if 0 < top_k < z.size:
        z[z < np.partition(z, -top_k)[-top_k]] = -np.inf
    cdf = np.cumsum(np.exp(z))  # unnormalised: the likeliest term is exp(0) = 1, so the total is >= 1
    # side="right" never lands on a zero-probability token (its cdf step is empty). Should u * total ever round
    # up to the total itself, side="left" on the total gives the last token with any probability.
    token = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return token if token < z.size else int(np.searchsorted(cdf, cdf[-1], side="left"))


@torch.inference_mode()
def generate(model: GPT, tokenizer: CharTokenizer, prompt: str, length: int, temperature: float = 0.8,
             top_k: int = 0, seed: int = 0, use_cache: bool = True, onnx: bool = True) -> Iterator[str]:
    """Yield ``length`` generated characters continuing ``prompt`` (characters outside the vocabulary are dropped);
    ``use_cache`` and ``onnx`` as for ``Decoder``: the same text either way, unless float rounding (~1e-6)
    happens to move a draw across a boundary between two characters."""
    rng = np.random.default_rng(seed)
    ids = tokenizer.encode(prompt).ids or tokenizer.encode(START).ids
    decoder = Decoder(model, use_cache, onnx)
    logits = decoder.start(ids)
    for i in range(length):
        token = pick(logits, temperature, top_k, rng)
        yield tokenizer.vocab[token]
        if i + 1 < length:  # the logits after the last character would go unused
            logits = decoder.push(token)
