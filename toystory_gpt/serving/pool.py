"""One model's sequence slots: each tick, every live sequence writes one character, in one batched step.

A sequence joins at a tick boundary (its prompt encoded with the others joining then, those of one length in one
batch), writes a character per tick, and leaves when it has written them all or was cancelled; its row is
free for the next tick. Live sequences always hold the first rows, so the step reads the KV cache without a copy.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..decoding import Decoding, KVCache, refill_length, torch_decoding
from ..model import GPT
from ..sampler import START, pick
from ..tokenizer import CharTokenizer


@dataclass(eq=False)
class Sequence:
    """One text being written: its window of token ids, its settings, and its own generator, so that what it
    writes depends on its own inputs only."""
    window: list[int]
    length: int                  # characters to write
    temperature: float
    top_k: int
    rng: np.random.Generator
    vocab: str
    text: list[str] = field(default_factory=list)  # appended by the engine; read by anyone
    cancelled: bool = False      # set by anyone; the sequence leaves at the next tick
    logits: np.ndarray | None = field(default=None, repr=False)  # (V,) for the next character
    on_end: Callable[[str | None], None] | None = field(default=None, repr=False)  # told once, when it ends

    def end(self, error: str | None = None) -> None:
        """It has left its pool: written, cancelled, or failed with ``error``."""
        if self.on_end is not None:
            self.on_end(error)

    @classmethod
    def start(cls, tokenizer: CharTokenizer, prompt: str, length: int, temperature: float, top_k: int,
              seed: int) -> Sequence:
        """A sequence continuing ``prompt`` (characters outside the vocabulary dropped; empty: a line's start)."""
        ids = tokenizer.encode(prompt).ids or tokenizer.encode(START).ids
        if not ids:  # a vocabulary without a newline, and a prompt of none of its characters
            raise ValueError("the prompt has none of the model's characters, and the model has no newline to start "
                             "from: type some of its characters")
        return cls(ids, length, temperature, top_k, np.random.default_rng(seed), tokenizer.vocab)

    @property
    def finished(self) -> bool:
        return self.cancelled or len(self.text) >= self.length


class Pool:
    """Up to ``capacity`` sequences of one model, advanced together."""

    def __init__(self, decoding: Decoding, capacity: int, name: str = "the model"):
        self.decoding = decoding
        self.name = name  # for messages
        self.capacity = capacity
        self.cache = KVCache(decoding.config, max(capacity, decoding.min_rows)) if decoding.cached else None
        self.live: list[Sequence] = []  # row i holds live[i]
        self.joining: collections.deque[Sequence] = collections.deque()  # appended from any thread
        self._taken: list[Sequence] = []  # what this tick saw end, until it returns them
        self._in_hand: list[Sequence] = []  # what it took from joining and has not made live yet

    @property
    def busy(self) -> bool:
        return bool(self.live or self.joining)

    @property
    def cost(self) -> int:
        """Roughly what a tick costs, to share ticks out between threads: blocks times rows."""
        return max(1, self.decoding.config.n_layer) * min(self.capacity, len(self.live) + len(self.joining))

    def join(self, sequence: Sequence) -> None:
        self.joining.append(sequence)

    def tick(self) -> list[Sequence]:
        """Admit who fits, write one character for every live sequence, and return those that ended (written or
        cancelled: a cancelled one leaves before it writes another character)."""
        self._taken = []
        self._admit()
        self._retire()
        if self.live:
            self._write()
            self._retire()
        if self.live:
            self._advance()
        ended, self._taken = self._taken, []
        return ended

    def clear(self) -> list[Sequence]:
        """Drop every sequence (after a failed step: those the tick had in hand too) and return them."""
        dropped = list(dict.fromkeys([*self._taken, *self._in_hand, *self.live, *self.joining]))
        self.live.clear()
        self.joining.clear()
        self._taken, self._in_hand = [], []
        return dropped

    def _admit(self) -> None:
        """Give joining sequences free rows, encoding their prompts (one batch per prompt length); those cancelled
        while they waited end here."""
        ready = []
        while self.joining and len(self.live) + len(ready) < self.capacity:
            sequence = self.joining.popleft()
            if sequence.finished:
                self._taken.append(sequence)
                continue
            sequence.window = sequence.window[-self.decoding.window:]
            ready.append(sequence)
        self._in_hand = ready  # neither joining nor live until encoded: a failed encode must not lose them
        by_length = collections.defaultdict(list)
        for sequence in ready:
            by_length[len(sequence.window)].append(sequence)
        for group in by_length.values():
            self._encode(group, np.arange(len(self.live), len(self.live) + len(group)))
            self.live.extend(group)
        self._in_hand = []

    def _encode(self, group: list[Sequence], rows: np.ndarray) -> None:
        logits, keys, values = self.decoding.encode(np.array([s.window for s in group], dtype=np.int64))
        if self.cache is not None:
            self.cache.fill(rows, keys, values)
        for sequence, row_logits in zip(group, logits):
            sequence.logits = row_logits

    def _write(self) -> None:
        live = self.live
        tokens = pick(np.stack([s.logits for s in live]), np.array([s.temperature for s in live]),
                      np.array([s.top_k for s in live]), [s.rng for s in live])
        for sequence, token in zip(live, tokens.tolist()):
            sequence.text.append(sequence.vocab[token])
            sequence.window.append(token)

    def _retire(self) -> None:
        for row in reversed([i for i, s in enumerate(self.live) if s.finished]):
            self._taken.append(self.live[row])
            last = len(self.live) - 1  # rows after `row` that finished are already gone: `last` is live
            if row != last:
                if self.cache is not None:
                    self.cache.move(last, row)
                self.live[row] = self.live[last]
            self.live.pop()

    def _advance(self) -> None:
        """Every live sequence's logits after the character it just wrote: one batched step, and the rows whose
        window is full encoded again from their newest ``refill_length`` tokens."""
        live, n = self.live, len(self.live)
        idx = np.array([s.window[-1] for s in live], dtype=np.int64)
        if self.cache is None:
            logits, _, _ = self.decoding.advance(None, n, idx, np.zeros(n, np.int64))
            for sequence, row_logits in zip(live, logits):
                sequence.logits = row_logits
                del sequence.window[:-1]
            return
        full = np.array([len(s.window) > self.decoding.window for s in live])
        pos = np.minimum(self.cache.lengths[:n], self.decoding.window - 1)  # a full row's step is discarded
        if not full.all():
            logits, new_keys, new_values = self.decoding.advance(self.cache, n, idx, pos)
            stepped = np.flatnonzero(~full)
            self.cache.append(stepped, new_keys[:, stepped], new_values[:, stepped])
            for row in stepped:
                live[row].logits = logits[row]
        if full.any():
            refilled = np.flatnonzero(full)
            keep = refill_length(self.decoding.window)
            for row in refilled:
                live[row].window = live[row].window[-keep:]
            self._encode([live[row] for row in refilled], refilled)


def generate(model: GPT, tokenizer: CharTokenizer, prompt: str, length: int, temperature: float = 0.8,
             top_k: int = 0, seed: int = 0, decoding: Decoding | None = None) -> str:
    """``length`` characters continuing ``prompt``, written by one sequence alone: the same text as in the
    engine among any others (for the same ``decoding``; PyTorch's by default)."""
    pool = Pool(decoding or torch_decoding(model), capacity=1)
    sequence = Sequence.start(tokenizer, prompt, length, temperature, top_k, seed)
    pool.join(sequence)
    while pool.busy:
        pool.tick()
    return "".join(sequence.text)
