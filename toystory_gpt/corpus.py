"""The training texts: the Toy Story screenplay (the default) or any plain text; fetched (pinned URL + SHA-256),
checked, parsed where it is the screenplay, described, and split.

The screenplay is copyrighted, so the project never ships it: it is downloaded on demand into a
git-ignored cache under ``data/``, or read from a path the user gives (``--corpus`` or the
``TOYSTORY_CORPUS`` environment variable). A plain text (``--text PATH``) is used as it is, no parsing;
``--text tiny-shakespeare`` names a pinned download, cached the same way.

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

import codecs
import collections
import hashlib
import html
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .record import CorpusRecord, Example, Presentation

CORPUS_URL = (
    "https://raw.githubusercontent.com/kashishdatta/GPT_LLM_ToyStory/"
    "da24f3fe6e0e45ceb56b54a8909a48de10f8cdfc/TOY%20STORY.txt"
)
CORPUS_SHA256 = "286121180f3d5ca7602cb210097f5093311ff81551c1914fb34d0ae38a5cbad5"
CORPUS_FILENAME = "toy-story-1995-screenplay.txt"
SCREENPLAY_NAME = CORPUS_FILENAME.removesuffix(".txt")
CORPUS_ENV = "TOYSTORY_CORPUS"
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / "data" / "cache"

# Column ranges of the screenplay layout (see data/README.md): dialogue sits at 12,
# parentheticals at 19, speaker cues at 25 and transitions from 40 on.
_DIALOGUE_COLUMNS = range(8, 17)
_PARENTHETICAL_COLUMNS = range(17, 23)
_CUE_COLUMNS = range(23, 36)


# More distinct characters than this and a character-level model is the wrong tool (a text in Chinese, say, or
# a binary file that happens to decode): the bigram's table alone grows as the square (1,048,576 logits at 1,024).
MAX_VOCABULARY = 1024
TOP_CHARACTERS = 10  # how many of the most frequent characters milestone 1's exploration lists


class CorpusError(RuntimeError):
    """The corpus could not be obtained, verified or used; the message says what to do."""


@dataclass(frozen=True)
class NamedText:
    """A plain text known by name: a pinned download, and how the app presents a ladder trained on it."""
    name: str
    url: str
    sha256: str
    presentation: Presentation

    @property
    def filename(self) -> str:
        return f"{self.name}.txt"


SCREENPLAY = Presentation(
    "the <i>Toy Story</i> (1995) screenplay", "WOODY: ",
    (Example("WOODY:", "WOODY:"), Example("BUZZ: Buzz Lightyear to Star Command.", "BUZZ: Buzz Lightyear to…"),
     Example("INT. SID'S ROOM\n", "INT. SID'S ROOM ⏎"), Example("HAMM: ", "HAMM:"),
     Example("", "(empty: start of a line)")))
TINY_SHAKESPEARE = NamedText(
    "tiny-shakespeare",
    "https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/"
    "data/tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    Presentation("<i>Tiny Shakespeare</i> (40,000 lines of Shakespeare's plays)", "ROMEO:\n",
                 (Example("ROMEO:\n", "ROMEO: ⏎"), Example("JULIET:\nO Romeo, Romeo!", "JULIET: O Romeo…"),
                  Example("First Citizen:\n", "First Citizen: ⏎"), Example("KING RICHARD III:\n", "KING RICHARD III:"),
                  Example("", "(empty: start of a line)"))))
NAMED_TEXTS = {text.name: text for text in (TINY_SHAKESPEARE,)}


@dataclass(frozen=True)
class Corpus:
    """A text to train on, and its record (what results.json and every model card say about it)."""
    text: str
    record: CorpusRecord

    def split_ids(self, tokenizer):
        """The text's token ids, split into training and validation (see ``split``)."""
        return split(torch.tensor(tokenizer.encode(self.text).ids))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str, timeout: float = 30.0, what: str = "the screenplay",
             local_copy: str = f"--corpus PATH (or ${CORPUS_ENV})") -> Path:
    """Download ``url`` to ``dest`` with a progress bar and check its SHA-256; never leave a partial file.

    The bytes go to a temporary file beside ``dest``, moved into place only once the checksum matches, so an
    interrupted or corrupt download cannot poison the cache. ``timeout``: seconds a stalled server may stay
    silent (this connection's own, so nothing else in the process waits differently).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as out:
        partial = Path(out.name)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, \
                    tqdm(total=int(response.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                         desc=dest.name) as progress:
                while chunk := response.read(1 << 16):
                    digest.update(chunk)
                    out.write(chunk)
                    progress.update(len(chunk))
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            partial.unlink(missing_ok=True)
            raise CorpusError(
                f"could not download {what} from {url} ({exc}). "
                f"Offline? Pass a local copy with {local_copy}, or put one in {dest.parent}/{dest.name}; "
                f"see data/README.md for the source and checksum"
            ) from exc
    if digest.hexdigest() != sha256:
        partial.unlink()
        raise CorpusError(f"checksum mismatch for {url}: expected SHA-256 {sha256}, got {digest.hexdigest()}; "
                          f"nothing was saved. Pass a verified copy with {local_copy}")
    os.replace(partial, dest)
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
    return cached_download(cache_dir / CORPUS_FILENAME, url, sha256)


def cached_download(cached: Path, url: str, sha256: str, **messages) -> Path:
    """The cached file if its checksum is right, else a fresh download into its place."""
    if cached.is_file() and sha256_of(cached) == sha256:
        return cached
    return download(url, cached, sha256, **messages)


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


def load_screenplay(path: str | os.PathLike | None = None) -> Corpus:
    """The screenplay's clean text (see the module's docstring for where it comes from)."""
    found = locate(path)
    elements = load_elements(found)
    text = render(elements)
    speakers = collections.Counter(re.sub(r" \(.*\)$", "", e.speaker) for e in elements if e.speaker)
    # A speaker's lines count under the cue's base name (``SID (O.S.)`` is ``SID``).
    return Corpus(text, _record(SCREENPLAY_NAME, found, text, SCREENPLAY, lines=len(elements),
                                speeches=sum(speakers.values()), top_speakers=tuple(speakers.most_common(10))))


def load_text(spec: str, cache_dir: Path | None = None) -> Corpus:
    """A plain text used as it is: ``spec`` is a named text (``NAMED_TEXTS``; cached, else downloaded) or a path.
    A file whose checksum is a named text's is that text (so a local copy of Tiny Shakespeare is named so)."""
    if (named := NAMED_TEXTS.get(spec)) is not None:
        path = cached_download((cache_dir or DEFAULT_CACHE_DIR) / named.filename, named.url, named.sha256,
                               what=named.name, local_copy=f"--text PATH (a copy with SHA-256 {named.sha256} is "
                                                           f"recognised as {named.name})")
    else:
        path = Path(spec)
    text = read_text(path)
    digest = sha256_of(path)
    named = next((n for n in NAMED_TEXTS.values() if n.sha256 == digest), None)
    if named is not None:
        return Corpus(text, _record(named.name, path, text, named.presentation))
    return Corpus(text, _record(path.name, path, text, _plain_presentation(path.name, text)))


def read_text(path: Path) -> str:
    """A UTF-8 plain-text file as it is (a leading byte-order mark aside); CorpusError says why one cannot be used."""
    path = Path(path)
    usage = f"give the path of a UTF-8 plain-text file, or one of the named texts: {', '.join(NAMED_TEXTS)}"
    if not path.exists():
        raise CorpusError(f"text file not found: {path}: {usage}")
    if path.is_dir():
        raise CorpusError(f"{path} is a folder, not a text file: {usage}")
    raw = path.read_bytes()
    if not raw:
        raise CorpusError(f"{path} is empty: there is nothing to train on")
    # UTF-16 puts a NUL beside every ASCII character, so it would pass for binary: say what it is instead.
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _nul_every_other_byte(raw):
        raise CorpusError(f"{path} is UTF-16 text, not UTF-8: save it as UTF-8 "
                          f"(e.g. `iconv -f UTF-16 -t UTF-8 {path.name} > {path.stem}-utf8.txt`)")
    if (nul := raw.find(0)) >= 0:
        raise CorpusError(f"{path} holds NUL bytes (the first at byte {nul:,}): it is a binary file, not plain text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start:,} is not "
                          f"valid UTF-8. If it is text in another encoding, convert it first "
                          f"(e.g. `iconv -f LATIN1 -t UTF-8 {path.name} > {path.stem}-utf8.txt`)") from None
    text = text.removeprefix("\ufeff")
    if (distinct := len(set(text))) > MAX_VOCABULARY:
        raise CorpusError(f"{path} has {distinct:,} distinct characters; a character-level model here takes at most "
                          f"{MAX_VOCABULARY:,} (its bigram table grows as their square): is it really plain text in "
                          f"an alphabet?")
    return text


def _nul_every_other_byte(raw: bytes) -> bool:
    """UTF-16 without a byte-order mark: NULs in (mostly) one byte of each pair, none in the other."""
    even, odd = raw[0::2].count(0), raw[1::2].count(0)
    return max(even, odd) > len(raw) // 4 and min(even, odd) == 0


def minimum_characters(block_size: int, train_fraction: float = 0.9) -> int:
    """The shortest text whose splits (``split``) each hold one window of ``block_size`` characters and its target."""
    n = block_size + 1
    while min(len(part) for part in split(range(n), train_fraction)) < block_size + 1:
        n += 1
    return n


def check_trainable(corpus: Corpus, block_size: int) -> None:
    """CorpusError if the text is too short for a training and a validation window of the context length."""
    if len(corpus.text) < (needed := minimum_characters(block_size)):
        raise CorpusError(f"{corpus.record.file} has {len(corpus.text):,} characters; training needs at least "
                          f"{needed:,}: 90% for training and the last 10% for validation, each at least one window "
                          f"of the {block_size}-character context plus the character after it")


def _record(name: str, path: Path, text: str, presentation: Presentation, lines: int | None = None,
            speeches: int | None = None, top_speakers: tuple | None = None) -> CorpusRecord:
    counts = collections.Counter(text)
    return CorpusRecord(name=name, file=Path(path).name, sha256=sha256_of(path), bytes=Path(path).stat().st_size,
                        characters=len(text), vocabulary=len(counts),
                        lines=len(text.splitlines()) if lines is None else lines,
                        top_characters=tuple(counts.most_common(TOP_CHARACTERS)), speeches=speeches,
                        top_speakers=top_speakers, presentation=presentation)


def _plain_presentation(filename: str, text: str) -> Presentation:
    """For a text the project does not know: its first line to continue, its most frequent other line (a speaker's
    name, in a play) if it recurs, and an empty prompt."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0][:40] if lines else ""
    examples = [Example(first, first)] if first else []
    others = collections.Counter(line for line in lines if len(line) <= 40 and line != first)
    for common, count in others.most_common(1):
        if count >= 3:
            examples.append(Example(common + "\n", f"{common} ⏎"))
    examples.append(Example("", "(empty: start of a line)"))
    return Presentation(f"<code>{html.escape(filename)}</code> ({len(text):,} characters)", examples[0].prompt,
                        tuple(examples))


def load(text: str | None = None, screenplay: str | os.PathLike | None = None) -> Corpus:
    """What ``--text`` names (a named text or a path), else the screenplay (``--corpus``, its default)."""
    return load_text(text) if text is not None else load_screenplay(screenplay)
