"""Serving: the loaded milestones and one engine that batches every visitor's decoding.

``Models`` owns what was loaded (final weights, snapshots made on first use, each model's decoding);
``Pool`` holds one model's sequence slots and their KV cache and advances them all in one batched step;
``Engine`` runs the pools from one thread per core, a tick at a time, for every request at once.
"""

from .engine import Engine, Generation, GenerationError
from .models import FINAL, Models
from .pool import Pool, Sequence, generate

__all__ = ["Engine", "FINAL", "Generation", "GenerationError", "Models", "Pool", "Sequence", "generate"]
