"""Command line: ``python -m toystory_gpt evaluate --corpus PATH [--weights DIR] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from . import corpus, report, weights
from .tokenizer import CharTokenizer
from .trainer import evaluate


def cmd_evaluate(args) -> int:
    """Recompute every saved milestone's full-split validation loss from its weights."""
    loaded, broken = weights.load_all(args.weights)
    for error in broken.values():
        print(f"error: {error}", file=sys.stderr)
    if not loaded:
        print(f"error: no loadable milestone folders in {args.weights}/", file=sys.stderr)
        return 1
    text = corpus.render(corpus.load_elements(args.corpus))
    rows = []
    for saved in loaded:
        if saved.tokenizer.vocab != CharTokenizer.from_text(text).vocab:
            print(f"error: {saved.folder.name}: its vocabulary does not match this corpus", file=sys.stderr)
            return 1
        _, val = corpus.split(torch.tensor(saved.tokenizer.encode(text).ids))
        val_loss = evaluate(saved.model, val, saved.model.config.block_size)
        info = dict(saved.info, params=saved.model.num_params, best_val_loss=val_loss)
        rows.append(report.row(saved.milestone, info))
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(report.table(rows), end="")
    return 1 if broken else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toystory_gpt", description="Toy Story GPT tools")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help=cmd_evaluate.__doc__)
    ev.add_argument("--corpus", help=f"path to the screenplay (default: ${corpus.CORPUS_ENV}, else the cache, else download)")
    ev.add_argument("--weights", type=Path, default=Path("weights"))
    ev.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    ev.set_defaults(run=cmd_evaluate)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except corpus.CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
