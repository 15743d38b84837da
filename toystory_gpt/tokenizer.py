"""Character-level tokenizer: the vocabulary is the sorted set of characters of the clean corpus."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Encoded:
    """Token ids plus the characters that were dropped because the vocabulary lacks them."""
    ids: list[int]
    dropped: str


def distinct(characters: str) -> str:
    """Each character once, in order of first appearance: dropped characters, for telling the user."""
    return "".join(dict.fromkeys(characters))


class CharTokenizer:
    """Maps characters to ids and back; unknown characters are dropped and reported, never fatal."""

    def __init__(self, vocab: str):
        if not vocab or len(set(vocab)) != len(vocab):
            raise ValueError("vocabulary must be a non-empty string of distinct characters")
        self.vocab = vocab
        self._stoi = {ch: i for i, ch in enumerate(vocab)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> Encoded:
        ids, dropped = [], []
        for ch in text:
            i = self._stoi.get(ch)
            if i is None:
                dropped.append(ch)
            else:
                ids.append(i)
        return Encoded(ids, "".join(dropped))

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)
