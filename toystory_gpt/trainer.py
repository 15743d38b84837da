"""A training loop that knows nothing about the model beyond ``forward(x, y) -> (logits, loss)``."""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint
from .batches import BatchSampler, evaluation_batches
from .record import Evaluation


def fresh_progress_lock() -> None:
    """In a forked worker, before training: the progress bars' lock made anew (tqdm's own way for workers). The one
    inherited may have been held at the fork by another thread, which the worker does not have: it would wait for
    it forever."""
    tqdm.set_lock(threading.RLock())


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
    # Evaluation steps whose weights are kept besides the best, to show learning: log-spaced, so early
    # progress (fast) and late progress (slow) both show.
    snapshot_steps: tuple[int, ...] = (100, 300, 1000)


@dataclass
class TrainState:
    """Where a training run stands after some steps: what a checkpoint saves besides the tensors."""
    step: int
    best_val: float
    best_step: int
    since_best: int                # evaluations since the last new best (early stopping counts them)
    elapsed: float                 # seconds of training so far, over every resumed session
    history: list[Evaluation]

    @classmethod
    def from_dict(cls, raw: dict) -> TrainState:
        return cls(**{**raw, "history": [Evaluation(**point) for point in raw["history"]]})


@dataclass
class TrainResult:
    best_val_loss: float
    best_step: int
    steps: int                     # steps actually taken (fewer than max_steps after early stopping)
    wall_time: float
    history: list[Evaluation] = field(default_factory=list)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # step -> the weights then
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


def optimisation_step(model: torch.nn.Module, loss_of, x: torch.Tensor, y: torch.Tensor,
                      optimizer: torch.optim.Optimizer,
                      lr: float, autocast: torch.autocast, grad_clip: float) -> float:
    """One optimizer step on the batch (x, y) at learning rate ``lr``; returns its loss.

    ``loss_of(x, y)`` is all it knows of the model, so the training benchmark runs Hugging Face GPT-2
    through exactly the same step as ours.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast:
        loss = loss_of(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()  # waits for the step to finish


def _unobtrusively(model: torch.nn.Module, sample: Callable[[torch.nn.Module], str] | None) -> str | None:
    """``sample(model)`` in eval mode, with every RNG state (and the mode) put back afterwards: dropout masks
    and batches after it are those of a run that never sampled."""
    if sample is None:
        return None
    was_training, cpu_rng = model.training, torch.get_rng_state()
    device = next(model.parameters()).device
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    model.eval()
    try:
        return sample(model)
    finally:
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)
        model.train(was_training)


class Trainer:
    """Trains a model on a token stream, evaluating on the full validation split and keeping the best weights.

    With a ``checkpoint`` folder, the whole training state (weights, optimizer, RNGs, best so far,
    history) is saved there at every evaluation, and a run started with that folder present picks
    up where the saved one stopped: same batches, same dropout masks, same result.
    """

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, train_data: torch.Tensor, val_data: torch.Tensor):
        self.model = model
        self.cfg = cfg
        self.train_data = train_data
        self.val_data = val_data

    def run(self, desc: str = "training", checkpoint_dir: Path | None = None,
            sample: Callable[[torch.nn.Module], str] | None = None,
            progress: Callable[[int, Evaluation | None], None] | None = None) -> TrainResult:
        """Train; on return the model holds its best-by-validation weights.
        Ctrl-C stops early, keeping the best so far. ``sample(model)``, if given, is called at every evaluation
        (in eval mode, every RNG state restored after it, so training goes exactly as without it) and what it
        returns is recorded with that evaluation. ``progress(step, evaluation)``, if given, is called after the
        first evaluation and every step, with the evaluation made at that step (else None)."""
        cfg, model = self.cfg, self.model
        generator = torch.Generator().manual_seed(cfg.seed)
        batches = BatchSampler(self.train_data, cfg.batch_size, cfg.block_size, generator)
        optimizer = make_optimizer(model, cfg)
        device = next(model.parameters()).device
        # Weights, gradients and optimizer state stay fp32; only the forward's matmuls run in bf16.
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and bf16_supported(device))
        if checkpoint_dir is not None and checkpoint.exists(checkpoint_dir):
            state, best_state, snapshots = self._restore(checkpoint_dir, optimizer, generator)
        else:
            val = evaluate(model, self.val_data, cfg.block_size)
            state = TrainState(step=0, best_val=val, best_step=0, since_best=0, elapsed=0.0,
                               history=[Evaluation(0, None, val, 0.0, _unobtrusively(model, sample))])
            best_state, snapshots = copy.deepcopy(model.state_dict()), {}
        if progress is not None:
            progress(state.step, state.history[-1])
        start = time.perf_counter() - state.elapsed
        running, running_n, interrupted = 0.0, 0, False
        model.train()
        bar = tqdm(total=cfg.max_steps, initial=state.step, desc=desc, dynamic_ncols=True, leave=True)
        try:
            while state.step < cfg.max_steps and not (cfg.patience and state.since_best >= cfg.patience):
                x, y = batches()
                running += optimisation_step(model, lambda x, y: model(x, y)[1], x.to(device), y.to(device), optimizer,
                                             learning_rate(state.step, cfg), autocast, cfg.grad_clip)
                state.step += 1
                running_n += 1
                bar.update(1)
                evaluation = None
                if state.step % cfg.eval_interval == 0 or state.step == cfg.max_steps:
                    val = evaluate(model, self.val_data, cfg.block_size)
                    state.elapsed = time.perf_counter() - start
                    state.history.append(Evaluation(state.step, running / running_n, val, state.elapsed,
                                                    _unobtrusively(model, sample)))
                    running, running_n = 0.0, 0
                    if val < state.best_val:
                        state.best_val, state.best_step, state.since_best = val, state.step, 0
                        best_state = copy.deepcopy(model.state_dict())
                    else:
                        state.since_best += 1
                    if state.step in cfg.snapshot_steps:
                        snapshots[state.step] = copy.deepcopy(model.state_dict())
                    bar.set_postfix(train=f"{state.history[-1].train_loss:.3f}", val=f"{val:.3f}",
                                    best=f"{state.best_val:.3f}")
                    if checkpoint_dir is not None:
                        self._save(checkpoint_dir, state, best_state, snapshots, optimizer, generator)
                    evaluation = state.history[-1]
                if progress is not None:
                    progress(state.step, evaluation)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        model.load_state_dict(best_state)
        model.eval()
        return TrainResult(state.best_val, state.best_step, state.step, time.perf_counter() - start,
                           state.history, snapshots, interrupted)

    def _save(self, folder: Path, state: TrainState, best_state: dict, snapshots: dict, optimizer,
              generator: torch.Generator) -> None:
        optim_tensors, optim_settings = checkpoint.split_optimizer(optimizer)
        tensors = {**{f"model.{k}": v for k, v in self.model.state_dict().items()},
                   **{f"best.{k}": v for k, v in best_state.items()}, **optim_tensors,
                   **{f"snapshot.{step}.{k}": v for step, weights in snapshots.items() for k, v in weights.items()},
                   "rng.batches": generator.get_state(), "rng.torch": torch.get_rng_state()}
        device = next(self.model.parameters()).device
        if device.type == "cuda":  # dropout masks on a GPU come from its own generator
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
        checkpoint.save(folder, tensors, dict(asdict(state), optimizer=optim_settings, train_config=asdict(self.cfg)))

    def _restore(self, folder: Path, optimizer, generator: torch.Generator) -> tuple[TrainState, dict, dict]:
        tensors, state = checkpoint.load(folder)
        saved_cfg, cfg = state.pop("train_config"), json.loads(json.dumps(asdict(self.cfg)))
        if saved_cfg != cfg:
            changed = sorted(k for k in cfg if saved_cfg.get(k) != cfg[k])
            raise checkpoint.CheckpointError(f"checkpoint {folder} was made with other training settings "
                                             f"({', '.join(changed)}); delete it to start over")
        device = next(self.model.parameters()).device

        def part(prefix: str) -> dict:
            return {k[len(prefix):]: v.to(device) for k, v in tensors.items() if k.startswith(prefix)}

        try:
            self.model.load_state_dict(part("model."))
            checkpoint.join_optimizer(optimizer, tensors, state.pop("optimizer"))
        except (RuntimeError, ValueError, KeyError) as exc:
            raise checkpoint.CheckpointError(f"checkpoint {folder} does not fit this model ({exc}); "
                                             f"delete it to start over") from None
        generator.set_state(tensors["rng.batches"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        steps = {int(k.split(".")[1]) for k in tensors if k.startswith("snapshot.")}
        return TrainState.from_dict(state), part("best."), {step: part(f"snapshot.{step}.") for step in sorted(steps)}
