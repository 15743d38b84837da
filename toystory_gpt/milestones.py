"""The ladder: each milestone written as what it changes from the one before, and everything else read from here.

A rung is described once: its name, the idea it adds, the config switches that add it, why that step
can score worse than the one below, and how its training differs. ``train.py``, the CLI, the reports
and the app take the ladder they serve as an argument (``LADDER`` unless given another), and every
count, label and list of milestones they show is read from it, so adding a ninth rung is one more
``Rung`` below, and retraining.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from .model import GPTConfig

# Shared by milestones 3-8 (and the ablation), so differences in the ladder come from the ideas alone. The context
# length is training's (TrainConfig.block_size): one number for the windows trained on and the position table.
WIDTH = dict(n_embd=128)
DEPTH = 4
# Milestones 1-2 have no context to learn, only a table; at the attention milestones' rate they would
# still be far from converged when the others are done.
TABLE_TRAINING = dict(learning_rate=1e-2)
ABLATION = "ablation"  # the ablation's name where milestones go by number (the Inside tab, its lens API)


@dataclass(frozen=True)
class Rung:
    """One step of the ladder as written: what it changes from the step before."""
    name: str                      # short label, e.g. "+ feed-forward"
    idea: str                      # one sentence: what this step adds
    changes: Mapping               # GPTConfig fields this step sets, on top of the previous step's
    why_worse: str = ""            # why this step can score worse than the one before; shown only when it did
    training: Mapping = field(default_factory=dict)  # TrainConfig fields this model trains with instead
    folder: str = ""               # its weights folder, when not milestoneN


@dataclass(frozen=True)
class Milestone:
    """A model to train and show: a rung with its place on the ladder and its whole config worked out."""
    number: int | None             # place on the ladder from 1; None for the ablation
    name: str
    idea: str
    config: Mapping                # every GPTConfig field besides the vocabulary
    folder: str                    # its weights folder's name
    why_worse: str = ""
    training: Mapping = field(default_factory=dict)
    ablation_of: int | None = None  # the ablation: the milestone whose idea it takes back out

    @property
    def is_ablation(self) -> bool:
        return self.ablation_of is not None

    @property
    def key(self) -> int | str:
        """How the Inside tab and its lens API name it: its number, or ABLATION."""
        return ABLATION if self.is_ablation else self.number

    @property
    def label(self) -> str:
        return f"ablation · {self.name}" if self.is_ablation else f"{self.number} · {self.name}"

    def model_config(self, vocab: str, block_size: int | None = None) -> GPTConfig:
        """Its config for ``vocab``, with a context of ``block_size`` characters (else GPTConfig's default)."""
        return GPTConfig(vocab=vocab, **self.config, **({} if block_size is None else {"block_size": block_size}))


class Ladder:
    """The milestones in order, and the ablation that explains one of them."""

    def __init__(self, rungs: tuple[Rung, ...], ablation: Rung, ablation_of: int):
        self.rungs, self.ablation_rung, self.ablation_of = tuple(rungs), ablation, ablation_of
        config: dict = {}
        milestones = []
        for number, rung in enumerate(self.rungs, start=1):
            config = {**config, **rung.changes}
            milestones.append(Milestone(number, rung.name, rung.idea, dict(config),
                                        rung.folder or f"milestone{number}", rung.why_worse,
                                        dict(rung.training)))
        self.milestones = tuple(milestones)
        self._by_number = {m.number: m for m in self.milestones}
        base = self[ablation_of]
        self.ablation = Milestone(None, ablation.name, ablation.idea, {**base.config, **ablation.changes},
                                  ablation.folder, ablation.why_worse, dict(ablation.training),
                                  ablation_of)

    def __iter__(self) -> Iterator[Milestone]:
        return iter(self.milestones)

    def __len__(self) -> int:
        return len(self.milestones)

    def __contains__(self, number) -> bool:
        return number in self._by_number

    def __getitem__(self, number: int) -> Milestone:
        """The milestone numbered ``number`` (from 1)."""
        return self._by_number[number]

    def by_key(self, key: int | str) -> Milestone:
        """The milestone or the ablation a ``Milestone.key`` names."""
        return self.ablation if key == ABLATION else self[key]

    def below(self, milestone: Milestone) -> Milestone | None:
        """The model it adds its idea to, which its gain is measured against (the results table's gain column, the
        Inside tab's gain rows): the milestone under it; for the ablation, the one under the milestone it takes
        apart (it adds that milestone's depth without its residuals)."""
        number = milestone.ablation_of - 1 if milestone.is_ablation else milestone.number - 1
        return self._by_number.get(number)

    @property
    def numbers(self) -> list[int]:
        return list(self._by_number)

    @property
    def models(self) -> tuple[Milestone, ...]:
        """Everything train.py can train and the reports describe: the milestones, then the ablation."""
        return (*self.milestones, self.ablation)

    def extended(self, *rungs: Rung) -> Ladder:
        """This ladder with more rungs on top (what adding a milestone to ``LADDER`` below amounts to)."""
        return Ladder((*self.rungs, *rungs), self.ablation_rung, self.ablation_of)


def milestone_list(ladder: Ladder) -> Callable[[str], list[int]]:
    """An argparse ``type``: milestone numbers of ``ladder`` written as ``2,5,8`` on a command line, in order."""

    def numbers_of(value: str) -> list[int]:
        try:
            numbers = sorted({int(part) for part in value.split(",") if part.strip()})
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected milestone numbers like 2,5,8, got {value!r}") from None
        if not numbers or any(n not in ladder for n in numbers):
            raise argparse.ArgumentTypeError(f"milestones are numbered 1-{len(ladder)}, got {value!r}")
        return numbers

    return numbers_of


LADDER = Ladder((
    Rung("unigram", "Corpus statistics only: one learned character distribution, no context at all.",
         dict(sees_input=False), training=TABLE_TRAINING),
    Rung("bigram", "The next character depends on the current one: a table of next-character logits.",
         dict(sees_input=True), training=TABLE_TRAINING),
    Rung("single-head attention",
         "Each position looks back over the whole context with one masked-softmax attention head, "
         "using token + position embeddings.",
         dict(WIDTH, n_layer=1, n_head=1),
         why_worse="Attention must learn from scratch what the bigram table stores directly (which character "
                   "follows which); until it has trained long enough to use the wider context, it trails the table."),
    Rung("multi-head attention",
         "The same width split into four heads that attend independently, concatenated and projected.",
         dict(n_head=4),
         why_worse="Four heads of 32 dimensions each match queries and keys in a narrower space than one head of "
                   "128, for the same parameters; with no feed-forward layer yet to compute on what the heads "
                   "gather, the split buys little."),
    Rung("+ feed-forward", "A position-wise MLP after attention lets each position compute on what it gathered.",
         dict(feed_forward=True),
         why_worse="The feed-forward layer sits in the only path from input to output (no residual yet), so the "
                   "gradient must pass through one more transformation, which makes the model harder to train."),
    Rung("+ residual connections",
         f"Each sub-layer adds to a residual stream instead of replacing it, which makes depth trainable: "
         f"{DEPTH} blocks instead of 1.",
         dict(residual=True, n_layer=DEPTH),
         why_worse="Four blocks take longer per step, and with the same step budget a deeper model may not have "
                   "converged."),
    Rung("+ layer normalization",
         "Pre-norm LayerNorm before each sub-layer and a final one keep activations well scaled.",
         dict(layer_norm=True),
         why_worse="At only four blocks the residual stream stays well scaled without it, so normalization has "
                   "little to fix here; its benefit grows with depth."),
    Rung("+ dropout", "Randomly zeroing activations during training fights over-fitting the small corpus.",
         dict(dropout=0.1),
         why_worse="Dropout trades fit for generalization: it only pays once a model over-fits."),
),
    # Milestone 6 adds residuals and depth at once; this model has the depth without the residuals, to show why.
    ablation=Rung("deep, no residuals",
                  f"Milestone 5 stacked {DEPTH} blocks deep without residual connections (ablation, not a milestone).",
                  dict(residual=False), folder="ablation-deep-no-residual",
                  why_worse="depth alone does not pay; residual connections are what let the gradient reach the "
                            "lower blocks."),
    ablation_of=6,
)
