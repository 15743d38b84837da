"""Dropout whose masks are cheap to draw on a CPU: milestone 8's idea without paying for it in training time.

``torch.nn.Dropout`` on a CPU draws its mask one element at a time from torch's serial generator, which
cost milestone 8's training step about as much as the rest of the step. Here one draw from torch's
generator seeds NumPy's PCG64, which fills the whole mask in bulk with 16-bit numbers. So the masks still
follow from ``torch.manual_seed`` (the same run twice gives the same masks, and a checkpoint of torch's
RNG state resumes them), an element is dropped with probability ``round(p * 65536) / 65536`` (0.1 is
0.100006), and the kept ones are scaled by the exact inverse of the keep probability, so expectations
are unchanged, as with ``nn.Dropout``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

_LEVELS = 1 << 16  # the mask's resolution: one 16-bit number per element


class Dropout(nn.Module):
    """``nn.Dropout(p)`` with bulk-drawn masks on a CPU (``F.dropout`` elsewhere, where masks are cheap)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        dropped = min(round(p * _LEVELS), _LEVELS - 1)  # a p within 2^-17 of 1 still keeps one level
        self.threshold = dropped - _LEVELS // 2  # int16 values below it are dropped
        self.scale = _LEVELS / (_LEVELS - dropped)

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        seed = int(torch.randint(2**62, (1,)))
        bits = np.random.Generator(np.random.PCG64(seed)).integers(-(_LEVELS // 2), _LEVELS // 2 - 1, size=x.shape,
                                                                    dtype=np.int16, endpoint=True)
        return x * torch.from_numpy(bits >= self.threshold) * self.scale

    def extra_repr(self) -> str:
        return f"p={self.p}"
