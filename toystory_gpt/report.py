"""Describing trained models in words and tables: the results table, model cards, the run summary, and the
commentary on what each step of the ladder did."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from . import corpus, folders, hub
from .milestones import LADDER, Ladder, Milestone
from .record import ResultRow, RunSummary, TrainingRecord
from .weights import WeightsError, read_record

NATS_PER_BIT = math.log(2)
SUMMARY_FILE = "results.json"
SEEDS_DIR = "seeds"  # the other seeds' records: seeds/seed-S/FOLDER.json (their weights are not kept)
SAME = 0.0005  # nats/char: closer than this, two val losses print the same at three decimals
NOISE_SDS = 2  # a gain smaller than this many of its standard deviations is within noise
# Other ladders' results, committed without their weights (results/NAME/: results.json, README.md, each model's
# card, history and sample), for the app and the README to show beside the served one.
RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"


def row(milestone: Milestone, record: TrainingRecord | None, params: int | None = None,
        val_loss: float | None = None, served: bool = True) -> ResultRow:
    """The summary row of one trained model; ``params`` and ``val_loss`` as measured now, else as recorded
    (what no record says is None). ``served``: its weights are in the folder (the run's first seed)."""
    loss = val_loss if val_loss is not None else record and record.best_val_loss
    return ResultRow(milestone=milestone.number, folder=milestone.folder, label=milestone.label,
                     params=params if params is not None else record and record.params, val_loss=loss,
                     val_bits=None if loss is None else loss / NATS_PER_BIT, best_step=record and record.best_step,
                     steps=record and record.steps, wall_time=record and record.wall_time,
                     seed=record and record.seed, served=served, still_improving=record and record.still_improving,
                     train_loss=record and record.train_loss_at_best)


@dataclass(frozen=True)
class Spread:
    """One model's best validation loss over the seeds it was trained with."""
    losses: dict[int, float]       # seed -> best val loss

    @property
    def n(self) -> int:
        return len(self.losses)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.losses.values())

    @property
    def sd(self) -> float | None:
        """The sample standard deviation (n - 1); None for a single seed."""
        return statistics.stdev(self.losses.values()) if self.n > 1 else None


@dataclass(frozen=True)
class LossGain:
    """What one idea bought: the val loss of the model without it minus the model with it, seed by seed (one seed
    means the same batches for both), so positive is better."""
    gains: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.gains)

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.gains) if len(self.gains) > 1 else None

    @property
    def within_noise(self) -> bool:
        """Smaller than twice its standard deviation: these seeds do not show the idea helps (or hurts)."""
        return self.sd is not None and abs(self.mean) < NOISE_SDS * self.sd

    def text(self) -> str:
        spread = "" if self.sd is None else f" ± {self.sd:.3f}"
        return f"{self.mean:+.3f}{spread}" + (" (within noise)" if self.within_noise else "")


def spreads(rows: list[ResultRow]) -> dict[str, Spread]:
    """Each model's val loss over every seed the rows hold, by folder."""
    losses: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.val_loss is not None:
            losses.setdefault(r.folder, {})[r.seed] = r.val_loss
    return {folder: Spread(by_seed) for folder, by_seed in losses.items()}


def gain(spread_of: dict[str, Spread], milestone: Milestone, ladder: Ladder = LADDER) -> LossGain | None:
    """``milestone``'s gain over the model below it (``Ladder.below``) on the seeds both were trained with; None
    where one is missing."""
    base = ladder.below(milestone)
    below, above = base and spread_of.get(base.folder), spread_of.get(milestone.folder)
    if below is None or above is None or not (seeds := sorted(set(below.losses) & set(above.losses))):
        return None
    return LossGain(tuple(below.losses[s] - above.losses[s] for s in seeds))


def served_rows(rows: list[ResultRow]) -> list[ResultRow]:
    """The rows of the weights the folders hold (one per model), in ladder order."""
    return [r for r in rows if r.served]


@dataclass(frozen=True)
class PublishedLadder:
    """Someone else's ladder on the same corpus, to read ours against."""
    name: str
    corpus: str                    # the corpus name it was measured on (CorpusRecord.name)
    losses: dict[int, float]       # milestone number -> their val loss, where they published one
    note: str


# The shared data README's figures (Karpathy's "Let's build GPT" lecture, ng-video-lecture commit messages).
LECTURE = PublishedLadder(
    "lecture", "tiny-shakespeare", {2: 2.49, 3: 2.50, 4: 2.28, 5: 2.24, 7: 2.06, 8: 1.48},
    "lecture: Karpathy's \"Let's build GPT\" on Tiny Shakespeare, with the same 90/10 split. Its stages 3–7 are "
    "32 wide with a context of 8 (ours: 128 and 128), its bigram is about 2.49; its row 8 is the lecture's final "
    "scaled-up model (10.8 M parameters, dropout included), not a rung like ours. It published no unigram and no "
    "residual-only stage.")


def published_for(corpus_name: str | None) -> PublishedLadder | None:
    return LECTURE if corpus_name == LECTURE.corpus else None


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table (first column left-aligned, the rest right-aligned) that reads well in a terminal too."""
    rows = [[str(cell) for cell in r] for r in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n"


def _cell(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


STILL_IMPROVING = "↑"
STILL_IMPROVING_NOTE = (f"{STILL_IMPROVING}: still improving at its last step (its best evaluation was its last), "
                        f"so more steps would lower its loss.")


def _best_step(r: ResultRow) -> str:
    return _cell(r.best_step, ",") + (f" {STILL_IMPROVING}" if r.still_improving else "")


def table(rows: list[ResultRow], published: PublishedLadder | None = None, ladder: Ladder = LADDER) -> str:
    """The results table of the served weights; where the rows hold more seeds, each model's mean ± sd over them and
    each idea's gain ± sd, marked "within noise" when smaller than twice its sd; ``published``: a column of its
    losses."""
    shown = served_rows(rows)
    spread_of = spreads(rows)
    seeds = max((spread.n for spread in spread_of.values()), default=1)
    extra = [published.name] if published else []
    lecture = [[_cell(published.losses.get(r.milestone), ".2f")] if published else [] for r in shown]
    if seeds == 1:
        header = ["milestone", "params", "val nats/char", "val bits/char", "best step", "steps", "time (s)", *extra]
        body = [[r.label, _cell(r.params, ","), _cell(r.val_loss, ".3f"), _cell(r.val_bits, ".3f"),
                 _best_step(r), _cell(r.steps, ","), _cell(r.wall_time, ".0f"), *cells]
                for r, cells in zip(shown, lecture)]
    else:
        served_seed = next((r.seed for r in shown), None)
        header = ["milestone", "params", f"val nats/char (seed {served_seed})", f"mean ± sd ({seeds} seeds)",
                  "gain ± sd", "best step", "steps", "time (s)", *extra]
        body = []
        for r, cells in zip(shown, lecture):
            spread = spread_of.get(r.folder)
            idea = gain(spread_of, ladder.ablation if r.milestone is None else ladder[r.milestone], ladder)
            body.append([r.label, _cell(r.params, ","), _cell(r.val_loss, ".3f"),
                         "–" if spread is None else _mean_sd(spread), "–" if idea is None else idea.text(),
                         _best_step(r), _cell(r.steps, ","), _cell(r.wall_time, ".0f"), *cells])
    notes = [STILL_IMPROVING_NOTE] if any(r.still_improving for r in shown) else []
    if seeds > 1:
        notes.append(f"gain: the val loss of the rung below minus this one's, seed by seed (the ablation: against "
                     f"milestone {ladder.below(ladder.ablation).number}), mean ± sd; within noise: smaller than "
                     f"{NOISE_SDS} sd.")
    if published:
        notes.append(published.note)
    return markdown_table(header, body) + "".join(f"\n{note}\n" for note in notes)


def _mean_sd(spread: Spread) -> str:
    return f"{spread.mean:.3f}" + ("" if spread.sd is None else f" ± {spread.sd:.3f}")


def side_by_side(ladders: list[tuple[str, list[ResultRow]]], published: PublishedLadder | None = None,
                 ladder: Ladder = LADDER) -> str:
    """Several ladders' val losses (mean ± sd where they have seeds), milestone by milestone, and ``published``."""
    spread_of = [(name, spreads(rows), {r.folder: r for r in served_rows(rows)}) for name, rows in ladders]
    header = ["milestone", *(f"{name} (nats/char)" for name, _, _ in spread_of),
              *([published.name] if published else [])]
    body = []
    for m in ladder.models:
        cells = []
        for _, found, served in spread_of:
            spread, r = found.get(m.folder), served.get(m.folder)
            cells.append("–" if spread is None else
                         _mean_sd(spread) + (f" {STILL_IMPROVING}" if r and r.still_improving else ""))
        if any(cell != "–" for cell in cells):
            lecture = [_cell(published.losses.get(m.number), ".2f")] if published else []
            body.append([m.label, *cells, *lecture])
    notes = [STILL_IMPROVING_NOTE, *([published.note] if published else [])]
    return markdown_table(header, body) + "".join(f"\n{note}\n" for note in notes)


def model_card(milestone: Milestone, record: TrainingRecord, snapshots=()) -> str:
    """The folder's README.md: what the model is, what it was trained on, how it scored, how to load it;
    ``snapshots``: the steps kept."""
    cfg = record.model_config
    shown = {k: v for k, v in cfg.items() if k != "vocab"}
    kept = ""
    if snapshots:
        steps = ", ".join(f"{s:,}" for s in sorted(snapshots))
        kept = (f"\n`snapshots/step-S.safetensors` hold the weights as they were at training steps {steps}, in half "
                f"precision (same tensor names as `model.safetensors`; `weights.load_snapshot(saved, S)` loads one). "
                f"`history.json` records what the model wrote at every evaluation.\n")
    text = record.corpus
    screenplay = text.name == corpus.SCREENPLAY_NAME
    not_included = (" (not included: the text is copyrighted; see the project README for how it is obtained)"
                    if screenplay else "")
    tags = "character-level, toy-story, educational" if screenplay else "character-level, educational"
    improving = " It was still improving at its last step: more steps would lower its loss." \
        if record.still_improving else ""
    return f"""---
library_name: toystory-gpt
tags: [{tags}, pytorch_model_hub_mixin]
---

# Toy Story GPT — {milestone.label}

{milestone.idea}

A character-level language model trained on {text.presentation.described}{not_included}.
Corpus: `{text.name}` (file `{text.file}`, {text.bytes:,} bytes, SHA-256 `{text.sha256}`; {text.characters:,}
characters, a vocabulary of {text.vocabulary}); the last 10% was held out for validation.

Best validation loss **{record.best_val_loss:.3f} nats/char** ({record.best_val_loss / NATS_PER_BIT:.3f} bits/char) at
step {record.best_step:,} of {record.steps:,}; {record.params:,} parameters; trained in {record.wall_time:.0f} s with
seed {record.seed}.{improving}

Config (besides its {len(cfg['vocab'])}-character vocabulary): `{json.dumps(shown)}`.
Training: `{json.dumps(record.train_config)}`.

Load it with the project's code: `toystory_gpt.weights.load(folder, milestone)`, or
`GPT.from_pretrained(folder, strict=True)`. `history.json` holds the loss curve and
`{milestone.folder}.txt` a sample.
{kept}"""


def saved_record(weights_dir: Path, milestone: Milestone) -> TrainingRecord | None:
    """What training recorded for ``milestone`` in ``weights_dir``; None where that is missing or unreadable
    (the weights loader reports such a folder as broken; a summary just leaves it out)."""
    try:
        return read_record(folders.current(Path(weights_dir) / milestone.folder))
    except WeightsError:
        return None


def seed_record_path(weights_dir: Path, seed: int, milestone: Milestone) -> Path:
    """Where a run keeps the record of ``milestone`` trained with a seed whose weights it does not keep."""
    return Path(weights_dir) / SEEDS_DIR / f"seed-{seed}" / f"{milestone.folder}.json"


def seed_records(weights_dir: Path, milestone: Milestone, seeds: list[int] | None = None) -> list[TrainingRecord]:
    """The records of ``milestone`` trained with other seeds than the served one: ``seeds`` (None: all there are)."""
    if seeds is None:
        found = sorted((Path(weights_dir) / SEEDS_DIR).glob(f"seed-*/{milestone.folder}.json"))
    else:
        found = [seed_record_path(weights_dir, seed, milestone) for seed in seeds]
    records = []
    for path in found:
        try:
            records.append(TrainingRecord.from_json(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # a seed not trained (yet), or a broken record: the summary leaves it out
    return records


def collect_rows(weights_dir: Path, seeds: list[int] | None = None, ladder: Ladder = LADDER) -> list[ResultRow]:
    """Rows for every model trained into ``weights_dir`` so far, milestones in order, then the ablation: the served
    weights' row, then the other seeds' (``seeds``; None: every one recorded)."""
    rows = []
    for m in ladder.models:
        record = saved_record(weights_dir, m)
        if record is not None:
            rows.append(row(m, record))
        rows += [row(m, other, served=False) for other in seed_records(weights_dir, m, seeds)
                 if record is None or other.seed != record.seed]
    return rows


def write_summary(weights_dir: Path, summary: RunSummary, intro: str, ladder: Ladder = LADDER) -> None:
    """``results.json`` for machines and ``README.md`` (the overview card) for people."""
    folders.write_file(Path(weights_dir) / SUMMARY_FILE, summary.to_json())
    text = summary.corpus
    folders.write_file(Path(weights_dir) / "README.md",
                       f"# Toy Story GPT — trained milestones\n\nTrained on {text.presentation.described}: "
                       f"`{text.name}` (file `{text.file}`, {text.bytes:,} bytes, SHA-256 `{text.sha256}`, "
                       f"{text.characters:,} characters, vocabulary {text.vocabulary}); seeds "
                       f"{', '.join(map(str, summary.seeds))}, the weights here are seed {summary.served_seed}'s.\n\n"
                       f"{intro}\n\n{table(summary.rows, published_for(text.name), ladder)}\n"
                       f"## What each step did\n\n{ladder_commentary(summary.rows, ladder)}\n")


def committed_summaries() -> list[RunSummary]:
    """The ladders whose results this repository holds: the served default (``weights/``), then ``results/*/``."""
    folders_found = [hub.DEFAULT_WEIGHTS_DIR, *sorted(p for p in RESULTS_DIR.glob("*") if p.is_dir())]
    return [summary for folder in folders_found if (summary := read_summary(folder)) is not None]


def read_summary(weights_dir: Path) -> RunSummary | None:
    """The folder's ``results.json``, or None where it is missing or unreadable."""
    try:
        return RunSummary.from_json((Path(weights_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def ladder_commentary(rows: list[ResultRow], ladder: Ladder = LADDER) -> str:
    """What each trained milestone scored against the one below it, in Markdown. With several seeds a rung's score is
    their mean and its gain is judged against its sd: a gain within noise is said to be so, not claimed. A real step
    back gets its likely reason (the rung's ``why_worse``) and the run's own numbers for it: whether the rung below had
    begun to over-fit, and both models' train/val gap at their best steps."""
    by_folder = {r.folder: r for r in served_rows(rows)}
    spread_of = spreads(rows)
    parts = []
    for m in ladder:
        r, spread = by_folder.get(m.folder), spread_of.get(m.folder)
        if r is None or spread is None:
            parts.append(f"- **{m.label}** — {m.idea} _Not trained yet._")
            continue
        over = f" (mean ± sd over {spread.n} seeds)" if spread.n > 1 else ""
        line = (f"- **{m.label}** — {m.idea} Best val loss **{_mean_sd(spread)}** nats/char{over} "
                f"({spread.mean / NATS_PER_BIT:.2f} bits/char)")
        if r.still_improving:
            line += f", still improving at its last step ({r.steps:,})"
        below = ladder.below(m)
        previous = below and by_folder.get(below.folder)
        idea = gain(spread_of, m, ladder)
        if idea is None or previous is None:
            parts.append(line + ".")
            continue
        noise = "" if idea.sd is None else f" (gain {idea.text().removesuffix(' (within noise)')})"
        if idea.within_noise:
            line += (f", within noise of milestone {below.number}{noise}: the gain is smaller than {NOISE_SDS} sd over "
                     f"{len(idea.gains)} seeds, so these runs do not show that this idea changes the loss here.")
        elif abs(idea.mean) < SAME:
            line += f", the same as milestone {below.number}."
        else:
            direction = "better" if idea.mean > 0 else "worse"
            line += f", {abs(idea.mean):.3f} {direction} than milestone {below.number}{noise}."
        if idea.mean <= -SAME and not idea.within_noise:
            line += " **A step back.**" + (f" {m.why_worse}" if m.why_worse else "") + _step_back_evidence(previous, r)
        parts.append(line)
        if m.number == ladder.ablation_of:
            parts.extend(_ablation_commentary(spread_of, m, below, ladder))
    return "\n".join(parts)


def _step_back_evidence(previous: ResultRow, r: ResultRow) -> str:
    """The run's own numbers on a step back: had the rung below begun to over-fit, and how far apart were training and
    validation loss at each one's best step (a wide gap is over-fitting, which dropout is there to cure)."""
    text = (f" Milestone {previous.milestone} was still improving at its last step, so it was not over-fitting yet."
            if previous.still_improving else
            f" Milestone {previous.milestone} peaked at step {previous.best_step:,} of {previous.steps:,}, "
            f"so it had begun to over-fit.")
    gaps = [f"milestone {x.milestone} {x.train_loss:.3f} against {x.val_loss:.3f} (gap "
            f"{x.val_loss - x.train_loss:+.3f})" for x in (previous, r) if x.train_loss is not None]
    if gaps:
        text += " Training against validation loss at the best step: " + "; ".join(gaps) + "."
    return text


def _ablation_commentary(spread_of: dict[str, Spread], milestone: Milestone, below: Milestone | None,
                         ladder: Ladder) -> list[str]:
    ablation = ladder.ablation
    scored, one_below = spread_of.get(ablation.folder), below and spread_of.get(below.folder)
    this = spread_of.get(milestone.folder)
    if scored is None or one_below is None or this is None:
        return []
    idea = gain(spread_of, ablation, ladder)
    worse = idea is not None and idea.mean < 0 and not idea.within_noise
    return [f"  - The ablation ({ablation.idea}) scored {_mean_sd(scored)}, against {_mean_sd(one_below)} "
            f"for milestone {below.number} and {_mean_sd(this)} for milestone {milestone.number}"
            + (f": {ablation.why_worse}" if worse and ablation.why_worse else ".")]
