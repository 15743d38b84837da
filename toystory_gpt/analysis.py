"""Inside the models: where each milestone is surprised, what it expects next, and where it looks.

The app's Inside tab, its ``/surprise``, ``/next_chars`` and ``/attention`` APIs and
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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from . import milestones as ladders  # read at call time: tests may extend the ladder
from .recorder import Recorder
from .sampler import START, distribution
from .weights import SavedModel

GUESSES = 3             # top guesses kept per character, for the tooltips


class Unanswerable(ValueError):
    """A reading these models cannot give (the text has none of their characters, a slot past its end...);
    the message is meant for the person who asked."""


def _within(value: int, name: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise Unanswerable(f"{name} must be from {low:,} to {high:,}, got {value!r}")
    return value


@dataclass(frozen=True)
class Request:
    """A validated text and the milestones to read it, in ladder order."""
    text: str                    # what the models read, unknown characters dropped
    dropped: str                 # the distinct characters dropped, in order of first appearance
    milestones: tuple[int, ...]
    temperature: float = 0.0     # the sampling knobs, for next_chars
    top_k: int = 0


@dataclass
class Surprise:
    """One milestone's surprise at every character of a text, and its top guesses there."""
    milestone: int
    bits: np.ndarray             # (N,) float64: −log2 p(text[i] | before)
    guesses: np.ndarray          # (N, GUESSES) token ids, likeliest first
    guess_probabilities: np.ndarray  # (N, GUESSES)

    @property
    def bits_per_char(self) -> float:
        return float(self.bits.mean())

    def as_dict(self) -> dict:
        return {"milestone": self.milestone, "bits_per_char": self.bits_per_char, "bits": self.bits.tolist()}


@dataclass
class Look:
    """One milestone at one slot: the context it read, its next-character logits, and its attention there."""
    milestone: int
    start: int                   # the context is ("\n" + text)[start : slot + 1]
    logits: np.ndarray           # (V,) float32
    attention: np.ndarray | None  # (layers, heads, T, T), T the context's length; None without attention or unasked


def reading(models: dict[int, SavedModel], text: str, milestones: Sequence[int], temperature: float = 0.0,
            top_k: int = 0) -> Request:
    """What ``milestones`` (loaded, in ``models``) read of ``text``: the characters every one of them knows."""
    unknown = set().union(*(models[n].tokenizer.encode(text).dropped for n in milestones))
    kept = "".join(c for c in text if c not in unknown)
    if not kept:
        raise Unanswerable("Type some text to look inside the models with." if not text else
                           "None of the text's characters are in the models' vocabulary.")
    return Request(kept, "".join(dict.fromkeys(c for c in text if c in unknown)), tuple(milestones), temperature,
                   top_k)


def slot_of(req: Request, value: int | None) -> int:
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


@torch.inference_mode()
def _surprise(saved: SavedModel, text: str, stride: int) -> Surprise:
    ids = _ids(saved, text)
    inputs, targets = ids[:-1], ids[1:]  # (N,) each: slot i reads inputs[..i] and predicts targets[i]
    n, config = len(targets), saved.model.config
    slots = torch.arange(n)
    if not config.has_attention or n <= config.block_size:  # one window holds it all
        logits = saved.model(inputs[None])[0][0]  # (N, V)
    else:
        starts = _window_starts(slots, config.block_size, stride)
        firsts = torch.arange(0, int(starts[-1]) + 1, stride)  # (W,) every window's start
        padded = F.pad(inputs, (0, config.block_size))  # the last window may run past the end: causal, so harmless
        windows = padded[firsts[:, None] + torch.arange(config.block_size)]  # (W, block)
        logits = saved.model(windows)[0][starts // stride, slots - starts]  # (N, V): each slot from its window
    log_p = F.log_softmax(logits.float(), dim=-1)
    bits = -log_p[slots, targets].double() / math.log(2)
    top = log_p.topk(min(GUESSES, config.vocab_size), dim=-1)
    return Surprise(saved.milestone.number, bits.numpy(), top.indices.numpy(), top.values.exp().double().numpy())


def score(models: dict[int, SavedModel], req: Request, stride=None) -> list[Surprise]:
    """Every chosen milestone's surprise at each character (one batched forward pass per milestone)."""
    return [_surprise(models[n], req.text, _stride(models[n], stride)) for n in req.milestones]


@torch.inference_mode()
def _look(saved: SavedModel, text: str, slot: int, with_attention: bool) -> Look:
    ids = _ids(saved, text)[: slot + 1]  # the slot reads up to and including ("\n" + text)[slot]
    config = saved.model.config
    start, block = 0, config.block_size
    if config.has_attention:  # after the whole text the fullest context, else the window that scored the slot
        start = (max(0, slot + 1 - block) if slot == len(text) else
                 int(_window_starts(torch.tensor(slot), block, _stride(saved, None))))
    window = ids[start:][None]  # (1, T)
    if not (with_attention and config.has_attention):
        return Look(saved.milestone.number, start, saved.model(window)[0][0, -1].numpy(), None)
    with Recorder(saved.model, "blocks.*.attn.weights") as seen:
        logits = saved.model(window)[0][0, -1].numpy()
    attention = torch.stack([seen[f"blocks.{i}.attn.weights"][0] for i in range(config.n_layer)])  # (L, nh, T, T)
    return Look(saved.milestone.number, start, logits, attention.numpy())


def look(models: dict[int, SavedModel], req: Request, slot: int, with_attention: bool = True) -> list[Look]:
    """Every chosen milestone at one slot: one forward pass of that slot's context each."""
    return [_look(models[n], req.text, slot, with_attention) for n in req.milestones]


def next_chars_entry(saved: SavedModel, seen: Look, truth: str | None, temperature: float, top_k: int, k: int) -> dict:
    """The ``k`` likeliest next characters by the model's own probability, each also as the sampler would draw it
    at this temperature and top-k; and the true next character's rank, when there is one."""
    raw = distribution(seen.logits, 1.0, 0)  # the model's own softmax
    sampled = distribution(seen.logits, temperature, top_k)
    order = np.argsort(-raw, kind="stable")
    vocab = saved.tokenizer.vocab

    def entry(token: int) -> dict:
        return {"char": vocab[token], "probability": float(raw[token]), "sampled_probability": float(sampled[token])}

    result = {"milestone": seen.milestone, "chars": [entry(t) for t in order[:k]]}
    if truth is not None:
        token = vocab.index(truth)
        result["true_next"] = {**entry(token), "rank": int(np.flatnonzero(order == token)[0]) + 1}
    return result


def next_chars(models: dict[int, SavedModel], req: Request, k: int, position: int | None = None) -> dict:
    """/next_chars: per milestone the top-k next characters at a slot (default: after the whole text)."""
    slot = slot_of(req, position)
    k = _within(k, "k", 1, min(models[n].model.config.vocab_size for n in req.milestones))
    truth = req.text[slot] if slot < len(req.text) else None
    entries = [next_chars_entry(models[seen.milestone], seen, truth, req.temperature, req.top_k, k)
               for seen in look(models, req, slot, with_attention=False)]
    return {"text": req.text, "dropped": req.dropped, "position": slot, "temperature": req.temperature,
            "top_k": req.top_k, "milestones": entries}


def no_attention(number: int) -> str:
    """What a milestone without attention sees instead, in a sentence."""
    milestone = ladders.LADDER[number]
    if milestone.config["sees_input"]:
        return f"Milestone {milestone.label} has no attention: it sees only the current character."
    return f"Milestone {milestone.label} has no attention: it sees nothing, and makes the same guess everywhere."


def attention(models: dict[int, SavedModel], req: Request, position: int | None = None) -> dict:
    """/attention: every layer's and head's weights over the context of a slot (default: after the whole text)."""
    (number,) = req.milestones
    if not models[number].model.config.has_attention:
        raise Unanswerable(no_attention(number))
    slot = slot_of(req, position)
    (seen,) = look(models, req, slot)
    return {"text": req.text, "dropped": req.dropped, "milestone": number, "position": slot, "start": seen.start,
            "characters": list((START + req.text)[seen.start : slot + 1]), "weights": seen.attention.tolist()}


def surprise(models: dict[int, SavedModel], req: Request, stride=None) -> dict:
    """/surprise: every chosen milestone's bits at each character of ``text``, and their mean."""
    return {"text": req.text, "dropped": req.dropped,
            "milestones": [row.as_dict() for row in score(models, req, stride)]}
