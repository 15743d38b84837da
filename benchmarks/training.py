"""Training speed: tokens per second of the milestone-8 model under our Trainer's settings against Hugging
Face GPT-2 of identical dimensions, dropout placement, batch, optimizer and autocast, in one run; what
dropout costs (milestone 8's step against milestone 7's, identical but for dropout) in fp32 and bf16; the
estimated FLOP utilisation; and how long the full ``train.py`` build took.

    python benchmarks/training.py            # the full run (about a minute)
    python benchmarks/training.py --quick    # fewer steps: well under a minute
    python benchmarks/training.py --json     # one JSON object instead of the tables
    python benchmarks/training.py --build    # also rerun `train.py --jobs 2` into a temporary folder, timed
    python benchmarks/training.py --compile  # also time our model under torch.compile (~30 s of compiling)

Targets: our model trains at >= 1.5x the tokens/s of HF GPT-2; milestone 8's step <= 1.15x milestone 7's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
from common import ROOT, SCREENPLAY_VOCAB, WEIGHTS, gpt2_twin, machine, machine_line, median_seconds, verdict
from torch.nn import functional as F

from toystory_gpt.batches import BatchSampler
from toystory_gpt.milestones import LADDER
from toystory_gpt.model import GPT
from toystory_gpt.report import markdown_table as table
from toystory_gpt.report import read_summary
from toystory_gpt.trainer import TrainConfig, bf16_supported, learning_rate, make_optimizer, optimisation_step

CORPUS = ROOT.parent / "shared" / "data" / "toy-story-1995-screenplay.txt"
TARGET_RATIO_VS_HF = 1.5
TARGET_DROPOUT_COST = 1.15


def flops_per_token(model: GPT) -> int:
    """Training FLOPs per token: 6 per matmul weight (forward 2, backward 4), plus attention's scores and
    weighted sum over the full context, 12·layers·width·context (the PaLM paper's count, no causal halving)."""
    cfg = model.config
    matmul_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return 6 * matmul_params + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def matmul_peak(dtype: torch.dtype, n: int, runs: int) -> float:
    """Achieved FLOP/s of one large square matmul: a practical ceiling for this machine and thread count."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / median_seconds(lambda: a @ b, runs)


class Stepper:
    """One model's training step, through the Trainer's own ``optimisation_step``, on a shared batch sampler."""

    def __init__(self, model: nn.Module, loss_fn, cfg: TrainConfig, batches: BatchSampler, autocast: bool):
        self.model, self.loss_fn, self.cfg, self.batches = model.train(), loss_fn, cfg, batches
        self.optimizer = make_optimizer(model, cfg)
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
        self.step = 0

    def __call__(self) -> None:
        x, y = self.batches()
        optimisation_step(self.model, self.loss_fn, x, y, self.optimizer, learning_rate(self.step, self.cfg),
                          self.autocast, self.cfg.grad_clip)
        self.step += 1


def tokens_per_second(steppers: dict, tokens_per_step: int, rounds: int, steps: int) -> dict:
    """Median tokens/s of each stepper; they take turns, ``steps`` at a time,
    so drifts in machine load hit both alike."""
    times = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, stepper in steppers.items():
            start = time.perf_counter()
            for _ in range(steps):
                stepper()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: tokens_per_step / statistics.median(t) for name, t in times.items()}


def dropout_cost(cfg: TrainConfig, batches: BatchSampler, rounds: int, steps: int) -> dict:
    """ms per step of milestones 7 and 8 (identical but for dropout), taking turns, in fp32 and, where the CPU
    has it natively, under bf16 autocast."""
    precisions = [False, True] if bf16_supported(torch.device("cpu")) else [False]
    result = {}
    for bf16 in precisions:
        models = {n: GPT(LADDER[n].model_config(SCREENPLAY_VOCAB)) for n in (7, 8)}
        steppers = {n: Stepper(model, lambda x, y, model=model: model(x, y)[1], cfg, batches, bf16)
                    for n, model in models.items()}
        for stepper in steppers.values():
            stepper()  # warmup
        rates = tokens_per_second(steppers, cfg.batch_size * cfg.block_size, rounds, steps)
        ms = {n: cfg.batch_size * cfg.block_size / rate * 1e3 for n, rate in rates.items()}
        result["bf16" if bf16 else "fp32"] = {"milestone7_ms": ms[7], "milestone8_ms": ms[8], "ratio": ms[8] / ms[7]}
    return result


def recorded_build(weights_dir: Path) -> dict | None:
    """The last full build's wall time, from the summary train.py writes, and each model's own training time."""
    summary = read_summary(weights_dir)
    if summary is None:
        return None
    return {"seconds": summary.wall_time, "command": summary.command,
            "models": {r.milestone or "ablation": r.wall_time for r in summary.rows}}


def rerun_build(corpus: Path | None, quick: bool) -> dict:
    """Time `train.py --jobs 2` into a temporary folder (the committed weights are left alone)."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "train.py", "--jobs", "2", "--out", out, *(["--quick"] if quick else []),
                   *(["--corpus", str(corpus)] if corpus else [])]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return {"seconds": seconds, "command": " ".join(["python", *command[1:]])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=WEIGHTS,
                        help="where the last build's summary is read (default: weights/)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help=f"torch threads (default {torch.get_num_threads()}, all cores; "
                             f"a `train.py --jobs 2` worker has 1)")
    parser.add_argument("--rounds", type=int,
                        help="timed rounds per model, the median is reported (default 5, --quick 3)")
    parser.add_argument("--steps", type=int, help="training steps per round (default 5, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="fewer steps: well under a minute")
    parser.add_argument("--build", action="store_true",
                        help="rerun train.py --jobs 2 (with --quick: train.py --quick) and time it")
    parser.add_argument("--corpus", type=Path, default=CORPUS if CORPUS.is_file() else None,
                        help="screenplay for --build (default: ../shared/data's copy if present, "
                             "else train.py's own default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--compile", action="store_true",
                        help="also time milestone 8 under torch.compile (same weights' shapes)")
    args = parser.parse_args(argv)
    rounds, steps = args.rounds or (3 if args.quick else 5), args.steps or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)

    # The dimensions and settings of training milestone 8; speed depends on shapes only, so random tokens stand in
    # for the corpus.
    cfg = TrainConfig()
    torch.manual_seed(cfg.seed)
    ours = GPT(LADDER[8].model_config(SCREENPLAY_VOCAB))
    hf = gpt2_twin(ours.config)
    data = torch.randint(ours.config.vocab_size, (200_000,), generator=torch.Generator().manual_seed(cfg.seed))
    batches = BatchSampler(data, cfg.batch_size, cfg.block_size, torch.Generator().manual_seed(cfg.seed))
    autocast = cfg.bf16 and bf16_supported(torch.device("cpu"))
    steppers = {
        "ours": Stepper(ours, lambda x, y: ours(x, y)[1], cfg, batches, autocast),
        # The same loss on the logits; use_cache=False, or GPT-2 builds a KV cache it would throw away.
        "hf": Stepper(hf, lambda x, y: F.cross_entropy(hf(input_ids=x, use_cache=False).logits.flatten(0, 1),
                                                       y.flatten()),
                      cfg, batches, autocast),
    }
    if args.compile:
        twin = GPT(ours.config)
        compiled = torch.compile(twin)
        steppers["compiled"] = Stepper(twin, lambda x, y: compiled(x, y)[1], cfg, batches, autocast)
    warmup = {}
    for name, stepper in steppers.items():
        start = time.perf_counter()
        # warmup: allocator, oneDNN kernel selection, the optimizer's lazily created state, compiling
        for _ in range(3):
            stepper()
        warmup[name] = time.perf_counter() - start
    tokens_per_step = cfg.batch_size * cfg.block_size
    rates = tokens_per_second(steppers, tokens_per_step, rounds, steps)
    flops = flops_per_token(ours)
    size = 1024 if args.quick else 2048
    peaks = {"fp32": matmul_peak(torch.float32, size, 5), "bf16": matmul_peak(torch.bfloat16, size, 5)}
    peak_name = "bf16" if autocast else "fp32"  # autocast runs the matmuls in bf16, so that is their ceiling
    build = rerun_build(args.corpus, args.quick) if args.build else recorded_build(args.weights)
    facts = machine()
    ratio = rates["ours"] / rates["hf"]
    hf_params = sum(p.numel() for p in hf.parameters())
    costs = dropout_cost(cfg, batches, rounds, steps)
    dropout_met = all(c["ratio"] <= TARGET_DROPOUT_COST for c in costs.values())

    if args.json:
        print(json.dumps({**facts, "batch_size": cfg.batch_size, "block_size": cfg.block_size,
                          "bf16_autocast": autocast,
                          "rounds": rounds, "steps_per_round": steps, "params": ours.num_params, "hf_params": hf_params,
                          "milestone8_tokens_per_s": rates["ours"], "hf_gpt2_tokens_per_s": rates["hf"],
                          "ratio_vs_hf_gpt2": ratio, "flops_per_token": flops,
                          "peak_fp32_flops": peaks["fp32"], "peak_bf16_flops": peaks["bf16"], "peak_used": peak_name,
                          "milestone8_flop_utilisation": flops * rates["ours"] / peaks[peak_name],
                          "hf_gpt2_flop_utilisation": flops * rates["hf"] / peaks[peak_name],
                          "build": build, "target_ratio_vs_hf_gpt2_met": ratio >= TARGET_RATIO_VS_HF,
                          "dropout_cost": costs, "target_dropout_cost_met": dropout_met,
                          **({"compiled_tokens_per_s": rates["compiled"], "compile_warmup_s": warmup["compiled"]}
                             if args.compile else {})}))
        return 0

    rows = [[label, f"{params:,}", f"{rates[key]:,.0f}", f"{tokens_per_step / rates[key]:.3f}",
             f"{flops * rates[key] / 1e9:.1f}", f"{flops * rates[key] / peaks[peak_name]:.1%}"]
            for label, key, params in (("milestone 8 (ours)", "ours", ours.num_params),
                                       ("HF GPT2LMHeadModel", "hf", hf_params),
                                       *([("milestone 8 under torch.compile", "compiled", ours.num_params)]
                                         if args.compile else []))]
    if build is None:
        build_text = f"No build summary in {args.weights} (results.json); --build reruns train.py and times it."
    else:
        how = "rerun just now" if args.build else f"recorded in {args.weights}/results.json"
        total = f"{build['seconds']:.0f} s" if build["seconds"] is not None else "not recorded"
        build_text = f"Full build (`{build['command']}`, {how}): {total}."
        if "models" in build:
            per_model = ", ".join(f"{k}: {v:.0f} s" for k, v in build["models"].items())
            build_text += (f"\nEach model's own training time (wall_time in history.json; two train at once): "
                           f"{per_model}.")
    compile_text = ""
    if args.compile:
        compile_text = (f"\ntorch.compile: {rates['compiled'] / rates['ours']:.2f}× our eager rate, after "
                        f"{warmup['compiled']:.0f} s of warm-up (compiling); the Trainer stays eager "
                        f"unless that is above 1.")
    print(f"""Training speed — {machine_line(facts)}
Milestone 8's dimensions ({ours.config.n_layer} layers, {ours.config.n_head} heads, width {ours.config.n_embd}, \
context {cfg.block_size},
dropout {ours.config.dropout}) and the Trainer's step: batch {cfg.batch_size} × {cfg.block_size}, \
fused AdamW (make_optimizer), gradient
clipping, bf16 autocast {'on' if autocast else 'off (not native on this CPU)'}; random tokens. \
Median of {rounds} rounds × {steps} steps each,
the models taking turns, after 3 warmup steps each.

{table(["model", "params", "tokens/s", "s/step", "GFLOP/s", f"of {peak_name} peak"], rows)}

Ours ÷ HF GPT-2: {ratio:.2f}× (target ≥ {TARGET_RATIO_VS_HF}×: {verdict(ratio >= TARGET_RATIO_VS_HF)}){compile_text}

What dropout costs: milestone 8's step against milestone 7's (the same model but for dropout {ours.config.dropout}),
taking turns, {args.threads} thread{'s' * (args.threads != 1)}:

{table(["precision", "milestone 7 ms/step", "milestone 8 ms/step", "8 ÷ 7"],
       [[p, f"{c['milestone7_ms']:.0f}", f"{c['milestone8_ms']:.0f}", f"{c['ratio']:.2f}×"] for p, c in costs.items()])}
Target ≤ {TARGET_DROPOUT_COST}× in every precision: {verdict(dropout_met)}.
FLOPs per token: {flops / 1e6:.2f} M = 6 × matmul weights + 12 × layers × width × context (same dimensions for both).
Peak = one {size}×{size} matmul's achieved rate here: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, \
bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s;
utilisation is against the {peak_name} figure{', as autocast runs the matmuls in bf16' if autocast else ''}.

{build_text}""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
