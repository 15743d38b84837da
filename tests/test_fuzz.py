"""Hostile and odd input, fuzzed with hypothesis: every request returns exactly-capped texts or a clear message.

Three doors, each checked against the library as the oracle (same inputs, same texts or the same message):

- the library path, ``Service.generate_request`` then ``run`` and ``stream``, with anything Python can pass (huge
  integers, bytes, sets, NaN, lone surrogates...);
- the live ``/generate`` endpoint through ``gradio_client``, with anything it can send (JSON without NaN,
  infinities or lone surrogates: httpx refuses to encode those);
- the live app through the browser's own protocol (``/queue/join`` + ``/queue/data``), for what only a raw
  client sends: NaN, ±Infinity, lone surrogates, missing or extra values.

Generated cases per run: LIBRARY_EXAMPLES + CLIENT_EXAMPLES + RAW_EXAMPLES = 1,200. Valid requests stay short
(at most SHORT characters per milestone) so the file runs in about a minute; out-of-range values of every size
are generated too, and must be rejected. Every HTTP wait is bounded by REQUEST_TIMEOUT, so a hang fails the test.
Every message must be short and printable: it reaches the page through Gradio's event stream, which cannot
encode a lone surrogate (one echoed in a warning once broke the stream: see ``endpoints.shown_characters``).
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid

import httpx
import pytest
from gradio_client.exceptions import AppError
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from tests.conftest import FUZZ_SCALE
from toystory_gpt import api
from toystory_gpt.milestones import LADDER
from toystory_gpt.ui import endpoints

LIBRARY_EXAMPLES = 700
CLIENT_EXAMPLES = 250
RAW_EXAMPLES = 250
# the longest valid length generated at random (out-of-range lengths of any size are generated too)
SHORT = 24
REQUEST_TIMEOUT = 120    # seconds; generous: this bounds a hang, it does not measure speed
MAX_MESSAGE = 500        # characters in an error message: reprlib keeps echoed values short


def fuzz(examples: int) -> settings:
    return settings(max_examples=max(10, int(examples * FUZZ_SCALE)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])

# ---------------------------------------------------------------------------------------------- strategies

WEIRD = ["🤠", "👩‍🚀", "🇺🇸", "\u200f", "\u202e", "\u200b", "\u200d", "\ufeff", "\x00", "\x07", "\x1b[31m", "\r\n",
         "\t", "e\u0301", "שלום", "مرحبا", "𝔘𝔫𝔦", "<script>alert(1)</script>", "{{7*7}}", "%s%n", "../../etc/passwd",
         "'; DROP TABLE", "WOODY:", "BUZZ: ", "\n", " ", "\\u0000", "\uffff", "\U0010ffff"]
LONG_PROMPTS = st.tuples(st.sampled_from(["x", "🤠", "\u202e", "W", "\x00"]),
                         st.sampled_from([api.MAX_PROMPT, api.MAX_PROMPT + 1, 5_000,
                                          100_000])).map(lambda t: t[0] * t[1])
# Lone surrogates: valid in JSON ("\ud800") and in Python strings, not encodable as UTF-8.
SURROGATE_TEXT = st.lists(st.one_of(st.characters(categories=["Cs"]), st.sampled_from(WEIRD)), min_size=1,
                          max_size=8).map("".join)

HUGE = [2**31, 2**32, 2**53 + 1, 2**63, 2**64, 10**30, 10**300, -(2**63)]
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(HUGE + [-x for x in HUGE]),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6))
JSON_ANY = st.recursive(JSON_SCALAR, lambda inner: (st.lists(inner, max_size=3)
                                                    | st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                        max_leaves=6)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1e308, -1e308])
# What only a Python caller can pass: integers Python will not print, bytes, sets, tuples, ranges, objects.
PYTHON_ONLY = st.one_of(st.sampled_from([10**5000, -(10**5000), b"5", bytearray(b"x"), object(), range(3), {5},
                                         frozenset({2}), (2, 5), 3 + 0j, Ellipsis, NotImplemented]),
                        NON_FINITE, SURROGATE_TEXT)


def not_long(value) -> bool:
    """False for a valid but long length: those are slow and prove nothing new (test_api covers them)."""
    return not (isinstance(value, (int, float)) and not isinstance(value, bool) and SHORT < value <= api.MAX_LENGTH)


def numbers(small: st.SearchStrategy, extra: list) -> st.SearchStrategy:
    """Mostly in-range values, plus every sign and size of integer and float, numeric strings and wrong types."""
    return st.one_of(small, small, st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                     st.sampled_from(HUGE + [-x for x in HUGE] + extra),
                     st.sampled_from(["5", "10", " 7 ", "0x10", "1e3", "", "٣"]),
                     JSON_ANY)


def whole(low: int, high: int) -> st.SearchStrategy:
    """A valid whole number as a caller may send it: an int, or a float such as 300.0 (what sliders send)."""
    return st.one_of(st.integers(low, high), st.integers(low, high).map(float))


ONE_MILESTONE = st.one_of(whole(1, len(LADDER.milestones)), st.integers(1, len(LADDER.milestones)).map(str),
                          st.sampled_from(["٥", "５", " 5 ", "05"]))  # Gradio's API page shows the choices as strings
# Each input is valid most of the time (so that a sixth to a third of all requests are served and their caps checked;
# `pytest --hypothesis-show-statistics` shows the mix),
# and otherwise anything at all: out of range at every size, of the wrong type, empty, duplicated, unknown.
VALID = dict(
    milestones=st.lists(ONE_MILESTONE, min_size=1, max_size=12),  # duplicates and any order included
    prompt=st.one_of(st.text(max_size=40), st.lists(st.sampled_from(WEIRD), max_size=12).map("".join), st.none()),
    length=whole(1, SHORT),
    temperature=st.one_of(st.floats(0, api.MAX_TEMPERATURE), st.sampled_from([0, 0.0, 1, 2, 0.001, 1e-40, 5e-324])),
    top_k=whole(0, api.MAX_TOP_K),
    seed=whole(0, api.MAX_SEED),
)
MILESTONE_ITEM = st.one_of(ONE_MILESTONE,
                           st.sampled_from([0, 9, -1, 2**64, 1.5, "+5", "5.0", "9" * 30, "", "all", "1,2"]),
                           JSON_SCALAR)
ODD = dict(
    milestones=st.one_of(st.lists(MILESTONE_ITEM, max_size=6),  # unknown and wrong-typed numbers among good ones
                         st.sampled_from([[], list(range(1, 9)) * 3, "2,5,8", "5", 5, None, {"5": 5}]), JSON_ANY),
    prompt=st.one_of(LONG_PROMPTS, JSON_ANY),
    length=numbers(st.integers(-2, SHORT), [0, api.MAX_LENGTH + 1]).filter(not_long),
    temperature=st.one_of(st.floats(), st.sampled_from([2.0000001, -0.1, -0.0, 1e-320, 1e-40, 1e-12, 0.000999, 1e308]),
                          JSON_SCALAR, JSON_ANY),
    top_k=numbers(st.integers(-2, api.MAX_TOP_K + 5), [api.MAX_TOP_K + 1]),
    seed=numbers(st.integers(-2, 2), [api.MAX_SEED + 1, 1.5, 1e20, "7"]),
)


def mostly(valid: st.SearchStrategy, odd: st.SearchStrategy, weight: int) -> st.SearchStrategy:
    """``valid`` about ``weight`` times as often as ``odd`` (one_of would merge repeats of one strategy)."""
    return st.sampled_from(range(weight + 1)).flatmap(lambda i: odd if i == 0 else valid)


# gradio_client can send any JSON but NaN, infinities and lone surrogates (httpx refuses to encode them).
JSON_INPUTS = {name: mostly(VALID[name], ODD[name].filter(lambda v: not isinstance(v, float) or math.isfinite(v)), 5)
               for name in VALID}
# A Python caller can pass anything at all.
PYTHON_INPUTS = {name: mostly(JSON_INPUTS[name], PYTHON_ONLY, 8) for name in VALID}
PYTHON_INPUTS["milestones"] = mostly(JSON_INPUTS["milestones"],
                                     st.one_of(PYTHON_ONLY, st.lists(PYTHON_ONLY, max_size=3)), 8)
# The browser protocol carries raw JSON text: NaN, ±Infinity and lone surrogates too, anywhere.
RAW_INPUTS = {name: mostly(JSON_INPUTS[name], st.one_of(NON_FINITE, SURROGATE_TEXT), 8) for name in VALID}
RAW_INPUTS["prompt"] = mostly(JSON_INPUTS["prompt"], SURROGATE_TEXT, 2)

# ------------------------------------------------------------------------------------------------- oracle


def check_message(message: str) -> None:
    """Meant for people: non-empty, short, and printable (no control characters or surrogates from the input)."""
    assert message and len(message) <= MAX_MESSAGE and message.isprintable(), message


def tally(outcome: str) -> None:
    """Count outcomes: ``pytest --hypothesis-show-statistics`` shows the mix of served and refused requests."""
    if currently_in_test_context():
        event(outcome)


def expected(served: api.Service, inputs: dict, stream: bool = False) -> dict | str:
    """What every door must answer: the texts (as the API sends them), or the message, exactly as the library gives
    them.
    With ``stream``, the library's stream is read too, and must stay within the caps and end on those texts."""
    try:
        request = served.generate_request(**inputs)
    except api.InvalidRequest as exc:
        check_message(str(exc))
        tally(f"refused: {str(exc).split(' must ')[0].split(' is ')[0][:30]}")
        return str(exc)
    tally("served")
    answer = served.run(request)
    assert [(w.milestone, len(w.text)) for w in answer.texts] == [(n, request.length) for n in request.milestones]
    for written in answer.texts:
        assert set(written.text) <= set(served.models.saved[written.milestone].tokenizer.vocab)
    if stream:
        # Each update but the last shows at least one new character: at most one per milestone per character.
        bound = request.length * len(request.milestones) + 1
        updates = asyncio.run(read_stream(served, request))
        assert 1 <= len(updates) <= bound
        assert all(len(w.text) <= request.length for shown in updates for w in shown.texts)  # never past the cap
        assert updates[-1] == answer
    return answer.model_dump()


async def read_stream(served: api.Service, request: api.GenerateRequest) -> list[api.GenerateAnswer]:
    return [answer async for answer in served.stream(request, interval=0.001)]


# ------------------------------------------------------------------------------------------- the library


@fuzz(LIBRARY_EXAMPLES)
@given(**PYTHON_INPUTS)
@example(milestones=[1], prompt="", length=api.MAX_LENGTH, temperature=1.0, top_k=0, seed=api.MAX_SEED)
@example(milestones=list(range(1, 9)), prompt="🤠" * api.MAX_PROMPT, length=1, temperature=2,
         top_k=api.MAX_TOP_K, seed=0)
@example(milestones=["9" * 5000], prompt="W", length=1, temperature=0.8, top_k=0, seed=0)
@example(milestones=[8], prompt="W", length=1, temperature=1e-40, top_k=0, seed=0)
@example(milestones=[8], prompt="x" * 100_000, length=10**5000, temperature=math.nan, top_k=-math.inf, seed="seed")
def test_library_returns_capped_texts_or_a_clear_message(served, milestones, prompt, length, temperature, top_k,
                                                         seed):
    # `expected` asserts the caps, and that only InvalidRequest (with a clear message) ever escapes.
    expected(served, dict(milestones=milestones, prompt=prompt, length=length, temperature=temperature, top_k=top_k,
                          seed=seed), stream=True)


# --------------------------------------------------------------------------------- /generate via gradio_client


@pytest.mark.slow
@fuzz(CLIENT_EXAMPLES)
@given(**JSON_INPUTS)
@example(milestones=[], prompt="WOODY:", length=5, temperature=0.8, top_k=0, seed=0)
@example(milestones=[9, "x", None], prompt="WOODY:", length=5, temperature=0.8, top_k=0, seed=0)
@example(milestones=[1, 1, 1], prompt="🤠\u202e\x00" * 30_000, length=5, temperature=0.8, top_k=0, seed=0)
@example(milestones=[8], prompt="W", length=-(10**300), temperature=1e308, top_k=10**30, seed=2**64)
@example(milestones=[8], prompt="W", length=5, temperature=1e-40, top_k=0, seed=0)
def test_generate_api_returns_the_texts_or_the_clear_message(client, served, milestones, prompt, length,
                                                             temperature, top_k, seed):
    inputs = dict(milestones=milestones, prompt=prompt, length=length, temperature=temperature, top_k=top_k, seed=seed)
    want = expected(served, inputs)
    job = client.submit(**inputs, api_name="/generate")
    try:
        texts = job.result(timeout=REQUEST_TIMEOUT)
    except AppError as exc:
        assert isinstance(want, str), f"the app refused what the library serves: {exc}"
        assert want in str(exc)
        return
    assert not isinstance(want, str), f"the app served what the library refuses: {want}"
    assert texts == want


# --------------------------------------------------------------------------- the browser's protocol, raw


class RawApp:
    """The app spoken to as its web page does: POST /queue/join, then read the event stream of /queue/data."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(timeout=REQUEST_TIMEOUT)
        config = self.http.get(f"{url}/config").json()
        self.api = f"{url}{config.get('api_prefix', '/gradio_api')}"
        self.fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "generate")

    def send(self, data) -> dict:
        """The final ``process_completed`` message (or the HTTP error), for ``data`` sent as raw JSON text."""
        session = uuid.uuid4().hex
        # allow_nan writes NaN/Infinity (Python's json, and so the server, reads them); ensure_ascii writes
        # a lone surrogate as the JSON escape "\ud800", which is valid JSON.
        body = json.dumps({"data": data, "fn_index": self.fn_index, "session_hash": session}, allow_nan=True,
                          ensure_ascii=True)
        joined = self.http.post(f"{self.api}/queue/join", content=body, headers={"content-type": "application/json"})
        if joined.status_code != 200:
            return {"http_status": joined.status_code, "detail": joined.json().get("detail")}
        with self.http.stream("GET", f"{self.api}/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        return message
        raise AssertionError("the event stream closed without process_completed")

    def close(self):
        self.http.close()


@pytest.fixture(scope="module")
def raw(app_url):
    raw = RawApp(app_url)
    yield raw
    raw.close()


@pytest.mark.slow
@fuzz(RAW_EXAMPLES)
@given(**RAW_INPUTS)
# once broke the stream
@example(milestones=[8], prompt="W\ud800\udfff\x00\u202e", length=5, temperature=0.8, top_k=0, seed=0)
@example(milestones=[8], prompt="W", length=5, temperature=math.nan, top_k=0, seed=0)
@example(milestones=[math.inf], prompt="W", length=math.inf, temperature=-math.inf, top_k=math.nan, seed=math.inf)
@example(milestones=["\ud800"], prompt="W", length=5, temperature=0.8, top_k=0, seed="\udfff")
def test_browser_protocol_returns_the_texts_or_the_clear_message(raw, served, milestones, prompt, length,
                                                                 temperature, top_k, seed):
    inputs = dict(milestones=milestones, prompt=prompt, length=length, temperature=temperature, top_k=top_k, seed=seed)
    # What the server reads: JSON joins an escaped surrogate pair ("\ud800\udc00") into one character.
    inputs = json.loads(json.dumps(inputs, allow_nan=True))
    want = expected(served, inputs)
    done = raw.send([*inputs.values(), api.FINAL, ""])  # a raw client sends every input: the weights, no ladder
    assert "http_status" not in done, done
    if isinstance(want, str):
        assert done["success"] is False and done["output"]["error"] == want, done
    else:
        assert done["success"] is True and done["output"]["data"] == [want], done


NAMES = ["milestones", "prompt", "length", "temperature", "top_k", "seed", "step", "ladder"]


@pytest.mark.slow
@pytest.mark.parametrize("count", [9, 10, 20])
def test_browser_protocol_ignores_extra_values(raw, served, count):
    inputs = [[2, 8], "WOODY:", 7, 0.8, 0, 3, api.FINAL, ""]
    done = raw.send(inputs + ["extra"] * (count - len(inputs)))
    assert done["success"] is True and done["output"]["data"] == [expected(served, dict(zip(NAMES, inputs)))]


@pytest.mark.slow
@pytest.mark.parametrize("data", [[], [[8]], [[8], "W", 5, 0.8, 0]])
def test_browser_protocol_too_few_values_is_refused_not_fatal(raw, data):
    # Gradio itself checks the count before our function runs, and says only "error" (no message) to the caller:
    # the page and gradio_client always send all six, so only a hand-written client can get here.
    done = raw.send(data)
    assert done["success"] is False


@pytest.mark.slow
def test_json_the_server_cannot_read_is_refused_not_fatal(raw):
    # A 5,000-digit integer: Python's JSON reader refuses it (int_max_str_digits), so FastAPI rejects the body.
    body = '{"data": [[8], "W", 5, 0.8, 0, ' + "9" * 5000 + f'], "fn_index": {raw.fn_index:d}, "session_hash": "x"}}'
    response = raw.http.post(f"{raw.api}/queue/join", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500


# ------------------------------------------------------------------------------- what fuzzing found


@pytest.mark.parametrize("change, message", [
    # int("9" * 5000) and repr(10**5000) raise ValueError (Python's 4,300-digit limit), not InvalidRequest.
    (dict(milestones=["9" * 5000]), "each milestone must be a whole number from 1 to 8, "
                                    "got '999999999999...9999999999999'"),
    (dict(temperature=10**5000), "temperature must be a number from 0 to 2 (0 = always the likeliest character), "
                                 "got a number of about 5,000 digits"),
    (dict(seed=[-(10**5000)]), "seed must be a whole number from 0 to 4,294,967,295, "
                               "got [a negative number of about 5,000 digits]"),
])
def test_what_fuzzing_found_is_refused_clearly(change, message):
    with pytest.raises(api.InvalidRequest) as error:
        api.GenerateRequest.parse(**{**dict(milestones=[8], prompt="W", length=5, temperature=0.8, top_k=0, seed=0),
                                     **change})
    assert str(error.value) == message


@pytest.mark.parametrize("temperature", [1e-40, 5e-324])
def test_tiny_temperatures_sample_greedily(served, temperature):
    """Dividing float32 logits by a temperature this small once gave inf, then NaN: torch.multinomial raised."""
    settings = dict(milestones=[8], prompt="W", length=20, top_k=0, seed=0)
    tiny = served.run(served.generate_request(**settings, temperature=temperature))
    assert tiny == served.run(served.generate_request(**settings, temperature=0))


def test_left_out_characters_are_shown_so_the_event_stream_can_carry_them():
    assert endpoints.shown_characters("é\ud800\x00\u202e🤠") == "é U+D800 U+0000 U+202E 🤠"
    endpoints.shown_characters("é\ud800").encode("utf-8")  # no lone surrogate left: orjson can encode it


# ----------------------------------------------------------------------------------------------- aftermath


@pytest.mark.slow
def test_the_server_still_serves_after_the_fuzzing(client, raw, served):
    inputs = dict(milestones=list(range(1, 9)), prompt="WOODY:", length=50, temperature=0.8, top_k=0, seed=11)
    answer = served.run(served.generate_request(**inputs)).model_dump()
    assert client.predict(**inputs, api_name="/generate") == answer
    assert raw.send([*inputs.values(), api.FINAL, ""])["output"]["data"] == [answer]
