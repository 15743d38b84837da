import hashlib
import http.server
import threading

import pytest

from tests.conftest import SCREENPLAY_SAMPLE
from toystory_gpt import corpus


@pytest.fixture(scope="module")
def elements():
    return corpus.parse_screenplay(corpus.read_screenplay(SCREENPLAY_SAMPLE))


@pytest.fixture(scope="module")
def text(elements):
    return corpus.render(elements)


def test_clean_text_has_no_layout_left(text):
    assert "\r" not in text
    assert "  " not in text
    assert all(line == line.strip() and line for line in text.splitlines())
    assert "A short screenplay" not in text  # the title page is dropped
    assert text.startswith("FADE IN:\nINT. SECONDHAND SHOP - NIGHT\n")
    assert text.endswith("FADE OUT.\nTHE END\n")


def test_speeches_become_speaker_colon_dialogue(text, elements):
    lines = text.splitlines()
    assert "PIP: (dazed) I was not asleep. I was resting my buttons." in lines
    assert "OLIVE (O.S.): Hello? Is somebody back there?" in lines  # the cue kept whole
    # a word hyphenated across a line break is re-joined; a hyphen inside a line stays
    assert "MARGO: (hissing) Everyone go limp! Nobody move! This is a hold-up, and we are the ones being held!" in lines
    assert "BRASS: (quietly) Twenty-two. But who is counting." in lines
    # every speech line starts with its speaker cue
    speeches = [e for e in elements if e.speaker]
    assert len(speeches) == 33
    assert all(e.render().startswith(e.speaker + ": ") for e in speeches)
    assert {"MARGO", "BRASS", "PIP", "OLIVE", "TOMAS", "BRASS (V.O.)"} <= {e.speaker for e in speeches}


def test_action_paragraphs_are_reflowed_and_headings_kept(text):
    lines = text.splitlines()
    assert "INT. SECONDHAND SHOP - BACK ROOM - CONTINUOUS" in lines
    assert "CUT TO:" in lines and "DISSOLVE TO:" in lines
    assert "The wind-up mouse, MARGO, opens one eye." in lines  # capitals in action are not a cue
    assert any(line.startswith("Rain ticks on the front window. Street light falls across a long wooden shelf "
                               "crowded with old toys: a tin robot") for line in lines)


@pytest.mark.parametrize("ending", ["\n", "\r", "\r\n"], ids=["lf", "cr", "crlf"])
def test_parsing_is_deterministic_and_ending_agnostic(text, ending):
    raw = corpus.read_screenplay(SCREENPLAY_SAMPLE)
    assert corpus.clean_screenplay(raw.replace("\n", ending)) == text


def test_screenplay_record(elements):
    record = corpus.load_screenplay(SCREENPLAY_SAMPLE).record
    assert record.characters == len(corpus.render(elements)) and record.lines == len(elements)
    # A speaker's lines count under the cue's base name: BRASS (V.O.) is BRASS.
    assert record.top_speakers == (("MARGO", 10), ("BRASS", 8), ("PIP", 6), ("OLIVE", 6), ("TOMAS", 3))
    assert record.speeches == sum(1 for e in elements if e.speaker)
    assert record.top_characters[0] == (" ", corpus.render(elements).count(" "))
    assert record.sha256 == corpus.sha256_of(SCREENPLAY_SAMPLE) and record.bytes == SCREENPLAY_SAMPLE.stat().st_size
    assert "top speakers by lines: MARGO 10, BRASS 8" in record.to_text()


def test_shared_copy_matches_the_pinned_checksum(corpus_path):
    assert corpus.sha256_of(corpus_path) == corpus.CORPUS_SHA256


def test_the_real_screenplay_parses_into_its_known_lines(corpus_path):
    """The layout rules above, on the file they were written for (its own lines, read here, never committed)."""
    elements = corpus.parse_screenplay(corpus.read_screenplay(corpus_path))
    text = corpus.render(elements)
    lines = text.splitlines()
    assert text.startswith("FADE IN:\nINT. ANDY'S BEDROOM\n") and text.endswith("FADE OUT.\nTHE END\n")
    assert "ANDY: (pulling Woody's string) You saved the day again, Woody." in lines
    assert "WOODY (VOICE BOX): Reach for the sky." in lines
    assert any(line.startswith("ANDY (AS POTATO HEAD): Alright everyone, this is a stick-up!") for line in lines)
    assert sum(1 for e in elements if e.speaker) > 800
    record = corpus.load_screenplay(corpus_path).record
    assert [name for name, _ in record.top_speakers[:2]] == ["WOODY", "BUZZ"]
    assert record.sha256 == corpus.CORPUS_SHA256 and record.bytes == corpus_path.stat().st_size


def test_split_is_90_10_by_position():
    data = list(range(100))
    train, val = corpus.split(data)
    assert train == list(range(90)) and val == list(range(90, 100))


def test_locate_prefers_argument_then_environment(tmp_path, monkeypatch):
    given = tmp_path / "shared" / corpus.CORPUS_FILENAME
    given.parent.mkdir()
    given.write_bytes(SCREENPLAY_SAMPLE.read_bytes())
    assert corpus.locate(given) == given
    assert corpus.locate(given.parent) == given  # a folder holding the file works too
    monkeypatch.setenv(corpus.CORPUS_ENV, str(given))
    assert corpus.locate(None, cache_dir=tmp_path) == given
    with pytest.raises(corpus.CorpusError, match="not found"):
        corpus.locate(tmp_path / "missing.txt")


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1: no real network in tests."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verifies_and_caches(http_server, tmp_path):
    root, url = http_server
    payload = b"WOODY\rReach for the sky.\r"
    (root / "s.txt").write_bytes(payload)
    cache = tmp_path / "cache"
    path = corpus.locate(None, cache_dir=cache, url=f"{url}/s.txt", sha256=hashlib.sha256(payload).hexdigest())
    assert path.read_bytes() == payload
    assert sorted(p.name for p in cache.iterdir()) == [corpus.CORPUS_FILENAME]


def test_checksum_mismatch_saves_nothing(http_server, tmp_path):
    root, url = http_server
    (root / "s.txt").write_bytes(b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(corpus.CorpusError, match="checksum mismatch.*--corpus"):
        corpus.locate(None, cache_dir=cache, url=f"{url}/s.txt", sha256="0" * 64)
    assert list(cache.iterdir()) == []


def test_offline_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(corpus.CORPUS_ENV, raising=False)
    cache = tmp_path / "cache"
    # port 9 on loopback: nothing listens, the connection is refused at once
    with pytest.raises(corpus.CorpusError, match="--corpus PATH"):
        corpus.locate(None, cache_dir=cache, url="http://127.0.0.1:9/s.txt")
    assert list(cache.iterdir()) == []
