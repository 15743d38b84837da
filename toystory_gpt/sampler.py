"""Sampling: a decoder's next-token logits, then temperature / top-k picking, one character at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from .decoding import new_decoder
from .model import GPT
from .tokenizer import CharTokenizer

if TYPE_CHECKING:
    from .onnx_decode import OnnxDecoding

# An empty prompt starts the text as if at the beginning of a line.
START = "\n"


def odds(logits: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    """Unnormalised sampling weights (V,) in float64: the softmax of ``logits / temperature``, scaled so that
    the likeliest token weighs 1, with everything below the k-th largest logit cut to 0 (tokens tied with
    it all stay in; ``top_k`` 0 keeps all). At temperature 0 only the likeliest tokens are left.

    In NumPy on purpose: these are a few dozen numbers, and torch's per-call overhead would rival a model step.
    """
    if temperature == 0:
        return (logits == logits.max()).astype(np.float64)
    # Shift first, so the likeliest logit is 0 and the rest negative, and divide in float64: a tiny
    # temperature then gives -inf (weight 0) instead of overflowing to inf and a NaN softmax.
    with np.errstate(over="ignore"):  # that -inf is wanted
        z = (logits - logits.max()).astype(np.float64) / temperature
    if 0 < top_k < z.size:
        z[z < np.partition(z, -top_k)[-top_k]] = -np.inf
    return np.exp(z)


def distribution(logits: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    """The probabilities (V,) that ``pick`` draws the next token from (at temperature 0: ties share the argmax)."""
    weights = odds(logits, temperature, top_k)
    return weights / weights.sum()


def pick(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """Choose the next token: greedy at temperature 0, else draw it from ``distribution``."""
    if temperature == 0:
        return int(np.argmax(logits))
    cdf = np.cumsum(odds(logits, temperature, top_k))  # unnormalised: the likeliest weighs 1, so the total is >= 1
    # side="right" never lands on a zero-probability token (its cdf step is empty). Should u * total ever round
    # up to the total itself, side="left" on the total gives the last token with any probability.
    token = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return token if token < cdf.size else int(np.searchsorted(cdf, cdf[-1], side="left"))


@torch.inference_mode()
def generate(model: GPT, tokenizer: CharTokenizer, prompt: str, length: int, temperature: float = 0.8,
             top_k: int = 0, seed: int = 0, use_cache: bool = True,
             exported: OnnxDecoding | None = None) -> Iterator[str]:
    """Yield ``length`` generated characters continuing ``prompt`` (characters outside the vocabulary are dropped).

    ``use_cache`` and ``exported`` choose the decoder (``decoding.new_decoder``): the same text every way,
    unless float rounding (~1e-6) happens to move a draw across a boundary between two characters.
    """
    rng = np.random.default_rng(seed)
    ids = tokenizer.encode(prompt).ids or tokenizer.encode(START).ids
    decoder = new_decoder(model, use_cache, exported)
    logits = decoder.start(ids)
    for i in range(length):
        token = pick(logits, temperature, top_k, rng)
        yield tokenizer.vocab[token]
        if i + 1 < length:  # the logits after the last character would go unused
            logits = decoder.push(token)
