"""The ladder: eight milestones, each switching on one more idea, plus the ablation that explains milestone 6."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import GPTConfig

# Shared by milestones 3-8 (and the ablation), so differences in the ladder come from the ideas alone.
WIDTH = dict(block_size=128, n_embd=128)
DEPTH = 4


@dataclass(frozen=True)
class Milestone:
    number: int
    name: str          # short label, e.g. "+ feed-forward"
    idea: str          # one sentence: what this step adds
    config: dict = field(default_factory=dict)  # GPTConfig fields beyond the vocabulary
    slug: str = ""     # folder name, when not milestoneN

    @property
    def label(self) -> str:
        return f"{self.number} · {self.name}" if self.number else f"ablation · {self.name}"

    @property
    def folder(self) -> str:
        return self.slug or f"milestone{self.number}"

    def model_config(self, vocab: str) -> GPTConfig:
        return GPTConfig(vocab=vocab, **self.config)


#  N  name                         adds                                                                config
MILESTONES = (
    Milestone(1, "unigram", "Corpus statistics only: one learned character distribution, no context at all.",
              dict(sees_input=False)),
    Milestone(2, "bigram", "The next character depends on the current one: a table of next-character logits.",
              dict()),
    Milestone(3, "single-head attention", "Each position looks back over the whole context with one masked-softmax attention head, using token + position embeddings.",
              dict(WIDTH, n_layer=1, n_head=1)),
    Milestone(4, "multi-head attention", "The same width split into four heads that attend independently, concatenated and projected.",
              dict(WIDTH, n_layer=1, n_head=4)),
    Milestone(5, "+ feed-forward", "A position-wise MLP after attention lets each position compute on what it gathered.",
              dict(WIDTH, n_layer=1, n_head=4, feed_forward=True)),
    Milestone(6, "+ residual connections", f"Each sub-layer adds to a residual stream instead of replacing it, which makes depth trainable: {DEPTH} blocks instead of 1.",
              dict(WIDTH, n_layer=DEPTH, n_head=4, feed_forward=True, residual=True)),
    Milestone(7, "+ layer normalization", "Pre-norm LayerNorm before each sub-layer and a final one keep activations well scaled.",
              dict(WIDTH, n_layer=DEPTH, n_head=4, feed_forward=True, residual=True, layer_norm=True)),
    Milestone(8, "+ dropout", "Randomly zeroing activations during training fights over-fitting the small corpus.",
              dict(WIDTH, n_layer=DEPTH, n_head=4, feed_forward=True, residual=True, layer_norm=True, dropout=0.1)),
)

# Milestone 6 adds residuals and depth at once; this model has the depth without the residuals, to show why.
ABLATION = Milestone(0, "deep, no residuals", f"Milestone 5 stacked {DEPTH} blocks deep without residual connections (ablation, not a milestone).",
                     dict(WIDTH, n_layer=DEPTH, n_head=4, feed_forward=True), slug="ablation-deep-no-residual")

BY_NUMBER = {m.number: m for m in MILESTONES}
