"""Decoding: next-token logits for many sequences at once, one character at a time, without recomputing windows.

A ``Decoding`` is how one model does it, for a batch of rows that each hold one sequence:

* ``encode(windows)`` reads token windows of one length from position 0 and returns their next-token
  logits and every layer's keys and values, to fill a ``KVCache``;
* ``advance(cache, n, idx, pos)`` runs one new token per row for the cache's first ``n`` rows against
  what they cached (``step``), returning its logits and the new keys and values for the caller to store.

``TorchDecoding`` runs ``prefill`` and ``step`` in PyTorch; ``Contextless`` serves the unigram and bigram,
which see at most the current character; ``onnx_decode.OnnxDecoding`` runs the same two functions in
ONNX Runtime. Positions are learned and absolute, so a full window cannot slide one character at a time:
every cached key would move to a new position. When a row's window is full, its newest ``refill_length``
tokens are encoded again from position 0, so the model always sees between half and a whole window.

A row's logits must never depend on the rows beside it (a visitor's text is theirs alone, however many
others are served with it): each implementation says how it ensures that.
"""

from __future__ import annotations

import numpy as np
import torch

from .model import GPT, GPTConfig, attend
from .recorder import Recorder


def refill_length(block_size: int) -> int:
    """How many of its newest tokens a sequence keeps when its window is full."""
    return max(1, block_size // 2)


class KVCache:
    """Every layer's keys and values for ``rows`` sequences, preallocated, and each row's length: a row's first
    ``length`` slots are filled, and a step sees those alone. Shapes never change, so ``step`` is a function of
    fixed-shape tensors that can be exported once; the arrays are only changed in place, in NumPy (a handful of
    numbers is faster written there than through torch indexing), and the first ``n`` rows are always a view
    without a copy."""

    def __init__(self, config: GPTConfig, rows: int):
        shape = (config.n_layer, rows, config.n_head, config.block_size, config.n_embd // config.n_head)
        # Written now (np.full, not np.zeros' untouched pages): the memory is taken up front, not as a crowd comes.
        self.keys, self.values = np.full(shape, 0, np.float32), np.full(shape, 0, np.float32)  # (L, R, nh, S, hs)
        self.size = config.block_size  # slots per row
        self.lengths = np.zeros(rows, np.int64)  # slots filled so far, per row
        self._first: dict[int, tuple] = {}  # n -> the views of ``first(n)``, made once

    def first(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The first ``n`` rows' keys and values, each layer's (n, nh, S, hs): views, made once per ``n`` (the
        arrays never move), for a step to read."""
        if n not in self._first:
            self._first[n] = ([k[:n] for k in self.keys], [v[:n] for v in self.values])
        return self._first[n]

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def fill(self, rows: np.ndarray, keys: np.ndarray, values: np.ndarray) -> None:
        """Empty ``rows`` and fill them from position 0 with an encode's keys and values (L, n, nh, T, hs)."""
        T = keys.shape[3]
        self.keys[:, rows, :, :T] = keys
        self.values[:, rows, :, :T] = values
        self.lengths[rows] = T

    def append(self, rows: np.ndarray, new_keys: np.ndarray, new_values: np.ndarray) -> None:
        """Store one token's keys and values per row, all layers stacked (L, n, nh, 1, hs), in each row's next slot."""
        at = self.lengths[rows]
        if at.max(initial=0) >= self.size:
            raise ValueError(f"sequence of {int(at.max()) + 1} tokens is longer than the context ({self.size})")
        # A row at a time, by plain indexing: an assignment through index arrays lets go of Python's lock while it
        # copies, and another engine thread takes it, so this one waits to get it back, every tick. (A plain copy
        # lets go too, past 500 numbers, but so short a one seldom loses it: copies of one layer at a time, which
        # never let go, were no faster.)
        for i, (row, slot) in enumerate(zip(rows.tolist(), at.tolist())):
            self.keys[:, row, :, slot] = new_keys[:, i, :, 0]
            self.values[:, row, :, slot] = new_values[:, i, :, 0]
            self.lengths[row] = slot + 1

    def move(self, source: int, target: int) -> None:
        """Copy row ``source`` onto row ``target`` (a pool keeps its live rows first)."""
        for array in (self.keys, self.values):
            array[:, target] = array[:, source]
        self.lengths[target] = self.lengths[source]


def prefill(model: GPT, idx):
    """Logits (B, T, V) for ``idx`` (B, T) from position 0, plus every layer's keys and values, each a tuple
    of (B, nh, T, hs) tensors: what a KV cache starts from. A pure function, like ``step``."""
    with Recorder(model, "blocks.*.attn.keys", "blocks.*.attn.values") as seen:
        logits, _ = model(idx)
    layers = range(model.config.n_layer)
    return (logits, tuple(seen[f"blocks.{i}.attn.keys"] for i in layers),
            tuple(seen[f"blocks.{i}.attn.values"] for i in layers))


def step(model: GPT, idx, pos, keys: tuple, values: tuple):
    """Logits (B, V) for one new token per row ``idx`` (B,) at positions ``pos`` (B,), and its keys and values,
    a tuple of one (B, nh, 1, hs) tensor per layer, given one cached (B, nh, S, hs) tensor per layer in ``keys``
    and ``values`` of which each row's first ``pos`` slots are filled (the rest are hidden).

    Tensors in, tensors out, nothing written: ``onnx_decode`` exports exactly this. The new key is not in the
    cache yet, so ``attend`` scores it beside the cached ones in one softmax: no write inside the step, and no
    copy of the window to append to. Every size but the batch is spelled from the config, not read from a
    tensor: exported, each shape read would be arithmetic run at every step.
    """
    cfg = model.config
    C, nh = cfg.n_embd, cfg.n_head
    sizes = (C // nh, [cfg.block_size, 1])
    x = model.embed(idx, pos)[:, None]  # (B, 1, C)
    # Each row's slots from its position on are empty: hidden from the softmax by an additive mask (B, 1, 1, S).
    empty = torch.arange(cfg.block_size, device=pos.device) >= pos[:, None, None, None]
    mask = torch.where(empty, float("-inf"), 0.0)
    new_keys, new_values = [], []
    for block, cached_keys, cached_values in zip(model.blocks, keys, values):
        attn = block.attn
        # (B, nh, 1, hs) each, as attn.heads splits them: with one token, moving the heads before it moves nothing
        q, k, v = (t.reshape(-1, nh, 1, C // nh) for t in attn.c_attn(block.ln_1(x)).split(C, dim=2))
        now = torch.zeros((), dtype=mask.dtype)  # the new token may always see itself
        y = attend(q, [cached_keys, k], [cached_values, v], [mask, now], sizes=sizes)
        h = attn.resid_dropout(attn.c_proj(y.reshape(-1, 1, C)))  # as attn.project joins the heads again
        x = block.after_attention(x, h)
        new_keys.append(k)
        new_values.append(v)
    return model.head(x)[:, 0], tuple(new_keys), tuple(new_values)


class Decoding:
    """How one model computes a batch of rows' next-token logits; see the module's docstring."""

    min_rows = 1  # a step runs at least this many rows, for the reason the subclass gives

    def __init__(self, model: GPT):
        self.model = model
        self.config = model.config

    @property
    def window(self) -> int:
        """The most tokens a row keeps in view."""
        return self.config.block_size

    @property
    def cached(self) -> bool:
        """Whether rows keep a KV cache (models without attention need none)."""
        return True

    def encode(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Logits (n, V) after each window (n, T), and the keys and values (L, n, nh, T, hs) to cache."""
        raise NotImplementedError

    def advance(self, cache: KVCache, n: int, idx: np.ndarray, pos: np.ndarray):
        """Logits (n, V) after one more token ``idx`` (n,) per row for ``cache``'s first ``n`` rows, each at its
        position ``pos`` (n,), its cached length (its slots from there on are hidden), and that token's keys and
        values (L, n, nh, 1, hs). The arrays returned may be overwritten by the next step on the same cache."""
        raise NotImplementedError


class TorchDecoding(Decoding):
    """``prefill`` and ``step`` in PyTorch. PyTorch picks its matmul kernels by the number of rows, and below
    ``MIN_ROWS`` a row's result can change in its last bits with the batch: a step always runs at least that
    many rows (the pool's spare rows fill in), and each window is encoded alone."""

    min_rows = 16

    def __init__(self, model: GPT):
        super().__init__(model)
        self.device = next(model.parameters()).device  # training samples from a model wherever it trains

    def _in(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    @staticmethod
    def _out(tensor: torch.Tensor) -> np.ndarray:
        return tensor.float().cpu().numpy()

    @torch.inference_mode()
    def encode(self, windows: np.ndarray):
        outputs = [prefill(self.model, self._in(row[None])) for row in windows]
        logits = np.stack([self._out(o[0][0, -1]) for o in outputs])
        keys, values = (np.stack([np.stack([self._out(t[0]) for t in o[part]]) for o in outputs], axis=1)
                        for part in (1, 2))  # (L, n, nh, T, hs)
        return logits, keys, values

    @torch.inference_mode()
    def advance(self, cache: KVCache, n: int, idx: np.ndarray, pos: np.ndarray):
        rows = max(n, self.min_rows)  # the pool's cache has at least min_rows rows
        idx, pos = np.resize(idx, rows), np.resize(pos, rows)  # spare rows repeat real ones: valid, and dropped
        keys, values = (tuple(self._in(layer[:rows]) for layer in part) for part in (cache.keys, cache.values))
        logits, new_keys, new_values = step(self.model, self._in(idx), self._in(pos), keys, values)
        return self._out(logits[:n]), self._out(torch.stack(new_keys)[:, :n]), self._out(torch.stack(new_values)[:, :n])


class Contextless(Decoding):
    """The unigram and the bigram: the next token's logits depend on the current token at most, so there is nothing
    to cache, and every token's logits are worked out once, as the model computes them, into a table: a step
    is a row lookup (exact whatever the batch), for a model whose weights no longer change while it decodes."""

    @property
    def window(self) -> int:
        return 1

    @property
    def cached(self) -> bool:
        return False

    @torch.inference_mode()
    def __init__(self, model: GPT):
        super().__init__(model)
        every = torch.arange(model.config.vocab_size, device=next(model.parameters()).device)
        self.table = model(every[:, None])[0][:, 0].float().cpu().numpy()  # (V, V): row t, the logits after t

    def encode(self, windows: np.ndarray):
        return self.advance(None, len(windows), windows[:, -1], np.zeros(len(windows), np.int64))

    def advance(self, cache, n: int, idx: np.ndarray, pos: np.ndarray):
        return self.table[idx], None, None


def torch_decoding(model: GPT) -> Decoding:
    """The PyTorch decoding that fits ``model``."""
    return TorchDecoding(model) if model.config.has_attention else Contextless(model)
