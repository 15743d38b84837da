import pytest

from tests.conftest import SCREENPLAY_SAMPLE
from toystory_gpt import corpus
from toystory_gpt.tokenizer import CharTokenizer, distinct


def test_vocabulary_is_sorted_characters_of_the_corpus():
    text = corpus.load_screenplay(SCREENPLAY_SAMPLE).text
    tok = CharTokenizer.from_text(text)
    assert tok.vocab == "".join(sorted(set(text)))
    assert "\n" in tok.vocab and "W" in tok.vocab


def test_round_trip():
    tok = CharTokenizer.from_text("WOODY: Reach for the sky.\n")
    text = "Reach for the sky.\nWOODY: "
    encoded = tok.encode(text)
    assert encoded.dropped == ""
    assert tok.decode(encoded.ids) == text
    assert all(0 <= i < tok.vocab_size for i in encoded.ids)


def test_unknown_characters_are_dropped_and_reported():
    tok = CharTokenizer("abc ")
    encoded = tok.encode("a🚀b\u202ecé a🚀")
    assert tok.decode(encoded.ids) == "abc a"
    assert encoded.dropped == "🚀\u202eé🚀"
    assert distinct(encoded.dropped) == "🚀\u202eé"


@pytest.mark.parametrize("vocab", ["", "aab"])
def test_bad_vocabulary_is_rejected(vocab):
    with pytest.raises(ValueError, match="distinct"):
        CharTokenizer(vocab)
