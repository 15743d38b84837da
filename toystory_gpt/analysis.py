"""Inside the models: where each milestone is surprised, what it expects next, where it looks, and what each block adds.

The app's Inside tab, its ``/surprise``, ``/next_chars``, ``/attention`` and ``/logit_lens`` APIs and
``python -m toystory_gpt inspect`` all go through here, so they show the same numbers.

Conventions, the same for every view:

- **The start.** Every text is read from the beginning of a line: the models see ``"\\n" + text``, as the
  sampler starts an empty prompt, so the first character is predicted too (from the newline alone).
  Characters that some chosen milestone's vocabulary lacks are dropped for all of them (so the rows
  align) and reported.
- **Slots.** Slot ``i`` is the prediction of ``text[i]`` from what comes before it; slot ``len(text)`` is
  what comes after the whole text. ``surprise`` scores slots 0 to len-1 in bits: −log2 p(text[i] | "\\n" + text[:i]).
- **Longer than the context.** A model with attention sees at most ``block_size`` characters (learned
  absolute positions), so a long text is scored in windows of ``block_size`` that start every ``stride``
  characters (default ``block_size // 2``): the first window scores all its slots, each later one only its
  last ``stride``, so every character is scored once, with at least ``block_size - stride`` characters of
  context after the first window. All windows of one milestone go through one batched forward pass.
  With ``stride = block_size`` the windows are ``trainer.evaluate``'s non-overlapping ones.
- **One slot's context** (``next_chars``, ``attention``) is exactly the window ``surprise`` scored that slot
  in, so the bars' probability of the true character is 2 to the minus its surprise; after the whole text,
  the last ``block_size`` characters.
- **The logit lens** (``lens``) reads the residual stream after each block (after block 0: the embeddings
  alone) through the model's own final norm and head, at every slot in the same window as ``surprise``; after
  the last block that is the model's own prediction.
- **Gains** (``gain``): per character, the bits a model saves against the one it adds an idea to
  (``milestones.Ladder.below``): the difference of their two surprise rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch.nn import functional as F

from .milestones import Ladder, Milestone
from .recorder import Recorder
from .sampler import START, distribution
from .tokenizer import distinct
from .weights import SavedModel

GUESSES = 3             # top guesses kept per character, for the tooltips
LENS_BLOCKS = 2         # with fewer blocks, nothing lies between the embeddings and the output for the lens to read


class Unanswerable(ValueError):
    """A reading these models cannot give (the text has none of their characters, a slot past its end, a lens
    without blocks...); the message is meant for the person who asked."""


def _within(value: int, name: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise Unanswerable(f"{name} must be from {low:,} to {high:,}, got {value!r}")
    return value


@dataclass(frozen=True)
class Request:
    """A validated text and the milestones to read it, in ladder order."""
    text: str                    # what the models read, unknown characters dropped
    dropped: str                 # the distinct characters dropped, in order of first appearance
    milestones: tuple[int | str, ...]  # Milestone.key: the Inside tab may add the ablation
    temperature: float = 0.0     # the sampling knobs, for next_chars
    top_k: int = 0

    def truth(self, slot: int) -> str | None:
        """The character the models should guess at ``slot``; None after the end of the text."""
        return self.text[slot] if slot < len(self.text) else None


@dataclass
class Surprise:
    """One milestone's surprise at every character of a text, and its top guesses there."""
    milestone: int | str         # Milestone.key
    bits: np.ndarray             # (N,) float64: −log2 p(text[i] | before)
    guesses: np.ndarray          # (N, GUESSES) token ids, likeliest first
    guess_probabilities: np.ndarray  # (N, GUESSES)

    @property
    def bits_per_char(self) -> float:
        return float(self.bits.mean())

    def row(self) -> SurpriseRow:
        return SurpriseRow(milestone=self.milestone, bits_per_char=self.bits_per_char, bits=self.bits.tolist())


@dataclass
class Gain:
    """Per character, the bits one model saved against the model below it (negative: bits it lost)."""
    milestone: int | str         # Milestone.key of the model with the idea
    against: int | str           # ... and of the one without it
    bits: np.ndarray             # (N,) float64: the lower model's surprise minus the upper one's

    @property
    def per_char(self) -> float:
        """The difference of the two rows' bits per character."""
        return float(self.bits.mean())


@dataclass
class Lens:
    """A deep model's residual stream after each block, read through its own final norm and head, at every slot."""
    milestone: int | str         # Milestone.key
    logits: np.ndarray           # (L + 1, N, V) float32: row 0 after the embeddings, row L the model's own logits
    bits: np.ndarray             # (L + 1, N) float64: −log2 p(text[i]) read after each block
    ranks: np.ndarray            # (L + 1, N): 1 + how many characters were likelier than the true one
    change: np.ndarray           # (L,) float64: block i + 1's ‖output − input‖ / ‖input‖, averaged over the slots

    def first_ranked_first(self) -> np.ndarray:
        """(N,) per slot the first block after which the true character ranks first, L + 1 where it never does."""
        first = self.ranks == 1
        return np.where(first.any(0), first.argmax(0), len(self.ranks))


@dataclass
class Look:
    """One milestone at one slot: the context it read, its next-character logits, and its insides there."""
    milestone: int | str         # Milestone.key
    start: int                   # the context is ("\n" + text)[start : slot + 1]
    logits: np.ndarray           # (V,) float32
    attention: np.ndarray | None  # (layers, heads, T, T), T the context's length; None without attention or unasked
    lens: np.ndarray | None = None  # (L + 1, V): the stream after each block read as logits; None unless deep, asked


# ------------------------------------------------------------------------------------------------ the answers
# What the endpoints send (and the CLI prints, and the Inside tab draws): plain numbers and lists, typed.

class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class Scored(Answer):
    """A text as the models read it: unknown characters dropped (``dropped``: each once, in order)."""
    text: str
    dropped: str


class SurpriseRow(Answer):
    milestone: int | str         # Milestone.key
    bits_per_char: float
    bits: list[float]            # −log2 p(text[i] | "\n" + text[:i]), per character


class SurpriseAnswer(Scored):
    """/surprise: each chosen milestone's bits at every character of the text."""
    milestones: list[SurpriseRow]


class CharChance(Answer):
    """A next character: the model's own probability of it, and as the sampler would draw it with the knobs."""
    char: str
    probability: float
    sampled_probability: float


class TrueNext(CharChance):
    rank: int                    # 1 + how many characters the model found likelier


class NextChars(Answer):
    """One milestone's likeliest next characters at a slot; the true next one, if the slot has one."""
    milestone: int | str         # Milestone.key
    chars: list[CharChance]      # likeliest first
    true_next: TrueNext | None = None


class NextCharsAnswer(Scored):
    """/next_chars: every chosen milestone's likeliest next characters at ``position``."""
    position: int
    temperature: float
    top_k: int
    milestones: list[NextChars]


class AttentionAnswer(Scored):
    """/attention: one milestone's attention over the context of ``position``, read as ``characters``."""
    milestone: int
    position: int
    start: int                   # the context is ("\n" + text)[start : position + 1]
    characters: list[str]
    weights: list[list[list[list[float]]]]  # (layers, heads, T, T)


class LensBlock(Answer):
    """The stream read after one block (0: the embeddings), at every character."""
    after: int
    bits: list[float]
    bits_per_char: float
    ranks: list[int]             # the true character's rank there
    change: float | None         # the block's mean ‖output − input‖ / ‖input‖; None for the embeddings


class LensAnswer(Scored):
    """/logit_lens: a deep model's bits after each block, and where the true character first ranks first."""
    milestone: int | str
    characters: list[str]
    blocks: list[LensBlock]
    first_ranked_first: list[int]  # per character, the first block after which it ranks first; len(blocks): never


@dataclass(frozen=True)
class Reading:
    """What the Inside tab's rows are drawn from: the request, the surprise of every chosen model and of the model
    below each (``below``: chosen key → the key of the one below, where that was scored too), and the lens of every
    chosen deep model, if asked."""
    request: Request
    surprises: Mapping[int | str, Surprise]
    below: Mapping[int | str, int | str]
    lenses: Mapping[int | str, Lens]


def read_inside(models: Mapping, req: Request, below: Mapping[int | str, int | str], lens_too: bool) -> Reading:
    """Score ``req``'s text with every chosen model and the ones ``below`` them (one forward pass each, in the
    order of ``models``), and read the lens of every chosen deep one if ``lens_too``."""
    wanted = set(req.milestones) | set(below.values())
    surprises = {key: surprise_of(models[key], req.text) for key in models if key in wanted}
    lenses = {key: lens(models[key], req.text) for key in req.milestones if lens_too and deep(models[key])}
    return Reading(req, surprises, dict(below), lenses)


def reading(models: Mapping, text: str, keys: Sequence, temperature: float = 0.0, top_k: int = 0,
            beside: Sequence = ()) -> Request:
    """What the models ``keys`` (loaded, in ``models``) read of ``text``: the characters every one, and every
    model ``beside`` them, knows."""
    kept, dropped = readable([models[key] for key in (*keys, *beside)], text)
    return Request(kept, dropped, tuple(keys), temperature, top_k)


def readable(models: Sequence[SavedModel], text: str) -> tuple[str, str]:
    """``text`` without the characters some model's vocabulary lacks, and those characters in order of first
    appearance; Unanswerable if nothing is left."""
    unknown = set().union(*(saved.tokenizer.encode(text).dropped for saved in models))
    kept = "".join(c for c in text if c not in unknown)
    if not kept:
        raise Unanswerable("Type some text to look inside the models with." if not text else
                           "None of the text's characters are in the models' vocabulary.")
    return kept, distinct("".join(c for c in text if c in unknown))


def slot_of(req: Request, value) -> int:
    """A slot from 0 to len(text); None means after the whole text."""
    return len(req.text) if value is None else _within(value, "position", 0, len(req.text))


def _stride(saved: SavedModel, stride) -> int:
    block = saved.model.config.block_size
    return max(1, block // 2) if stride is None else _within(stride, "stride", 1, block)


def _window_starts(slots: torch.Tensor, block: int, stride: int) -> torch.Tensor:
    """Where the window that scores each slot starts: 0 within the first window, else the first multiple of
    ``stride`` that leaves the slot inside a window of ``block``."""
    return torch.where(slots < block, 0, ((slots - block) // stride + 1) * stride)


def _ids(saved: SavedModel, text: str) -> torch.Tensor:
    return torch.tensor(saved.tokenizer.encode(START + text).ids)


def _windows(saved: SavedModel, text: str, stride: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor],
                                                                  torch.Tensor]:
    """What a text is scored in: the windows (W, T), where each slot is read in them (its window and its position
    there, (N,) each) and each slot's true next token (N,)."""
    ids = _ids(saved, text)
    inputs, targets = ids[:-1], ids[1:]  # (N,) each: slot i reads inputs[..i] and predicts targets[i]
    n, config = len(targets), saved.model.config
    slots = torch.arange(n)
    if not config.has_attention or n <= config.block_size:  # one window holds it all
        return inputs[None], (torch.zeros_like(slots), slots), targets
    starts = _window_starts(slots, config.block_size, stride)
    firsts = torch.arange(0, int(starts[-1]) + 1, stride)  # (W,) every window's start
    padded = F.pad(inputs, (0, config.block_size))  # the last window may run past the end: causal, so harmless
    windows = padded[firsts[:, None] + torch.arange(config.block_size)]  # (W, block)
    return windows, (starts // stride, slots - starts), targets


def _bits(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities (..., N, V) and the bits of surprise at each true token (..., N), in float64."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return log_p, -log_p.gather(-1, targets.expand(log_p.shape[:-1])[..., None])[..., 0].double() / math.log(2)


@torch.inference_mode()
def surprise_of(saved: SavedModel, text: str, stride=None) -> Surprise:
    """One model's surprise at each character of ``text`` (one batched forward pass)."""
    windows, at, targets = _windows(saved, text, _stride(saved, stride))
    log_p, bits = _bits(saved.model(windows)[0][at], targets)  # (N, V): each slot from its window
    top = log_p.topk(min(GUESSES, saved.model.config.vocab_size), dim=-1)
    return Surprise(saved.milestone.key, bits.numpy(), top.indices.numpy(), top.values.exp().double().numpy())


def score(models: Mapping, req: Request, stride=None) -> list[Surprise]:
    """Every chosen milestone's surprise at each character (one batched forward pass per milestone)."""
    return [surprise_of(models[n], req.text, stride) for n in req.milestones]


def gain(upper: Surprise, lower: Surprise) -> Gain:
    """What ``upper`` saved against ``lower`` at each character of the same text."""
    return Gain(upper.milestone, lower.milestone, lower.bits - upper.bits)


def _stream_names(saved: SavedModel) -> list[str]:
    # ``drop`` is the last step of GPT.embed: its output is the stream that enters block 0.
    return ["drop", *(f"blocks.{i}" for i in range(saved.model.config.n_layer))]


def deep(saved: SavedModel) -> bool:
    """Whether the lens has blocks to read between (at least LENS_BLOCKS: ``deep_ones`` names them)."""
    return saved.model.config.n_layer >= LENS_BLOCKS


def deep_ones(ladder: Ladder, conjunction: str = "or") -> str:
    """The ladder's models deep enough for the lens, in words: "6, 7, 8 or the ablation"."""
    named = [str(m.number) if not m.is_ablation else "the ablation" for m in ladder.models
             if m.config.get("n_layer", 0) >= LENS_BLOCKS]
    return f"{', '.join(named[:-1])} {conjunction} {named[-1]}" if len(named) > 1 else "".join(named)


def attending(ladder: Ladder) -> str:
    """The milestones with attention, in words: "3 and up"."""
    numbers = [m.number for m in ladder if m.config.get("n_layer", 0) >= 1]
    if numbers == list(range(numbers[0], len(ladder) + 1)):
        return f"{numbers[0]} and up"
    return ", ".join(map(str, numbers))


def no_lens(saved: SavedModel, ladder: Ladder) -> str:
    """Why a model has no logit lens, in a sentence (naming ``ladder``'s models that have one)."""
    blocks = saved.model.config.n_layer
    return (f"Milestone {saved.milestone.label} has {f'only {blocks} block' if blocks else 'no blocks'}: the logit "
            f"lens reads the stream between blocks, so it needs at least {LENS_BLOCKS} (milestones "
            f"{deep_ones(ladder, 'and')}).")


@torch.inference_mode()
def lens(saved: SavedModel, text: str, stride=None) -> Lens:
    """The logit lens of a deep model over ``text``: every slot read after every block, in ``surprise``'s windows
    (one batched forward pass, the block outputs recorded by forward hooks). Only for a ``deep`` model."""
    if not deep(saved):
        raise ValueError(f"{saved.milestone.label} has no blocks between its embeddings and its head to read")
    windows, at, targets = _windows(saved, text, _stride(saved, stride))
    names = _stream_names(saved)
    with Recorder(saved.model, *names) as seen:
        saved.model(windows)
    streams = torch.stack([seen[name][at] for name in names])  # (L + 1, N, C): each slot from its window
    logits = saved.model.head(streams)  # (L + 1, N, V)
    _, bits = _bits(logits, targets)
    truth = logits.gather(-1, targets.expand(logits.shape[:-1])[..., None])  # (L + 1, N, 1)
    ranks = 1 + (logits > truth).sum(-1)
    before, after = streams[:-1].double(), streams[1:].double()
    change = ((after - before).norm(dim=-1) / before.norm(dim=-1)).mean(-1)
    return Lens(saved.milestone.key, logits.numpy(), bits.numpy(), ranks.numpy(), change.numpy())


@torch.inference_mode()
def look_at(saved: SavedModel, text: str, slot: int, insides: bool = True) -> Look:
    """One model at one slot, in one forward pass of the context that scored it; ``insides``: with its attention
    and, for a deep model, its lens there."""
    ids = _ids(saved, text)[: slot + 1]  # the slot reads up to and including ("\n" + text)[slot]
    config = saved.model.config
    start, block = 0, config.block_size
    if config.has_attention:  # after the whole text the fullest context, else the window that scored the slot
        start = (max(0, slot + 1 - block) if slot == len(text) else
                 int(_window_starts(torch.tensor(slot), block, _stride(saved, None))))
    window = ids[start:][None]  # (1, T)
    if not (insides and config.has_attention):
        return Look(saved.milestone.key, start, saved.model(window)[0][0, -1].numpy(), None)
    streams = _stream_names(saved) if deep(saved) else []
    with Recorder(saved.model, "blocks.*.attn.weights", *streams) as seen:
        logits = saved.model(window)[0][0, -1].numpy()
    attention = torch.stack([seen[f"blocks.{i}.attn.weights"][0] for i in range(config.n_layer)])  # (L, nh, T, T)
    read = saved.model.head(torch.stack([seen[name][0, -1] for name in streams])).numpy() if streams else None
    return Look(saved.milestone.key, start, logits, attention.numpy(), read)


def look(models: Mapping, req: Request, slot: int, insides: bool = True) -> list[Look]:
    """Every chosen milestone at one slot: one forward pass of that slot's context each."""
    return [look_at(models[n], req.text, slot, insides) for n in req.milestones]


def next_chars_entry(saved: SavedModel, seen: Look, truth: str | None, temperature: float, top_k: int,
                     k: int) -> NextChars:
    """The ``k`` likeliest next characters by the model's own probability, each also as the sampler would draw it
    at this temperature and top-k; and the true next character's rank, when there is one."""
    raw = distribution(seen.logits, 1.0, 0)  # the model's own softmax
    sampled = distribution(seen.logits, temperature, top_k)
    order = np.argsort(-raw, kind="stable")
    vocab = saved.tokenizer.vocab

    def chance(token: int) -> dict:
        return dict(char=vocab[token], probability=float(raw[token]), sampled_probability=float(sampled[token]))

    true_next = None
    if truth is not None:
        token = vocab.index(truth)
        true_next = TrueNext(**chance(token), rank=int(np.flatnonzero(order == token)[0]) + 1)
    return NextChars(milestone=seen.milestone, chars=[CharChance(**chance(t)) for t in order[:k]], true_next=true_next)


def next_chars(models: Mapping, req: Request, k: int, position: int | None = None) -> NextCharsAnswer:
    """/next_chars: per milestone the top-k next characters at a slot (default: after the whole text)."""
    slot = slot_of(req, position)
    k = _within(k, "k", 1, min(models[key].model.config.vocab_size for key in req.milestones))
    entries = [next_chars_entry(models[seen.milestone], seen, req.truth(slot), req.temperature, req.top_k, k)
               for seen in look(models, req, slot, insides=False)]
    return NextCharsAnswer(text=req.text, dropped=req.dropped, position=slot, temperature=req.temperature,
                           top_k=req.top_k, milestones=entries)


def sees_instead(milestone: Milestone) -> str:
    """What a milestone without attention sees instead of a context, as a clause."""
    if milestone.config["sees_input"]:
        return "it sees only the current character"
    return "it sees nothing, and makes the same guess everywhere"


def no_attention(milestone: Milestone) -> str:
    """What a milestone without attention sees instead, in a sentence."""
    return f"Milestone {milestone.label} has no attention: {sees_instead(milestone)}."


def attention(models: Mapping, req: Request, position: int | None = None) -> AttentionAnswer:
    """/attention: every layer's and head's weights over the context of a slot (default: after the whole text)."""
    (key,) = req.milestones
    if not models[key].model.config.has_attention:
        raise Unanswerable(no_attention(models[key].milestone))
    slot = slot_of(req, position)
    (seen,) = look(models, req, slot)
    return AttentionAnswer(text=req.text, dropped=req.dropped, milestone=key, position=slot, start=seen.start,
                           characters=list((START + req.text)[seen.start : slot + 1]),
                           weights=seen.attention.tolist())


def surprise(models: Mapping, req: Request, stride=None) -> SurpriseAnswer:
    """/surprise: every chosen milestone's bits at each character of ``text``, and their mean."""
    return SurpriseAnswer(text=req.text, dropped=req.dropped,
                          milestones=[row.row() for row in score(models, req, stride)])


def logit_lens(models: Mapping, req: Request, ladder: Ladder) -> LensAnswer:
    """/logit_lens: a deep model's bits at each character of the text read after each of its blocks (0: the
    embeddings), each block's mean relative change of the stream, and the true character's rank; Unanswerable,
    naming ``ladder``'s deep models, for a model without blocks to read between."""
    (key,) = req.milestones
    if not deep(models[key]):
        raise Unanswerable(no_lens(models[key], ladder))
    read = lens(models[key], req.text)
    return LensAnswer(text=req.text, dropped=req.dropped, milestone=key, characters=list(req.text),
                      blocks=[LensBlock(after=i, bits=bits.tolist(), bits_per_char=float(bits.mean()),
                                        ranks=read.ranks[i].tolist(),
                                        change=float(read.change[i - 1]) if i else None)
                              for i, bits in enumerate(read.bits)],
                      first_ranked_first=read.first_ranked_first().tolist())
