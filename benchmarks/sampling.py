"""Sampling speed: characters per second for every milestone, with our KV-cached sampler (ONNX Runtime,
and the same in PyTorch), a naive full recompute of the same weights and Hugging Face GPT-2 ``generate``
of the same dimensions, all in one run; the wall time of all eight milestones generating together, as
the app runs them; and what one decode step of milestone 8 costs in each runtime.

    python benchmarks/sampling.py              # the full run (about a minute)
    python benchmarks/sampling.py --quick      # fewer runs: well under a minute
    python benchmarks/sampling.py --json       # one JSON object instead of the tables
    python benchmarks/sampling.py --compile    # also time decoding.step under torch.compile (~20 s more)

Targets: milestone 8 at >= 5,000 chars/s and >= 10x HF generate; all eight x 500 characters in <= 0.5 s.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

# the repo root, so `python benchmarks/sampling.py` works
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import WEIGHTS, gpt2_twin, load_ladder, machine, machine_line, median_seconds, verdict  # noqa: E402
from toystory_gpt import decoding, onnx_decode  # noqa: E402
from toystory_gpt.compare import Comparison  # noqa: E402
from toystory_gpt.decoding import refill_length  # noqa: E402
from toystory_gpt.milestones import LADDER  # noqa: E402
from toystory_gpt.report import markdown_table as table  # noqa: E402
from toystory_gpt.sampler import generate  # noqa: E402

PROMPT = "WOODY: "      # 7 characters, so GPT-2 with a 128-position table has room for 121 new tokens
TEMPERATURE = 0.8
TOP_K = 0               # sample from the whole softmax, as the app does by default
SEED = 0

TARGET_CHARS_PER_S = 5000
TARGET_RATIO_VS_HF = 10
TARGET_ALL_EIGHT_S = 0.5


def ours(saved, length: int, use_cache: bool, onnx: bool = True) -> None:
    for _ in generate(saved.model, saved.tokenizer, PROMPT, length, TEMPERATURE, TOP_K, SEED, use_cache,
                      exported=saved.exported if onnx else None):
        pass


def hf_generate(model, prompt_ids: torch.Tensor, new_tokens: int) -> None:
    torch.manual_seed(SEED)
    model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), max_new_tokens=new_tokens,
                   do_sample=True, temperature=TEMPERATURE, top_k=TOP_K, use_cache=True)


def measure(ladder, length: int, runs: int) -> dict:
    """chars/s of each milestone three ways: ours, naive (no cache) and, for the attention milestones, GPT-2."""
    figures = {}
    for saved in ladder:
        n, config = saved.milestone.number, saved.model.config
        row = {"params": saved.model.num_params,
               "chars_per_s": length / median_seconds(lambda: ours(saved, length, True), runs),
               "naive_chars_per_s": length / median_seconds(lambda: ours(saved, length, False), runs)}
        if config.has_attention:  # the unigram and bigram have no transformer to twin (nor a cache to run elsewhere)
            row["torch_chars_per_s"] = length / median_seconds(lambda: ours(saved, length, True, onnx=False), runs)
            hf = gpt2_twin(config)
            prompt_ids = torch.tensor([saved.tokenizer.encode(PROMPT).ids])
            new_tokens = config.block_size - prompt_ids.size(1)  # GPT-2 cannot run past its position table
            row["hf_new_tokens"] = new_tokens
            row["hf_generate_chars_per_s"] = new_tokens / median_seconds(
                lambda: hf_generate(hf, prompt_ids, new_tokens), runs)
            row["ratio_vs_hf_generate"] = row["chars_per_s"] / row["hf_generate_chars_per_s"]
        row["ratio_vs_naive"] = row["chars_per_s"] / row["naive_chars_per_s"]
        figures[n] = row
    return figures


def step_costs(saved, runs: int, compile_too: bool) -> dict:
    """Microseconds per one-token decode step of one model, halfway through its window, in each runtime;
    plus the one-off cost (seconds) of the export or compile that each runtime needs first."""
    model = saved.model
    half = refill_length(model.config.block_size)
    cached = decoding.Cached(model)
    cached.encode([0] * half)
    cache = cached.cache
    args = (torch.zeros(1, dtype=torch.long), torch.tensor([half]), cache.mask, tuple(cache.keys), tuple(cache.values))
    steps = 500

    def per_step(fn) -> float:
        def loop():
            for _ in range(steps):
                fn()
        return median_seconds(loop, runs) / steps * 1e6

    with torch.no_grad():
        costs = {"eager_us": per_step(lambda: decoding.step(model, *args))}
    start = time.perf_counter()
    try:
        exported = onnx_decode.OnnxDecoding(model)  # a fresh export, to time it (the loaded model keeps its own)
    except Exception as error:  # what makes the sampler fall back to PyTorch
        costs["onnx_unavailable"] = repr(error)
    else:
        costs["onnx_setup_s"] = time.perf_counter() - start
        decoder = exported.decoder()
        decoder.encode([0] * half)

        def onnx_step():
            decoder.cache.length = half  # the same position every time, as for the others
            decoder.advance(0)
        costs["onnx_us"] = per_step(onnx_step)
    if compile_too:
        compiled = torch.compile(functools.partial(decoding.step, model), fullgraph=True, dynamic=False)
        start = time.perf_counter()
        compiled(*args)
        costs["compile_setup_s"] = time.perf_counter() - start
        costs["compile_us"] = per_step(lambda: compiled(*args))
    return costs


def all_eight_seconds(comparison: Comparison, length: int, runs: int) -> float:
    """All eight milestones generating ``length`` characters each, taking turns in this one thread, as the app does."""
    request = comparison.request([m.number for m in LADDER.milestones], PROMPT, length, TEMPERATURE, TOP_K, SEED)
    return median_seconds(lambda: comparison.run(request), runs)


def fmt(rate: float) -> str:
    return f"{rate:,.0f}"


def report(figures: dict, all_eight: float, steps: dict, facts: dict, source: str, length: int, runs: int,
           block_size: int) -> str:
    rows = []
    for n, f in figures.items():
        hf = "hf_generate_chars_per_s" in f
        rows.append([LADDER.milestones[n - 1].label, f"{f['params']:,}", fmt(f["chars_per_s"]),
                     fmt(f["torch_chars_per_s"]) if hf else "—", fmt(f["naive_chars_per_s"]),
                     fmt(f["hf_generate_chars_per_s"]) if hf else "—", f"{f['ratio_vs_naive']:.1f}×",
                     f"{f['ratio_vs_hf_generate']:.1f}×" if hf else "—"])
    step_rows = [["GPT.step in PyTorch, eager", f"{steps['eager_us']:.0f}", "—"]]
    if "onnx_us" in steps:
        step_rows.append(["exported to ONNX Runtime (what the sampler uses)", f"{steps['onnx_us']:.0f}",
                          f"{steps['onnx_setup_s']:.2f} s export (step + prefill)"])
    else:
        step_rows.append(["exported to ONNX Runtime", "unavailable", steps["onnx_unavailable"][:80]])
    if "compile_us" in steps:
        step_rows.append(["torch.compile(fullgraph, static shapes)", f"{steps['compile_us']:.0f}",
                          f"{steps['compile_setup_s']:.1f} s compile"])
    m8 = figures[8]
    new_tokens = m8["hf_new_tokens"]
    targets = [[f"milestone 8 ≥ {TARGET_CHARS_PER_S:,} chars/s", fmt(m8["chars_per_s"]),
                verdict(m8["chars_per_s"] >= TARGET_CHARS_PER_S)],
               [f"milestone 8 ≥ {TARGET_RATIO_VS_HF}× HF generate", f"{m8['ratio_vs_hf_generate']:.1f}×",
                verdict(m8["ratio_vs_hf_generate"] >= TARGET_RATIO_VS_HF)],
               [f"all eight × 500 chars ≤ {TARGET_ALL_EIGHT_S} s",
                f"{all_eight:.3f} s" + ("" if length == 500 else f" ({length} chars)"),
                verdict(all_eight <= TARGET_ALL_EIGHT_S) if length == 500 else "(target is for 500)"]]
    return f"""Sampling speed — {machine_line(facts)}
Models: {source}.
Each figure: prompt {PROMPT!r}, temperature {TEMPERATURE}, top-k off, one stream, median of {runs} runs \
after one warmup run.

{table(["milestone", "params", "ours chars/s", "ours in PyTorch", "naive chars/s", "HF generate chars/s",
        "ours ÷ naive", "ours ÷ HF"], rows)}

- ours: toystory_gpt.sampler.generate, {length} characters: KV cache, each step and each re-encode run by ONNX Runtime;
  when the {block_size}-token window is full the Decoder keeps its newest half and re-encodes it in one batched pass.
- ours in PyTorch: the same, with onnx=False (GPT.prefill and GPT.step run op by op from Python).
- naive: the same function and weights with use_cache=False: the whole window re-run for every character
  (milestones 1-2 only ever look at the last character, so for them naive and ours are the same code).
- HF generate: GPT2LMHeadModel (random weights) with the milestone's n_layer/n_head/n_embd, n_positions = block size,
  so it can only generate {new_tokens} new tokens after the {len(PROMPT)}-token prompt: its rate is per token over those
  {new_tokens} (call overhead included). GPT-2 always has the feed-forward, norms and residuals \
that milestones 3-5 lack.

All eight × {length} characters as the app runs them (Comparison.run: the milestones take turns, one thread): \
{all_eight:.3f} s

One decode step of milestone 8 (one token, {block_size // 2} cached), µs, median of {runs} runs × 500 steps:

{table(["runtime", "µs per step", "one-off cost"], step_rows)}

{table(["target", "measured", ""], targets)}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=WEIGHTS,
                        help="weights folder (default: weights/; random weights if incomplete)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the app samples with one thread)")
    parser.add_argument("--runs", type=int, help="timed runs per figure, the median is reported (default 5, --quick 1)")
    parser.add_argument("--length", type=int, default=500, help="characters per generation (default 500)")
    parser.add_argument("--quick", action="store_true", help="fewer runs: well under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--compile", action="store_true",
                        help="also time decoding.step under torch.compile (~20 s more)")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 5)
    torch.set_num_threads(args.threads)

    ladder, source = load_ladder(args.weights)
    facts = machine()
    with torch.inference_mode():
        figures = measure(ladder, args.length, runs)
        all_eight = all_eight_seconds(Comparison(ladder, {}), args.length, runs)  # what Comparison.from_folder builds
        steps = step_costs(ladder[7], runs, args.compile)

    if args.json:
        m8 = figures[8]
        flat = {f"milestone{n}_{key}": value for n, f in figures.items() for key, value in f.items()}
        print(json.dumps({**facts, "trained_weights": source.startswith("trained"), "length": args.length,
                          "runs": runs, **flat, "ratio_vs_hf_generate": m8["ratio_vs_hf_generate"],
                          "ratio_vs_naive": m8["ratio_vs_naive"], "all_eight_seconds": all_eight,
                          **{f"milestone8_step_{key}": value for key, value in steps.items()},
                          "target_milestone8_chars_per_s_met": m8["chars_per_s"] >= TARGET_CHARS_PER_S,
                          "target_ratio_vs_hf_generate_met": m8["ratio_vs_hf_generate"] >= TARGET_RATIO_VS_HF,
                          "target_all_eight_seconds_met": (all_eight <= TARGET_ALL_EIGHT_S if args.length == 500
                                                           else None)}))
    else:
        print(report(figures, all_eight, steps, facts, source, args.length, runs, ladder[-1].model.config.block_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
