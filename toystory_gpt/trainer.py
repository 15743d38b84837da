"""A training loop that knows nothing about the model beyond ``forward(x, y) -> (logits, loss)``."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .batches import BatchSampler, evaluation_batches


@dataclass
class TrainConfig:
    """Optimisation settings; the attention milestones all share one of these so the ladder is fair."""
    max_steps: int = 2000
    batch_size: int = 32
    block_size: int = 128
    learning_rate: float = 3e-3
    min_lr_ratio: float = 0.1      # cosine decay ends at this fraction of the peak
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    eval_interval: int = 100
    patience: int = 5              # stop after this many evaluations without a new best (0: never)
    seed: int = 1337
    bf16: bool = True              # bfloat16 autocast for the forward pass, where the CPU/GPU supports it natively


@dataclass
class TrainResult:
    best_val_loss: float
    best_step: int
    steps: int                     # steps actually taken (fewer than max_steps after early stopping)
    wall_time: float
    history: list[dict] = field(default_factory=list)  # {step, train_loss, val_loss, elapsed}
    interrupted: bool = False


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: torch.Tensor, block_size: int) -> float:
    """Mean cross-entropy (nats/char) over every position of ``data``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for x, y in evaluation_batches(data, block_size):
        _, loss = model(x.to(device), y.to(device))
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the peak at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.learning_rate * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def bf16_supported(device: torch.device) -> bool:
    """Native bfloat16 only: emulated on an older CPU, autocast would slow training down."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.cpu._is_avx512_bf16_supported()


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # Decay matrices only: shrinking biases, norms' gains or the unigram's logits buys nothing.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=cfg.betas, fused=fused)


class Trainer:
    """Trains a model on a token stream, evaluating on the full validation split and keeping the best weights."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, train_data: torch.Tensor, val_data: torch.Tensor):
        self.model = model
        self.cfg = cfg
        self.train_data = train_data
        self.val_data = val_data

    def run(self, desc: str = "training") -> TrainResult:
        """Train; on return the model holds its best-by-validation weights. Ctrl-C stops early, keeping the best so far."""
        cfg, model = self.cfg, self.model
        generator = torch.Generator().manual_seed(cfg.seed)
        batches = BatchSampler(self.train_data, cfg.batch_size, cfg.block_size, generator)
        optimizer = make_optimizer(model, cfg)
        device = next(model.parameters()).device
        # Weights, gradients and optimizer state stay fp32; only the forward's matmuls run in bf16.
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and bf16_supported(device))
        start = time.perf_counter()
        best_val = evaluate(model, self.val_data, cfg.block_size)
        best_state, best_step, since_best = copy.deepcopy(model.state_dict()), 0, 0
        history = [{"step": 0, "train_loss": None, "val_loss": best_val, "elapsed": 0.0}]
        running, running_n, step, interrupted = 0.0, 0, 0, False
        model.train()
        bar = tqdm(total=cfg.max_steps, desc=desc, dynamic_ncols=True, leave=True)
        try:
            while step < cfg.max_steps:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, cfg)
                x, y = batches()
                with autocast:
                    _, loss = model(x.to(device), y.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                step += 1
                running += loss.item()
                running_n += 1
                bar.update(1)
                if step % cfg.eval_interval == 0 or step == cfg.max_steps:
                    val = evaluate(model, self.val_data, cfg.block_size)
                    history.append({"step": step, "train_loss": running / running_n, "val_loss": val,
                                    "elapsed": time.perf_counter() - start})
                    running, running_n = 0.0, 0
                    if val < best_val:
                        best_val, best_step, since_best = val, step, 0
                        best_state = copy.deepcopy(model.state_dict())
                    else:
                        since_best += 1
                    bar.set_postfix(train=f"{history[-1]['train_loss']:.3f}", val=f"{val:.3f}", best=f"{best_val:.3f}")
                    if cfg.patience and since_best >= cfg.patience:
                        break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        model.load_state_dict(best_state)
        model.eval()
        return TrainResult(best_val, best_step, step, time.perf_counter() - start, history, interrupted)
