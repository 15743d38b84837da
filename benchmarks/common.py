"""What both benchmarks share: the machine's description, the ladder to measure, GPT-2 twins, timing and tables."""

from __future__ import annotations

import importlib.metadata
import platform
import statistics
import time
from pathlib import Path

import torch

from toystory_gpt.cores import usable_cores
from toystory_gpt.milestones import LADDER
from toystory_gpt.model import GPT, GPTConfig
from toystory_gpt.tokenizer import CharTokenizer
from toystory_gpt.weights import SavedModel, load_all

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights"

# The screenplay's characters, as in every weights/*/config.json: random-weight models built from
# them have exactly the trained models' shapes, without needing the (copyrighted) corpus.
SCREENPLAY_VOCAB = "\n !\"#&'(),-./012345678:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The facts a reader needs to compare figures across machines."""
    return {"cpu": cpu_model(), "cores": usable_cores(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "transformers": version("transformers"),
            "onnxruntime": version("onnxruntime"), "threads": torch.get_num_threads()}


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_line(facts: dict) -> str:
    return (f"CPU: {facts['cpu']}, {facts['cores']} cores ({facts['cpu_capability']}); torch {facts['torch']}, "
            f"onnxruntime {facts['onnxruntime']}, transformers {facts['transformers']}; "
            f"{facts['threads']} thread{'s' * (facts['threads'] != 1)}")


def load_ladder(weights_dir: Path) -> tuple[list[SavedModel], str]:
    """All eight milestones, trained from ``weights_dir`` if every one loads, else random weights of the real configs.

    Returns the models and a sentence saying which it is (speed does not depend on the weights'
    values, only on their shapes, so random weights measure the same thing).
    """
    loaded, broken = load_all(weights_dir)
    if len(loaded) == len(LADDER.milestones):
        return loaded, f"trained weights from {weights_dir}"
    why = f"{len(loaded)} of {len(LADDER.milestones)} milestones loaded" if loaded or broken else "no weights found"
    torch.manual_seed(0)
    ladder = [SavedModel(m, GPT(m.model_config(SCREENPLAY_VOCAB)).eval(), CharTokenizer(SCREENPLAY_VOCAB), None,
                         Path(weights_dir) / m.folder) for m in LADDER.milestones]
    return ladder, f"RANDOM weights of the real milestone configs ({why} in {weights_dir})"


def gpt2_twin(config: GPTConfig):
    """Hugging Face GPT-2 with a milestone's vocabulary, context, width, depth, heads and dropout (random weights).

    Untied output head, as ours, so both have the same matrices; GPT-2 always has the feed-forward,
    residuals and layer norms that milestones 3-5 lack, and biases on its q/k/v projection.
    """
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
        from transformers.utils import logging
    except ImportError:
        raise SystemExit("the benchmarks compare against Hugging Face transformers: "
                         "pip install -r requirements-dev.txt") from None
    logging.set_verbosity_error()
    hf_config = GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                           n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=config.dropout,
                           embd_pdrop=config.dropout, attn_pdrop=config.dropout, tie_word_embeddings=False,
                           bos_token_id=None, eos_token_id=None, pad_token_id=0)  # no end token: never stops early
    return GPT2LMHeadModel(hf_config).eval()


def median_seconds(fn, runs: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``runs`` calls, after ``warmup`` untimed ones
    (allocator, caches, lazy init)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
