"""The Toy Story screenplay: fetch it (pinned URL + SHA-256), parse its layout into clean text, split it.

The screenplay is copyrighted, so the project never ships it: it is downloaded on demand into a
git-ignored cache under ``data/``, or read from a path the user gives (``--corpus`` or the
``TOYSTORY_CORPUS`` environment variable).

Clean-text convention (one element per line, ``\\n`` line endings, runs of spaces collapsed):

* the title page (everything before the first column-0 line, ``FADE IN:``) is dropped;
* an action paragraph (column 0) is re-flowed into one line; scene headings such as
  ``INT. ANDY'S BEDROOM`` are one-line paragraphs and so stay on their own line;
* a speech becomes ``SPEAKER: dialogue`` on one line, the cue kept whole (``ANDY (AS WOODY)``,
  ``SID (O.S.)``) and parentheticals inline where they stand, e.g.
  ``ANDY: (pulling Woody's string) You saved the day again, Woody.``;
* a word hyphenated across a line break (``stick-`` / ``up!``) is re-joined as ``stick-up!``;
* transitions (``CUT TO:``) and a cue with no speech (``THE END``) stay on their own line.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import socket
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch.hub

CORPUS_URL = (
    "https://raw.githubusercontent.com/kashishdatta/GPT_LLM_ToyStory/"
    "da24f3fe6e0e45ceb56b54a8909a48de10f8cdfc/TOY%20STORY.txt"
)
CORPUS_SHA256 = "286121180f3d5ca7602cb210097f5093311ff81551c1914fb34d0ae38a5cbad5"
CORPUS_FILENAME = "toy-story-1995-screenplay.txt"
CORPUS_ENV = "TOYSTORY_CORPUS"
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / "data" / "cache"

# Column ranges of the screenplay layout (see data/README.md): dialogue sits at 12,
# parentheticals at 19, speaker cues at 25 and transitions from 40 on.
_DIALOGUE_COLUMNS = range(8, 17)
_PARENTHETICAL_COLUMNS = range(17, 23)
_CUE_COLUMNS = range(23, 36)


class CorpusError(RuntimeError):
    """The corpus could not be obtained or verified; the message says what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` with a progress bar and check its SHA-256; never leave a partial file.

    ``torch.hub.download_url_to_file`` writes to a temporary file beside ``dest`` and moves it into
    place only once the checksum matches, so an interrupted or corrupt download cannot poison the cache.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    # torch.hub takes no timeout: without this a stalled server would hang training forever.
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=sha256, progress=True)
    except RuntimeError as exc:  # what it raises for a wrong checksum
        raise CorpusError(f"checksum mismatch for {url}: expected SHA-256 {sha256} ({exc}); nothing was saved. "
                          f"Pass a verified copy with --corpus PATH (or ${CORPUS_ENV})") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise CorpusError(
            f"could not download the screenplay from {url} ({exc}). "
            f"Offline? Pass a local copy with --corpus PATH or set ${CORPUS_ENV}; "
            f"see data/README.md for the source and checksum"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return dest


def locate(path: str | os.PathLike | None = None, cache_dir: Path = DEFAULT_CACHE_DIR,
           url: str = CORPUS_URL, sha256: str = CORPUS_SHA256) -> Path:
    """Return the screenplay's path: the one given, else ``$TOYSTORY_CORPUS``, else the cache (downloaded if absent)."""
    chosen = path or os.environ.get(CORPUS_ENV)
    if chosen:
        chosen = Path(chosen)
        if chosen.is_dir():
            chosen = chosen / CORPUS_FILENAME
        if not chosen.is_file():
            raise CorpusError(f"corpus file not found: {chosen}")
        return chosen
    cached = cache_dir / CORPUS_FILENAME
    if cached.is_file() and sha256_of(cached) == sha256:
        return cached
    return download(url, cached, sha256)


def read_screenplay(path: str | os.PathLike) -> str:
    # newline="" keeps the file's CR line endings instead of translating them.
    with open(path, encoding="ascii", errors="strict", newline="") as f:
        return f.read()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _join(parts: list[str]) -> str:
    text = ""
    for part in parts:
        part = " ".join(part.split())
        if not text:
            text = part
        elif re.search(r"[A-Za-z]-$", text) and not text.endswith("--"):
            text += part  # a word hyphenated across the line break
        else:
            text += " " + part
    return text


@dataclass(frozen=True)
class Element:
    """One line of the clean text: a speech (``speaker`` set), an action paragraph, heading or transition."""
    text: str
    speaker: str | None = None

    def render(self) -> str:
        return f"{self.speaker}: {self.text}" if self.speaker else self.text


def parse_screenplay(raw: str) -> list[Element]:
    """Parse the raw screenplay (any line endings) into the elements of the convention above."""
    lines = raw.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip() and _indent(line) == 0), len(lines))
    out: list[Element] = []
    action: list[str] = []
    speaker: str | None = None
    speech: list[str] = []

    def flush() -> None:
        nonlocal speaker
        if action:
            out.append(Element(_join(action)))
            action.clear()
        if speaker is not None:
            out.append(Element(_join(speech), speaker) if speech else Element(speaker))
            speaker = None
            speech.clear()

    for line in lines[start:]:
        text = line.strip()
        if not text:
            flush()
            continue
        column = _indent(line)
        if column == 0:
            if speaker is not None:
                flush()
            action.append(text)
        elif speaker is not None and (column in _DIALOGUE_COLUMNS or column in _PARENTHETICAL_COLUMNS):
            speech.append(text)
        elif column in _CUE_COLUMNS and text.upper() == text:
            flush()
            speaker = " ".join(text.split())
        else:  # transitions, and stray lines outside a speech
            flush()
            out.append(Element(" ".join(text.split())))
    flush()
    return out


def render(elements: list[Element]) -> str:
    """The clean training text: one element per line."""
    return "".join(element.render() + "\n" for element in elements)


def clean_screenplay(raw: str) -> str:
    return render(parse_screenplay(raw))


def load_elements(path: str | os.PathLike | None = None) -> list[Element]:
    """Locate (or download) the screenplay and parse it."""
    return parse_screenplay(read_screenplay(locate(path)))


def split(data, train_fraction: float = 0.9):
    """First ``train_fraction`` for training, the rest for validation, by position (as in the lecture)."""
    n = int(len(data) * train_fraction)
    return data[:n], data[n:]


@dataclass(frozen=True)
class CorpusStats:
    characters: int
    vocabulary: int
    lines: int
    speeches: int
    top_speakers: list[tuple[str, int]]

    def to_text(self) -> str:
        speakers = ", ".join(f"{name} {count}" for name, count in self.top_speakers)
        return (f"characters: {self.characters:,}\nvocabulary: {self.vocabulary} distinct characters\n"
                f"lines: {self.lines:,} ({self.speeches:,} of them speeches)\n"
                f"top speakers by lines: {speakers}\n")


def stats(elements: list[Element], top: int = 10) -> CorpusStats:
    """Corpus statistics for milestone 1; a speaker's lines count under the cue's base name
    (``SID (O.S.)`` is ``SID``)."""
    text = render(elements)
    speakers = collections.Counter(re.sub(r" \(.*\)$", "", e.speaker) for e in elements if e.speaker)
    return CorpusStats(characters=len(text), vocabulary=len(set(text)), lines=len(elements),
                       speeches=sum(speakers.values()), top_speakers=speakers.most_common(top))
