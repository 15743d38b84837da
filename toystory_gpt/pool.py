"""One model's sequence slots: each tick, every live sequence writes one character, in one batched step.

A sequence joins at a tick boundary (its prompt encoded with the others joining then, those of one length in one
batch), writes a character per tick, and leaves when it has written them all or was cancelled; its row is
free for the next tick. Live sequences always hold the first rows, so the step reads the KV cache without a copy,
and what a tick needs of every row (next-token logits, settings, newest token) is kept in arrays by row: a
tick's bookkeeping is a few NumPy calls, whatever the number of rows.

The serving engine runs a pool per model for every visitor; ``generate`` runs one for a single sequence, which is
how training writes its samples, so they are the texts the app writes (training does not import serving).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .decoding import Decoding, KVCache, refill_length, torch_decoding
from .model import GPT
from .sampler import START, Draws, Settings, pick
from .tokenizer import CharTokenizer

# The most windows encoded in one call: the memory a call needs grows with its rows, and past a few rows
# encoding more together saves little time.
ENCODE_ROWS = 8


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
    on_end: Callable[[str | None], None] | None = field(default=None, repr=False)  # told once, when it ends

    def end(self, error: str | None = None) -> None:
        """It has left its pool: written, cancelled, or failed with ``error``."""
        if self.on_end is not None:
            self.on_end(error)

    @classmethod
    def start(cls, tokenizer: CharTokenizer, prompt: str, length: int, temperature: float, top_k: int,
              seed: int) -> Sequence:
        """A sequence continuing ``prompt`` (characters outside the vocabulary dropped; empty: a line's start)."""
        return cls(start_ids(tokenizer, prompt), length, temperature, top_k, np.random.default_rng(seed),
                   tokenizer.vocab)

    @property
    def finished(self) -> bool:
        return self.cancelled or len(self.text) >= self.length


def start_ids(tokenizer: CharTokenizer, prompt: str) -> list[int]:
    """What a generation of ``prompt`` starts from: its characters the vocabulary has, else a line's start;
    ValueError for a vocabulary without a newline (a visitor's text) and a prompt of none of its characters."""
    ids = tokenizer.encode(prompt).ids or tokenizer.encode(START).ids
    if not ids:
        raise ValueError("the prompt has none of its characters, and it has no newline to start from: type some of "
                         "its characters")
    return ids


class Pool:
    """Up to ``capacity`` sequences of one model, advanced together."""

    def __init__(self, decoding: Decoding, capacity: int, name: str = "the model"):
        self.decoding = decoding
        self.name = name  # for messages
        self.capacity = capacity
        rows = max(capacity, decoding.min_rows)
        self.cache = KVCache(decoding.config, rows) if decoding.cached else None
        self.live: list[Sequence] = []  # row i holds live[i]
        # Row i's next-token logits, sampling settings and newest token, beside live[i].
        self.logits = np.zeros((rows, decoding.config.vocab_size), np.float32)
        self.temperature = np.zeros(rows, np.float64)
        self.top_k = np.zeros(rows, np.int64)
        self.idx = np.zeros(rows, np.int64)
        self.rows = np.arange(rows)
        self.draws = Draws(rows)
        self.settings = Settings([], [], decoding.config.vocab_size)  # the live rows', made again as they change
        self.joining: list[Sequence] = []  # appended from any thread
        self._joining_lock = threading.Lock()  # the tick takes out cancelled ones wherever they wait
        self._taken: list[Sequence] = []  # what this tick saw end, until it returns them
        self._in_hand: list[Sequence] = []  # what it took from joining and has not made live yet

    @property
    def busy(self) -> bool:
        return bool(self.live or self.joining)

    def join(self, sequence: Sequence) -> None:
        with self._joining_lock:
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
        with self._joining_lock:
            dropped = list(dict.fromkeys([*self._taken, *self._in_hand, *self.live, *self.joining]))
            self.joining = []
        self.live.clear()
        self._taken, self._in_hand = [], []
        return dropped

    def _admit(self) -> None:
        """Give joining sequences free rows, encoding their prompts (one batch per prompt length); those cancelled
        while they waited end now, however many wait before them."""
        if not self.joining:
            return
        with self._joining_lock:
            waiting = []
            for sequence in self.joining:  # one look at each: it may be cancelled meanwhile
                (self._taken if sequence.finished else waiting).append(sequence)
            free = max(0, self.capacity - len(self.live))
            ready = waiting[:free]
            self.joining = waiting[free:]
        for sequence in ready:
            sequence.window = sequence.window[-self.decoding.window:]
        self._in_hand = ready  # neither joining nor live until encoded: a failed encode must not lose them
        by_length = collections.defaultdict(list)
        for sequence in ready:
            by_length[len(sequence.window)].append(sequence)
        for group in by_length.values():
            rows = np.arange(len(self.live), len(self.live) + len(group))
            self.temperature[rows] = [s.temperature for s in group]
            self.top_k[rows] = [s.top_k for s in group]
            for row, sequence in zip(rows.tolist(), group):
                self.draws.start(row, sequence.rng)
            self._encode(group, rows)
            self.live.extend(group)
        self._in_hand = []
        if ready:
            self._settle()

    def _encode(self, group: list[Sequence], rows: np.ndarray) -> None:
        """Encode the windows (of one length) of ``group`` into ``rows``, ENCODE_ROWS at a time: a window's bits
        do not depend on the others encoded with it."""
        for start in range(0, len(group), ENCODE_ROWS):
            chunk, at = group[start:start + ENCODE_ROWS], rows[start:start + ENCODE_ROWS]
            logits, keys, values = self.decoding.encode(np.array([s.window for s in chunk], dtype=np.int64))
            if self.cache is not None:
                self.cache.fill(at, keys, values)
            self.logits[at] = logits

    def _settle(self) -> None:
        """The live rows changed: work out their sampling settings again."""
        n = len(self.live)
        self.settings = Settings(self.temperature[:n], self.top_k[:n], self.decoding.config.vocab_size)

    def _write(self) -> None:
        n = len(self.live)
        tokens = pick(self.logits[:n], self.settings, self.draws.next(n, self.settings.drawn))
        self.idx[:n] = tokens
        for sequence, token in zip(self.live, tokens.tolist()):
            sequence.text.append(sequence.vocab[token])
            sequence.window.append(token)

    def _retire(self) -> None:
        if not (finished := [i for i, s in enumerate(self.live) if s.finished]):
            return
        for row in reversed(finished):
            self._taken.append(self.live[row])
            last = len(self.live) - 1  # rows after `row` that finished are already gone: `last` is live
            if row != last:
                if self.cache is not None:
                    self.cache.move(last, row)
                for array in (self.logits, self.temperature, self.top_k, self.idx):
                    array[row] = array[last]
                self.draws.move(last, row)
                self.live[row] = self.live[last]
            self.live.pop()
        self._settle()

    def _advance(self) -> None:
        """Every live sequence's logits after the character it just wrote: one batched step, and the rows whose
        window is full encoded again from their newest ``refill_length`` tokens."""
        live, n = self.live, len(self.live)
        if self.cache is None:
            self.logits[:n] = self.decoding.advance(None, n, self.idx[:n], np.zeros(n, np.int64))[0]
            for sequence in live:
                del sequence.window[:-1]
            return
        # The cache holds every token but the newest: a full cache has no slot left for it.
        lengths = self.cache.lengths[:n]
        if lengths.max() < self.decoding.window:  # the usual tick: every row steps, at its length
            self.logits[:n], new_keys, new_values = self.decoding.advance(self.cache, n, self.idx[:n], lengths)
            self.cache.append(self.rows[:n], new_keys, new_values)
            return
        full = lengths >= self.decoding.window
        pos = np.minimum(lengths, self.decoding.window - 1)  # keeps a full row's (discarded) step valid
        stepped = np.flatnonzero(~full)
        if stepped.size:  # the full rows' step is discarded: they are encoded again below
            logits, new_keys, new_values = self.decoding.advance(self.cache, n, self.idx[:n], pos)
            self.cache.append(stepped, new_keys[:, stepped], new_values[:, stepped])
            self.logits[stepped] = logits[stepped]
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
