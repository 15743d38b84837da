"""Command line (also installed as the console script ``toystory-gpt``).

    python -m toystory_gpt train [train.py's options]                  # the same as python train.py

    python -m toystory_gpt evaluate [--corpus PATH | --text PATH|NAME] [--weights DIR] [--json]
    python -m toystory_gpt generate --milestones 2,5,8 --prompt "WOODY:" --length 300 --seed 0 [--weights DIR] [--json]
    python -m toystory_gpt generate --milestones 3,8 --step 300          # as they were at training step 300
    python -m toystory_gpt inspect surprise|next_chars|attention --text "Hello" [--milestones 2,8] [--json]
    python -m toystory_gpt inspect lens --text "Hello" [--milestone 8|ablation] [--json]
    python -m toystory_gpt publish space|model OWNER/NAME [--dry-run] [--private]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from . import analysis, api, corpus, hub, publish, report, weights
from .milestones import ABLATION, LADDER, Ladder, milestone_list
from .tokenizer import CharTokenizer
from .trainer import evaluate


def cmd_train(options: list[str], ladder: Ladder) -> int:
    """Train the ladder, exactly as ``python train.py`` does."""
    import train  # the training script, installed beside the package; only this command needs it

    return train.main(options, ladder)


def cmd_evaluate(args) -> int:
    """Recompute every saved milestone's full-split validation loss from its weights."""
    folder = hub.resolve(args.weights)
    loaded, broken = weights.load_all(folder, args.ladder)
    for error in broken.values():
        print(f"error: {error}", file=sys.stderr)
    if not loaded:
        print(f"error: no loadable milestone folders in {folder}/", file=sys.stderr)
        return 1
    text = corpus.load(args.text, args.corpus)
    tokenizer = CharTokenizer.from_text(text.text)
    _, val = text.split_ids(tokenizer)
    rows = []
    for saved in loaded:
        if saved.tokenizer.vocab != tokenizer.vocab:
            print(f"error: {saved.folder.name}: its vocabulary does not match this corpus", file=sys.stderr)
            return 1
        val_loss = evaluate(saved.model, val, saved.model.config.block_size)
        rows.append(report.row(saved.milestone, saved.record, params=saved.model.num_params, val_loss=val_loss))
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    else:
        print(report.table(rows, ladder=args.ladder), end="")
    return 1 if broken else 0


def _service(args) -> api.Service:
    folder = hub.resolve(args.weights)
    service = api.Service.from_folder(folder, args.ladder)
    for error in service.models.broken.values():
        print(f"warning: {error}", file=sys.stderr)
    if not service.models.saved:
        service.close()
        raise api.InvalidRequest(f"no loadable milestone folders in {folder}/")
    return service


def cmd_generate(args) -> int:
    """Continue one prompt with several milestones side by side, exactly as the web app and its API do."""
    service = _service(args)
    try:
        request = service.generate_request(milestones=args.milestones or sorted(service.models.saved),
                                           prompt=args.prompt, length=args.length, temperature=args.temperature,
                                           top_k=args.top_k, seed=args.seed, step=args.step)
        if dropped := service.dropped(request):
            print(f"note: left out prompt characters the vocabulary lacks: {dropped!r}", file=sys.stderr)
        answer = service.run(request)
    finally:
        service.close()
    chosen = [(args.ladder[w.milestone], w.text) for w in answer.texts]
    if args.json:
        print(json.dumps([{"milestone": m.number, "name": m.name, "text": text} for m, text in chosen], indent=1))
    else:
        for m, text in chosen:
            print(f"── {m.label} ──\n{request.prompt}{text}\n")
    return 0


def cmd_inspect(args) -> int:
    """Inside the models, as the app's Inside tab and its APIs show it: surprise, next characters, attention or the
    logit lens."""
    service = _service(args)
    try:
        chosen = args.milestones or sorted(service.models.saved)
        if args.view == "lens":
            result = service.logit_lens(service.parse(api.LensRequest, text=args.text,
                                                      milestone=args.milestone or chosen[-1]))
        elif args.view == "surprise":
            result = service.surprise(service.parse(api.TextRequest, text=args.text, milestones=chosen))
        elif args.view == "next_chars":
            result = service.next_chars(service.parse(
                api.NextCharsRequest, text=args.text, milestones=chosen, temperature=args.temperature,
                top_k=args.top_k, k=args.k, position=args.position))
        else:
            result = service.attention(service.parse(api.AttentionRequest, text=args.text, milestone=chosen[-1],
                                                     position=args.position))
    finally:
        service.close()
    if result.dropped:
        print(f"note: left out characters the vocabulary lacks: {result.dropped!r}", file=sys.stderr)
    if args.json:
        print(result.model_dump_json())
    elif isinstance(result, analysis.LensAnswer):
        _print_lens(result)
    elif isinstance(result, analysis.SurpriseAnswer):
        print(report.markdown_table(["milestone", "bits/char", "most surprised by"], [
            [args.ladder[m.milestone].label, f"{m.bits_per_char:.3f}",
             f"{result.text[max(range(len(m.bits)), key=m.bits.__getitem__)]!r}"]
            for m in result.milestones]), end="")
    elif isinstance(result, analysis.NextCharsAnswer):
        for m in result.milestones:
            guesses = ", ".join(f"{c.char!r} {c.probability:.3f}→{c.sampled_probability:.3f}" for c in m.chars)
            print(f"{args.ladder[m.milestone].label}: {guesses}")
    else:
        last = np.array(result.weights)[:, :, -1].mean(1)  # (layers, T): the last query, averaged over heads
        for layer, row in enumerate(last, start=1):
            top = np.argsort(-row)[:5]
            print(f"layer {layer}: " + ", ".join(f"{result.characters[j]!r} {row[j]:.3f}" for j in top))
    return 0


def _print_lens(result: analysis.LensAnswer) -> None:
    ranks = np.array([block.ranks for block in result.blocks])  # (L + 1, N)
    print(report.markdown_table(["after", "bits/char", "‖Δ‖/‖x‖", "true next ranked first"], [
        ["embeddings" if b.after == 0 else f"block {b.after}", f"{b.bits_per_char:.3f}",
         "" if b.change is None else f"{b.change:.3f}", f"{np.mean(row == 1):.0%}"]
        for b, row in zip(result.blocks, ranks, strict=True)]), end="")


def main(argv: list[str] | None = None, ladder: Ladder = LADDER) -> int:
    """The same commands as the console script `toystory-gpt` and as `python -m toystory_gpt`, for ``ladder``'s
    milestones."""
    prog = "toystory-gpt" if Path(sys.argv[0]).name == "toystory-gpt" else "python -m toystory_gpt"
    parser = argparse.ArgumentParser(prog=prog, description="Toy Story GPT tools")
    sub = parser.add_subparsers(dest="command", required=True)
    # Listed for --help; its options are train.py's own, so it is handed them before this parser reads any.
    sub.add_parser("train", help="train the ladder, as train.py does (`train --help` lists its options)")
    ev = sub.add_parser("evaluate", help=cmd_evaluate.__doc__)
    ev.add_argument("--corpus",
                    help=f"path to the screenplay (default: ${corpus.CORPUS_ENV}, else the cache, else download)")
    ev.add_argument("--text", metavar="PATH|NAME",
                    help=f"the plain text they were trained on instead: a path or {', '.join(corpus.NAMED_TEXTS)}")
    ev.add_argument("--weights", help=f"folder or Hub repo id (default: ${hub.WEIGHTS_ENV}, else weights/)")
    ev.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    ev.set_defaults(run=cmd_evaluate, ladder=ladder)
    gen = sub.add_parser("generate", help=cmd_generate.__doc__)
    gen.add_argument("--milestones", type=milestone_list(ladder),
                     help="comma-separated milestone numbers (default: every one that loads)")
    gen.add_argument("--prompt", default=api.DEFAULT_PROMPT, help="text to continue (may be empty)")
    gen.add_argument("--length", type=int, default=api.DEFAULT_LENGTH,
                     help="characters to generate per milestone")
    gen.add_argument("--temperature", type=float, default=api.DEFAULT_TEMPERATURE, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=0,
                     help="sample from the k likeliest characters (0 = all)")
    gen.add_argument("--seed", type=int, default=0, help="same seed and inputs, same text")
    gen.add_argument("--step", default=api.FINAL,
                     help='the weights as they were at this training step (a kept snapshot), or "final" (default)')
    gen.add_argument("--weights", help=f"folder or Hub repo id (default: ${hub.WEIGHTS_ENV}, else weights/)")
    gen.add_argument("--json", action="store_true", help="print a JSON list of {milestone, name, text}")
    gen.set_defaults(run=cmd_generate, ladder=ladder)
    ins = sub.add_parser("inspect", help=cmd_inspect.__doc__)
    deep = analysis.deep_ones(ladder).replace("the ablation", f'"{ABLATION}"')  # 6, 7, 8 or "ablation"
    ins.add_argument("view", choices=["surprise", "next_chars", "attention", "lens"])
    ins.add_argument("--text", required=True, help="the text to read (from the start of a line)")
    ins.add_argument("--milestones", type=milestone_list(ladder),
                     help="comma-separated milestone numbers (default: every one that loads; attention: the last)")
    ins.add_argument("--milestone",
                     help=f"lens: {deep} (default: the last of --milestones)")
    ins.add_argument("--temperature", type=float, default=api.DEFAULT_TEMPERATURE, help="next_chars only")
    ins.add_argument("--top-k", type=int, default=0, help="next_chars only (0 = all)")
    ins.add_argument("--k", type=int, default=5, help="next_chars: how many characters to list")
    ins.add_argument("--position", type=int,
                     help="next_chars, attention: predict text[position] (default: what follows the text)")
    ins.add_argument("--weights", help=f"folder or Hub repo id (default: ${hub.WEIGHTS_ENV}, else weights/)")
    ins.add_argument("--json", action="store_true", help="print the API's JSON result")
    ins.set_defaults(run=cmd_inspect, ladder=ladder)
    publish.add_commands(sub)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        return cmd_train(argv[1:], ladder)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (corpus.CorpusError, api.InvalidRequest, hub.LocationError, weights.WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
