"""Batches of token windows: random ones for training, every position once for evaluation."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class BatchSampler:
    """Draws (x, y) batches of random windows, y being x shifted by one character."""

    def __init__(self, data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator):
        if len(data) <= block_size:
            raise ValueError(f"training split ({len(data)} tokens) is shorter than one window ({block_size + 1})")
        self.data = data
        self.batch_size = batch_size
        self.generator = generator
        self.offsets = torch.arange(block_size + 1)  # built once; one gather per batch

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self.data) - len(self.offsets) + 1, (self.batch_size, 1), generator=self.generator)
        windows = self.data[starts + self.offsets]  # (B, T+1)
        return windows[:, :-1], windows[:, 1:]


def evaluation_batches(data: torch.Tensor, block_size: int,
                       batch_size: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The whole split as non-overlapping windows, so every character is predicted exactly once.

    The last window is shorter when the split does not divide evenly; it comes in a batch of its own.
    """
    n = len(data) - 1
    full = n // block_size
    if full:
        x = data[: full * block_size].view(full, block_size)
        y = data[1 : full * block_size + 1].view(full, block_size)
        for i in range(0, full, batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
    if n % block_size:
        yield data[full * block_size : n].unsqueeze(0), data[full * block_size + 1 :].unsqueeze(0)
