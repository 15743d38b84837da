"""The serving engine: a request's text depends on its own inputs only, alone or in a crowd, down to the logits'
bits; a failing model fails only its own requests; cancelled requests leave nothing behind."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import numpy as np
import pytest

from tests.conftest import ROOT
from toystory_gpt.api import GenerateAnswer, Service
from toystory_gpt.decoding import KVCache, TorchDecoding
from toystory_gpt.milestones import LADDER
from toystory_gpt.pool import ENCODE_ROWS, Pool, Sequence, generate
from toystory_gpt.serving import Engine, GenerationError, Models
from toystory_gpt.serving.engine import CAPACITY, TICKS_PER_TURN

ALL = [m.number for m in LADDER.milestones]
BATCHES = range(1, CAPACITY + 1)  # every size the engine runs
WAIT = 60  # seconds: bounds a hang, measures nothing


def crowd_cache(decoding, rows: int, seed: int) -> KVCache:
    """A cache of ``rows`` sequences of different lengths, filled by real encodes."""
    rng = np.random.default_rng(seed)
    cache = KVCache(decoding.config, max(rows, decoding.min_rows))
    block = decoding.config.block_size
    for row in range(rows):
        window = rng.integers(0, decoding.config.vocab_size, int(rng.integers(1, block)))
        _, keys, values = decoding.encode(window[None])
        cache.fill(np.array([row]), keys, values)
    return cache


@pytest.fixture(scope="module")
def committed():
    """The committed weights (the real dimensions), loaded once."""
    return Models.from_folder(ROOT / "weights")


@pytest.mark.parametrize("milestone, weights", [(3, "quick"), (5, "quick"), (8, "quick"), (8, "committed")])
@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_a_rows_logits_are_bitwise_the_same_at_every_batch_size_and_slot(service, committed, milestone, weights,
                                                                         runtime):
    models = service.models if weights == "quick" else committed
    saved = models.saved[milestone]
    decoding = models.decoding(milestone) if runtime == "onnx" else TorchDecoding(saved.model)
    assert type(decoding).__name__ == ("OnnxDecoding" if runtime == "onnx" else "TorchDecoding")
    rows = max(BATCHES)
    cache = crowd_cache(decoding, rows, seed=milestone)
    idx = np.random.default_rng(1).integers(0, saved.model.config.vocab_size, rows)
    # A copy: a step's outputs may be the decoding's own buffers, which the next step on this cache overwrites.
    reference = tuple(a.copy() for a in decoding.advance(cache, rows, idx, cache.lengths[:rows].copy()))
    for n in BATCHES:
        logits, keys, values = decoding.advance(cache, n, idx[:n], cache.lengths[:n].copy())
        for got, want in zip((logits, keys, values), reference):
            np.testing.assert_array_equal(got, want[:n] if got.ndim == 2 else want[:, :n], err_msg=f"batch of {n}")
    # The same sequence in another slot, among other companions: the last row moved to the front.
    moved = crowd_cache(decoding, rows, seed=milestone)
    moved.move(rows - 1, 0)
    logits, _, _ = decoding.advance(moved, 5, np.r_[idx[-1], idx[1:5]], moved.lengths[:5].copy())
    np.testing.assert_array_equal(logits[0], reference[0][rows - 1])


@pytest.mark.parametrize("milestone", [3, 8])
def test_encoding_windows_together_gives_each_the_bits_it_gets_alone(service, milestone):
    decoding = service.models.decoding(milestone)
    windows = np.random.default_rng(2).integers(0, decoding.config.vocab_size, (6, 9))
    together = decoding.encode(windows)
    for row in range(6):
        alone = decoding.encode(windows[row:row + 1])
        np.testing.assert_array_equal(alone[0][0], together[0][row])
        np.testing.assert_array_equal(alone[1][:, 0], together[1][:, row])


def test_many_joining_at_once_are_encoded_a_few_at_a_time_and_write_what_they_write_alone(service, monkeypatch):
    saved = service.models.saved[8]
    decoding = service.models.decoding(8)
    sizes, real_encode = [], decoding.encode

    def encode(windows):
        sizes.append(len(windows))
        return real_encode(windows)

    monkeypatch.setattr(decoding, "encode", encode)
    pool = Pool(decoding, capacity=3 * ENCODE_ROWS + 1)
    crowd = [Sequence.start(saved.tokenizer, "WOODY:", 140, 0.8, 0, seed) for seed in range(pool.capacity)]
    for sequence in crowd:
        pool.join(sequence)
    while pool.busy:
        pool.tick()
    # The prompts, and the windows refilled together once full, went in calls of at most ENCODE_ROWS.
    assert max(sizes) == ENCODE_ROWS and sum(sizes) > pool.capacity
    assert ["".join(s.text) for s in crowd] == [generate(saved.model, saved.tokenizer, "WOODY:", 140, 0.8, 0, seed,
                                                         decoding) for seed in range(pool.capacity)]


def test_twenty_seeds_write_the_same_texts_alone_and_in_a_crowd(service):
    def request(seed, **change):
        return service.generate_request(**{**dict(milestones=ALL, prompt="WOODY:", length=70, temperature=0.8,
                                                   top_k=0, seed=seed), **change})

    step = service.models.saved[8].snapshot_steps[0]
    mine = [request(seed, step=step if seed % 5 == 4 else None) for seed in range(20)]  # snapshots: PyTorch
    alone = [service.run(r).texts for r in mine]
    # Among them, others with other prompts (other lengths to encode), settings, lengths and weights; in an
    # engine of 8 rows a model, so that most wait for a row and join others already half-way.
    others = [request(100 + i, prompt="BUZZ: " * (i % 4), temperature=(i % 3) * 0.6, top_k=i % 5, length=20 + 9 * i,
                      step=step if i % 3 == 0 else None) for i in range(12)]
    crowded = Service(service.models, Engine(service.models, capacity=8))
    try:
        crowd = [crowded.submit(r) for pair in zip(mine, others + others[:8]) for r in pair]
        texts = [GenerateAnswer.of(g.result(WAIT)).texts for g in crowd]
    finally:
        crowded.close()
    assert texts[::2] == alone
    assert len({t[-1].text for t in alone}) == 20  # the seeds differ: a trivial equality would not show anything


def test_a_requests_texts_grow_together(service):
    generation = service.submit(service.generate_request(milestones=ALL, length=400, seed=1))
    spreads = []
    while not generation.done.done():
        spreads.append(np.ptp([len(t) for t in generation.texts().values()]))
        time.sleep(0.001)
    # A turn runs each pool a few ticks in a row; and a tick may end between reading one text and the next.
    assert max(spreads) <= TICKS_PER_TURN + 1 and len(spreads) > 3


@pytest.mark.parametrize("failing", ["encode", "advance"])
def test_a_failing_model_fails_only_its_own_requests(service, monkeypatch, failing):
    broken = service.engine.pool(5).decoding

    def fail(*args):
        raise RuntimeError("a broken snapshot")

    monkeypatch.setattr(broken, failing, fail)
    hit = service.submit(service.generate_request(milestones=[2, 5, 8], length=30, seed=1))
    short = service.submit(service.generate_request(milestones=[5], length=1, seed=2))  # ends before a step
    spared = service.submit(service.generate_request(milestones=[2, 8], length=30, seed=1))
    with pytest.raises(GenerationError, match=r"Milestone 5 · \+ feed-forward failed while writing \(RuntimeError: "
                                              r"a broken snapshot\)\. Try again\."):
        hit.result(WAIT)
    concurrent.futures.wait([short.done], WAIT)
    assert short.done.done()  # written or failed with its companions, never left waiting
    assert [len(t) for t in spared.result(WAIT).values()] == [30, 30]
    monkeypatch.undo()
    again = service.generate_request(milestones=[5, 8], length=30, seed=1)
    assert [len(w.text) for w in service.run(again).texts] == [30, 30]  # the engine goes on serving everyone
    wait_idle(service)


def wait_idle(service, seconds: float = WAIT) -> None:
    deadline = time.monotonic() + seconds
    while service.engine.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.engine.active == 0


def test_two_hundred_requests_stopped_mid_stream_leave_nothing_behind(service):
    request = service.generate_request(milestones=ALL, length=2000, seed=3)
    started = [service.submit(request) for _ in range(200)]
    time.sleep(0.05)  # some are writing, most are still waiting for a row
    written = 0
    for generation in started:
        written += sum(map(len, generation.texts().values()))
        generation.cancel()
    for generation in started:
        texts = generation.result(WAIT)  # every one ends, stopped
        assert all(len(t) < 2000 for t in texts.values())
    wait_idle(service)
    assert written < 200 * 8 * 2000
    assert service.run(service.generate_request(milestones=[8], length=5, seed=0)).text(8)  # and it still serves


def test_closing_a_stream_early_frees_its_rows(service):
    async def read_three():
        stream = service.stream(service.generate_request(milestones=ALL, length=2000, seed=4), interval=0.001)
        updates = [texts async for texts, _ in zip_count(stream, 3)]
        await stream.aclose()  # what Gradio does on Stop or a closed tab
        return updates

    updates = asyncio.run(read_three())
    assert len(updates) == 3 and all([w.milestone for w in u.texts] == ALL for u in updates)
    wait_idle(service, seconds=2)  # at once, not after the 2,000 characters it was asked for


async def zip_count(stream, n):
    i = 0
    async for item in stream:
        yield item, i
        i += 1
        if i == n:
            return


def test_a_stream_ends_with_the_finished_texts(service):
    request = service.generate_request(milestones=[3, 8], length=300, seed=5)

    async def read_all():
        return [texts async for texts in service.stream(request, interval=0.001)]

    updates = asyncio.run(read_all())
    assert updates[-1] == service.run(request)
    assert len(updates) > 1 and len(updates[0].text(8)) < 300


def test_submitting_from_many_threads_at_once(service):
    request = service.generate_request(milestones=[1, 8], length=25, seed=9)
    want = service.run(request)
    results = [None] * 16

    def visitor(i):
        results[i] = service.run(request)

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert results == [want] * 16


def test_a_cancelled_sequence_waiting_for_a_row_leaves_at_the_next_tick(service):
    saved = service.models.saved[8]
    pool = Pool(service.models.decoding(8), capacity=1)  # full, as a snapshot's small pool can be
    writing, *waiting = [Sequence.start(saved.tokenizer, "WOODY:", 500, 0.8, 0, seed) for seed in range(4)]
    for sequence in (writing, *waiting):
        pool.join(sequence)
    pool.tick()
    waiting[1].cancelled = True  # what Generation.cancel sets
    assert pool.tick() == [waiting[1]]  # not when a row frees up for it, behind the others
    assert pool.joining == [waiting[0], waiting[2]] and pool.live == [writing]


def test_threads_get_shares_of_equal_measured_time_and_new_pools_are_dealt_out(service):
    engine = Engine(service.models, threads=2)
    engine.close()  # its scheduler stopped: the shares are worked out here, not ticked
    pools = {number: engine.pool(number) for number in (1, 2, 3, 4, 5)}
    for pool in pools.values():
        pool.joining.append(Sequence([0], 1, 0.8, 0, np.random.default_rng(0), "ab"))  # busy, never ticked
    shares = engine._shares()
    assert sorted(len(share) for share in shares) == [2, 3]  # none measured: each counts as much as the others
    engine._tick_seconds.update({pools[1]: 0.010, pools[2]: 0.006, pools[3]: 0.004, pools[4]: 0.003})
    shares = engine._shares()  # pool 5 not measured: counted as their mean, 5.75 ms
    loads = [sum(engine._tick_seconds.get(p, 0.00575) for p in share) for share in shares]
    assert len(shares) == 2 and max(loads) / min(loads) < 1.25, loads
