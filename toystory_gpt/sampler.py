"""Sampling: next-token logits with a key/value cache, then temperature / top-k picking, one character at a time."""

from __future__ import annotations

from collections.abc import Iterator

import torch

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
    ``use_cache=False`` recomputes the whole window every step (the naive way), same logits.
    """

    def __init__(self, model: GPT, use_cache: bool = True):
        self.model = model
        self.block_size = model.config.block_size
        self.contextless = model.config.n_layer == 0  # unigram and bigram only need the last token
        self.cache = model.new_cache() if use_cache else None
        self.window: list[int] = []

    def _logits(self, ids: list[int], cache=None) -> torch.Tensor:
        logits, _ = self.model(torch.tensor([ids]), cache=cache)
        return logits[0, -1]

    def start(self, ids: list[int]) -> torch.Tensor:
        if not ids:
            raise ValueError("the decoder needs at least one token of context")
        self.window = list(ids[-self.block_size:])
        return self._refill()

    def push(self, token: int) -> torch.Tensor:
        if self.contextless:
            self.window = [token]
            return self._logits(self.window)
        self.window.append(token)
        if len(self.window) > self.block_size:
            self.window = self.window[-(self.block_size // 2):]
            return self._refill()
        if self.cache is None:
            return self._logits(self.window)
        return self._logits([token], self.cache)

    def _refill(self) -> torch.Tensor:
        if self.contextless:
            return self._logits(self.window[-1:])
        if self.cache is None:
            return self._logits(self.window)
        self.cache.reset()
        return self._logits(self.window, self.cache)


def pick(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator) -> int:
    """Choose the next token: greedy at temperature 0, else sample from the (top-k) softmax."""
    if temperature == 0:
        return int(torch.argmax(logits))
    # Shift first, so the likeliest logit is 0 and the rest negative, and divide in float64: a tiny
    # temperature then gives -inf (probability 0) instead of overflowing to inf and a NaN softmax.
    logits = (logits - logits.max()).double() / temperature
    if 0 < top_k < logits.numel():
        threshold = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def generate(model: GPT, tokenizer: CharTokenizer, prompt: str, length: int, temperature: float = 0.8,
             top_k: int = 0, seed: int = 0, use_cache: bool = True) -> Iterator[str]:
    """Yield ``length`` generated characters continuing ``prompt`` (characters outside the vocabulary are dropped)."""
    generator = torch.Generator().manual_seed(seed)
    ids = tokenizer.encode(prompt).ids or tokenizer.encode(START).ids
    decoder = Decoder(model, use_cache)
    logits = decoder.start(ids)
    for i in range(length):
        token = pick(logits, temperature, top_k, generator)
        yield tokenizer.vocab[token]
        if i + 1 < length:  # the logits after the last character would go unused
            logits = decoder.push(token)
