"""The serving engine: every visitor's decoding, batched, one tick at a time.

A request becomes one ``Sequence`` per chosen milestone, each joining that model's ``Pool``. The engine's
thread runs turns while any pool has work: in each, every busy pool runs ``TICKS_PER_TURN`` ticks, each
writing one character for all its sequences in one batched step, the pools shared out between ``threads``
threads, the engine's and its workers (one per core: ONNX Runtime and PyTorch leave Python while they
compute). So a request's texts grow together, a turn at a time, and a tick costs little more for thirty
visitors than for one.
Nothing waits for a reader: a visitor reads its ``Generation`` when it likes, and a slow reader slows nobody.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

import torch

from ..cores import usable_cores
from ..pool import Pool, Sequence
from ..request import GenerateRequest
from .models import Models

log = logging.getLogger(__name__)

# Sequences per model at once: past this, requests wait in their pool for a free row. More than one address may
# hold (api.ADDRESS_LIMIT): a class behind one address leaves rows for everyone else.
CAPACITY = 96
# A snapshot's pool is smaller: rewinding training is rarer than writing, and each pool's cache is taken up front.
SNAPSHOT_CAPACITY = 16
# A thread runs each of its pools this many ticks in a row before the next: the model's weights stay in the
# CPU's cache, and the hand-over between threads is paid once per turn, not per character. A request's texts
# stay within this many characters of each other, which no one sees at 20 updates a second.
TICKS_PER_TURN = 8


class GenerationError(RuntimeError):
    """A request could not be finished (its model's step failed); the message is meant for the visitor."""


class Generation:
    """One request's texts as they grow, one per chosen milestone; finished when ``done`` is."""

    def __init__(self, sequences: dict[int, Sequence]):
        self.sequences = sequences
        self.done: concurrent.futures.Future = concurrent.futures.Future()
        self._left = len(sequences)
        self._lock = threading.Lock()  # sequences of one request end in different threads
        for sequence in sequences.values():
            sequence.on_end = self._ended

    def texts(self) -> dict[int, str]:
        """What each milestone has written so far."""
        return {number: "".join(s.text) for number, s in self.sequences.items()}

    def cancel(self) -> None:
        """Stop writing: every sequence leaves its pool at the next tick."""
        for sequence in self.sequences.values():
            sequence.cancelled = True

    def result(self, timeout: float | None = None) -> dict[int, str]:
        """The finished texts (a GenerationError if they could not be written)."""
        self.done.result(timeout)
        return self.texts()

    def _ended(self, error: str | None) -> None:
        """One sequence ended: written, cancelled, or failed with ``error`` (then the whole request fails)."""
        if error is not None:
            self.cancel()
        with self._lock:
            self._left -= 1
            if self.done.done():
                return
            if error is not None:
                self.done.set_exception(GenerationError(error))
            elif self._left == 0:
                self.done.set_result(None)


class Engine:
    """Serves ``models`` to everyone at once; ``submit`` from any thread."""

    def __init__(self, models: Models, threads: int | None = None, capacity: int = CAPACITY):
        threads = threads or usable_cores()
        # Each engine thread runs its models' operators itself: more threads inside torch would fight it.
        torch.set_num_threads(1)
        self.models = models
        self.capacity = capacity
        self._pools: dict[tuple[int, int | None], Pool] = {}
        # What each pool's tick took in its last turn, in seconds: the threads get shares of equal measured time,
        # whatever the machine, the models and their rows.
        self._tick_seconds: dict[Pool, float] = {}
        self._wake = threading.Condition()
        self._closed = False
        self.threads = threads
        self._workers = concurrent.futures.ThreadPoolExecutor(threads - 1, thread_name_prefix="engine") \
            if threads > 1 else None
        self._scheduler = threading.Thread(target=self._run, name="engine", daemon=True)
        self._scheduler.start()

    def pool(self, number: int, step: int | None = None) -> Pool:
        """Milestone ``number``'s pool (at training step ``step``), made on first use: outside the engine's lock,
        which every tick takes, as a first export or snapshot takes a while."""
        with self._wake:
            if (found := self._pools.get((number, step))) is not None:
                return found
        name = self.models.label(number) + ("" if step is None else f" at step {step:,}")
        capacity = self.capacity if step is None else min(self.capacity, SNAPSHOT_CAPACITY)
        made = Pool(self.models.decoding(number, step), capacity, name)
        with self._wake:
            return self._pools.setdefault((number, step), made)

    def warm_up(self) -> None:
        """Make every final model's pool (exporting its decoding) and write a character with each, so that the
        first visitor does not wait for it."""
        numbers = sorted(self.models.saved)
        for number in numbers:
            self.pool(number)
        if numbers:
            self.submit(GenerateRequest.parse(self.models.ladder, milestones=numbers, prompt="", length=2)).result()

    def submit(self, request: GenerateRequest) -> Generation:
        """Start writing ``request.length`` characters after its prompt with each of its (loaded) milestones, each
        from its own generator seeded with its seed; return the growing ``Generation``."""
        sequences = {n: Sequence.start(self.models.saved[n].tokenizer, request.prompt, request.length,
                                       request.temperature, request.top_k, request.seed)
                     for n in request.milestones}
        generation = Generation(sequences)
        pools = {n: self.pool(n, request.step) for n in sequences}
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine is closed")
            for number, sequence in sequences.items():
                pools[number].join(sequence)
            self._wake.notify()
        return generation

    @property
    def active(self) -> int:
        """Sequences live or waiting in any pool: 0 when the engine is idle."""
        with self._wake:
            return sum(len(p.live) + len(p.joining) for p in self._pools.values())

    def close(self) -> None:
        """Stop the engine's threads; requests still being written fail with a message."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._scheduler.join()
        if self._workers is not None:
            self._workers.shutdown()
        for pool in self._pools.values():
            for sequence in pool.clear():
                sequence.end("The server is shutting down. Try again in a moment.")

    def _shares(self) -> list[list[Pool]]:
        """The busy pools, shared out between the threads so that each has about as much to do: the slowest ticks
        go first, each to the thread with the least so far (a pool not yet measured counts as the mean of those
        that are). Called with the lock held: pools are only added under it."""
        shares, loads = [[] for _ in range(self.threads)], [0.0] * self.threads
        busy = [p for p in self._pools.values() if p.busy]
        measured = [self._tick_seconds[p] for p in busy if p in self._tick_seconds]
        guess = sum(measured) / len(measured) if measured else 1.0
        seconds = {p: self._tick_seconds.get(p, guess) for p in busy}
        for pool in sorted(busy, key=lambda p: -seconds[p]):
            least = loads.index(min(loads))
            shares[least].append(pool)
            loads[least] += seconds[pool]
        return [share for share in shares if share]

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not (shares := self._shares()):
                    self._wake.wait()
                if self._closed:
                    return
            # This thread takes the first share itself: one hand-over per tick and thread, not one per pool.
            try:
                others = [self._workers.submit(self._tick_all, share) for share in shares[1:]]
            except RuntimeError:  # the interpreter is exiting, and has shut the workers down (close() was not called)
                return
            self._tick_all(shares[0])
            for other in others:
                other.result()

    def _tick_all(self, pools: list[Pool]) -> None:
        for pool in pools:
            started, ticks = time.perf_counter(), 0
            while ticks < TICKS_PER_TURN and pool.busy:
                ticks += 1
                try:
                    ended, error = pool.tick(), None
                except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others
                    log.exception("a decoding step failed; its requests are told")
                    ended = pool.clear()
                    error = f"Milestone {pool.name} failed while writing ({type(exc).__name__}: {exc}). Try again."
                for sequence in ended:
                    sequence.end(error)
            if ticks:
                self._tick_seconds[pool] = (time.perf_counter() - started) / ticks
