"""Sampling speed: characters per second for every milestone, with our KV-cached decoding (ONNX Runtime,
and the same in PyTorch), a naive full recompute of the same weights and Hugging Face GPT-2 ``generate``
of the same dimensions, all in one run; the wall time of all eight milestones generating together through
the serving engine, as the app runs them; what one decode step of milestone 8 costs in each runtime; and
how a step scales with the batch the engine runs (1 to 64 sequences of one model at once), beside its arithmetic
floor: the multiply-adds a character needs, at the rate this machine's matmul reaches on the same rows in this run.

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

import numpy as np
import torch
from common import WEIGHTS, gpt2_twin, load_ladder, machine, machine_line, median_seconds, verdict

from toystory_gpt import api, decoding, onnx_decode
from toystory_gpt.decoding import KVCache, refill_length
from toystory_gpt.milestones import LADDER
from toystory_gpt.pool import Pool, Sequence, generate
from toystory_gpt.report import markdown_table as table
from toystory_gpt.sampler import Settings, pick
from toystory_gpt.serving import Engine, Models

PROMPT = "WOODY: "      # 7 characters, so GPT-2 with a 128-position table has room for 121 new tokens
TEMPERATURE = 0.8
TOP_K = 0               # sample from the whole softmax, as the app does by default
SEED = 0

TARGET_CHARS_PER_S = 5000
TARGET_RATIO_VS_HF = 10
TARGET_ALL_EIGHT_S = 0.5


BATCHES = (1, 4, 16, 32, 64)


def ours(saved, length: int, decoding_: decoding.Decoding) -> None:
    generate(saved.model, saved.tokenizer, PROMPT, length, TEMPERATURE, TOP_K, SEED, decoding=decoding_)


@torch.inference_mode()
def naive(saved, length: int) -> None:
    """The whole window through ``forward`` for every character: what a KV cache saves."""
    window, block = saved.tokenizer.encode(PROMPT).ids, saved.model.config.block_size
    rng = np.random.default_rng(SEED)
    settings = Settings([TEMPERATURE], [TOP_K], saved.model.config.vocab_size)
    for _ in range(length):
        logits = saved.model(torch.tensor([window[-block:]]))[0][0, -1].numpy()
        window.append(int(pick(logits[None], settings, np.array([rng.random()]))[0]))


def hf_generate(model, prompt_ids: torch.Tensor, new_tokens: int) -> None:
    torch.manual_seed(SEED)
    model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), max_new_tokens=new_tokens,
                   do_sample=True, temperature=TEMPERATURE, top_k=TOP_K, use_cache=True)


def measure(models: Models, length: int, runs: int) -> dict:
    """chars/s of each milestone three ways: ours, naive (no cache) and, for the attention milestones, GPT-2."""
    figures = {}
    for n, saved in models.saved.items():
        config = saved.model.config
        row = {"params": saved.model.num_params,
               "chars_per_s": length / median_seconds(lambda: ours(saved, length, models.decoding(n)), runs),
               "naive_chars_per_s": length / median_seconds(lambda: naive(saved, length), runs)}
        if config.has_attention:  # the unigram and bigram have no transformer to twin (nor a cache to run elsewhere)
            torch_path = decoding.torch_decoding(saved.model)
            row["torch_chars_per_s"] = length / median_seconds(lambda: ours(saved, length, torch_path), runs)
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
    """Microseconds per one-token decode step of one model (one sequence, halfway through its window), in each
    runtime; plus the one-off cost (seconds) of the export or compile that each runtime needs first."""
    model = saved.model
    half = refill_length(model.config.block_size)
    torch_path = decoding.TorchDecoding(model)
    cache = KVCache(model.config, torch_path.min_rows)
    _, keys, values = torch_path.encode(np.zeros((1, half), np.int64))
    cache.fill(np.array([0]), keys, values)
    idx, pos = np.zeros(1, np.int64), cache.lengths[:1].copy()
    args = (torch.zeros(1, dtype=torch.long), torch.tensor([half]), tuple(torch.from_numpy(k[:1]) for k in cache.keys),
            tuple(torch.from_numpy(v[:1]) for v in cache.values))
    steps = 500

    def per_step(fn) -> float:
        def loop():
            for _ in range(steps):
                fn()
        return median_seconds(loop, runs) / steps * 1e6

    with torch.no_grad():
        costs = {"eager_us": per_step(lambda: decoding.step(model, *args)),
                 "torch_path_us": per_step(lambda: torch_path.advance(cache, 1, idx, pos))}
    start = time.perf_counter()
    try:
        exported = onnx_decode.OnnxDecoding(model)  # a fresh export, to time it
    except Exception as error:  # what makes decoding fall back to PyTorch
        costs["onnx_unavailable"] = repr(error)
    else:
        costs["onnx_setup_s"] = time.perf_counter() - start
        costs["onnx_us"] = per_step(lambda: exported.advance(cache, 1, idx, pos))
    if compile_too:
        compiled = torch.compile(functools.partial(decoding.step, model), fullgraph=True, dynamic=False)
        start = time.perf_counter()
        compiled(*args)
        costs["compile_setup_s"] = time.perf_counter() - start
        costs["compile_us"] = per_step(lambda: compiled(*args))
    return costs


def flops_per_character(config) -> int:
    """The multiply-adds (x2) one character costs a milestone: every layer's projections, feed-forward and attention
    over the whole window (what a step computes), and the output head. The unigram and bigram look a row up."""
    if not config.has_attention:
        return 0
    C, S = config.n_embd, config.block_size
    layer = 2 * C * 3 * C + 2 * C * C + 2 * 2 * S * C + (2 * 2 * C * 4 * C if config.feed_forward else 0)
    return config.n_layer * layer + 2 * C * config.vocab_size


def gemm_rates(width: int, runs: int) -> dict[int, float]:
    """FLOP/s of one thread's (B, width) x (width, 3 width) matmul in PyTorch, per batch size B: the rate a model's
    largest projection reaches on that many rows."""
    rates = {}
    for batch in BATCHES:
        a, b = torch.randn(batch, width), torch.randn(width, 3 * width)
        calls = 2000

        def loop():
            for _ in range(calls):
                torch.mm(a, b)
        rates[batch] = 2 * batch * width * 3 * width * calls / median_seconds(loop, runs)
    return rates


def batch_scaling(models: Models, runs: int, ticks: int = 200) -> dict:
    """Per milestone and batch size: µs per engine tick of one pool (sample, step, cache writes, refills) with
    that many sequences writing at once, through the decoding the engine uses, and the characters/s it gives."""
    figures = {}
    for n in models.saved:
        pool = Pool(models.decoding(n), max(BATCHES))
        tokenizer = models.saved[n].tokenizer
        for batch in BATCHES:
            def run():
                for seed in range(batch):
                    pool.join(Sequence.start(tokenizer, PROMPT, ticks, TEMPERATURE, TOP_K, seed))
                while pool.busy:
                    pool.tick()
            us = median_seconds(run, runs) / ticks * 1e6
            figures[n, batch] = {"us_per_step": us, "chars_per_s": batch * 1e6 / us}
    width = max(m.model.config.n_embd for m in models.saved.values())
    rates = gemm_rates(width, runs)
    for (n, batch), f in figures.items():
        flops = flops_per_character(models.saved[n].model.config)
        f["flops_per_char"] = flops
        f["floor_us"] = batch * flops / rates[batch] * 1e6
        f["gemm_gflops"] = rates[batch] / 1e9
        f["gemm_width"] = width
        f["over_floor"] = f["us_per_step"] / f["floor_us"] if flops else None
    return figures


def encode_costs(models: Models, runs: int, rows: int = 32) -> dict:
    """Milliseconds to encode ``rows`` windows of one length with milestone 8's engine decoding, together in one
    batch and one at a time: prompts of joining requests (7 characters) and full-window re-encodes (half a block)."""
    decoding_ = models.decoding(8)
    figures = {}
    for name, length in (("prompt", len(PROMPT)), ("refill", refill_length(decoding_.config.block_size))):
        windows = np.random.default_rng(0).integers(0, decoding_.config.vocab_size, (rows, length))
        figures[name] = {
            "length": length,
            "together_ms": median_seconds(lambda: decoding_.encode(windows), runs) * 1e3,
            "alone_ms": median_seconds(lambda: [decoding_.encode(windows[i:i + 1]) for i in range(rows)], runs) * 1e3}
    return figures


def all_eight_seconds(service: api.Service, length: int, runs: int) -> float:
    """All eight milestones generating ``length`` characters each for one visitor, through the engine."""
    request = service.generate_request(milestones=[m.number for m in LADDER.milestones], prompt=PROMPT, length=length,
                                       temperature=TEMPERATURE, top_k=TOP_K, seed=SEED)
    return median_seconds(lambda: service.run(request), runs)


def fmt(rate: float) -> str:
    return f"{rate:,.0f}"


def report(figures: dict, all_eight: float, steps: dict, scaling: dict, encodes: dict, facts: dict, source: str,
           length: int, runs: int, block_size: int) -> str:
    width = scaling[8, BATCHES[0]]["gemm_width"]  # the floor's matmul: the widest model's largest projection
    gemm = ", ".join(f"B={b}: {scaling[8, b]['gemm_gflops']:.0f}" for b in BATCHES)
    rows = []
    for n, f in figures.items():
        hf = "hf_generate_chars_per_s" in f
        rows.append([LADDER.milestones[n - 1].label, f"{f['params']:,}", fmt(f["chars_per_s"]),
                     fmt(f["torch_chars_per_s"]) if hf else "—", fmt(f["naive_chars_per_s"]),
                     fmt(f["hf_generate_chars_per_s"]) if hf else "—", f"{f['ratio_vs_naive']:.1f}×",
                     f"{f['ratio_vs_hf_generate']:.1f}×" if hf else "—"])
    step_rows = [["decoding.step in PyTorch, eager", f"{steps['eager_us']:.0f}", "—"],
                 ["TorchDecoding.advance (16 rows, what snapshots use)", f"{steps['torch_path_us']:.0f}", "—"]]
    if "onnx_us" in steps:
        step_rows.append(["exported to ONNX Runtime (what the engine uses)", f"{steps['onnx_us']:.0f}",
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

- ours: toystory_gpt.serving.generate, {length} characters, one sequence: KV cache, each step and each re-encode run by
  ONNX Runtime; when the {block_size}-token window is full it keeps its newest half and re-encodes it in one pass.
- ours in PyTorch: the same with decoding.TorchDecoding (prefill and step run op by op from Python).
- naive: the same weights, the whole window through forward for every character (milestones 1-2 only ever look at
  the last character).
- HF generate: GPT2LMHeadModel (random weights) with the milestone's n_layer/n_head/n_embd, n_positions = block size,
  so it can only generate {new_tokens} new tokens after the {len(PROMPT)}-token prompt: its rate is per token over those
  {new_tokens} (call overhead included). GPT-2 always has the feed-forward, norms and residuals \
that milestones 3-5 lack.

All eight × {length} characters for one visitor, as the app runs them (through the engine, its two worker threads): \
{all_eight:.3f} s

One decode step of milestone 8 (one token, {block_size // 2} cached), µs, median of {runs} runs × 500 steps:

{table(["runtime", "µs per step", "one-off cost"], step_rows)}

The engine's batches: one pool's tick (every sequence writes one character: sampling, step, cache writes,
re-encodes) with B sequences of one model at once, µs per tick / characters per second, one thread,
median of {runs} runs × 200 ticks:

{table(["milestone", *(f"B={b}" for b in BATCHES)],
       [[LADDER[n].label, *(f"{scaling[n, b]['us_per_step']:,.0f} µs / {fmt(scaling[n, b]['chars_per_s'])}"
                            for b in BATCHES)] for n in figures])}

The same ticks beside their arithmetic floor: tick µs / floor µs (ratio), where the floor is B × the milestone's
FLOPs a character (projections, feed-forward, attention over all {block_size} slots, head) at the rate one
thread's (B, {width}) × ({width}, {3 * width}) matmul reaches in this run ({gemm} GFLOP/s):

{table(["milestone", "kFLOP a char", *(f"B={b}" for b in BATCHES)],
       [[LADDER[n].label, f"{scaling[n, 1]['flops_per_char'] / 1e3:,.0f}",
         *(f"{scaling[n, b]['us_per_step']:,.0f} / {scaling[n, b]['floor_us']:,.0f} "
           f"({scaling[n, b]['over_floor']:.1f}×)" if scaling[n, b]['over_floor'] else
           f"{scaling[n, b]['us_per_step']:,.0f} / — (no matmul)" for b in BATCHES)] for n in figures])}

Encoding 32 windows of one length with milestone 8 (ONNX Runtime), together in one batch or one at a time:

{table(["windows", "length", "together ms", "one at a time ms"],
       [[name, e["length"], f"{e['together_ms']:.1f}", f"{e['alone_ms']:.1f}"] for name, e in encodes.items()])}

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
    models = Models(ladder, {})
    with torch.inference_mode():
        figures = measure(models, args.length, runs)
        steps = step_costs(ladder[7], runs, args.compile)
        scaling = batch_scaling(models, runs)
        encodes = encode_costs(models, runs)
    service = api.Service(models, Engine(models))
    try:
        all_eight = all_eight_seconds(service, args.length, runs)
    finally:
        service.close()

    if args.json:
        m8 = figures[8]
        flat = {f"milestone{n}_{key}": value for n, f in figures.items() for key, value in f.items()}
        print(json.dumps({**facts, "trained_weights": source.startswith("trained"), "length": args.length,
                          "runs": runs, **flat, "ratio_vs_hf_generate": m8["ratio_vs_hf_generate"],
                          "ratio_vs_naive": m8["ratio_vs_naive"], "all_eight_seconds": all_eight,
                          **{f"milestone8_step_{key}": value for key, value in steps.items()},
                          "batch_scaling": [{"milestone": n, "batch": b, **f} for (n, b), f in scaling.items()],
                          "encode": encodes,
                          "target_milestone8_chars_per_s_met": m8["chars_per_s"] >= TARGET_CHARS_PER_S,
                          "target_ratio_vs_hf_generate_met": m8["ratio_vs_hf_generate"] >= TARGET_RATIO_VS_HF,
                          "target_all_eight_seconds_met": (all_eight <= TARGET_ALL_EIGHT_S if args.length == 500
                                                           else None)}))
    else:
        print(report(figures, all_eight, steps, scaling, encodes, facts, source, args.length, runs,
                     ladder[-1].model.config.block_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
