"""The CPU cores this process may use: what training's jobs and the engine's threads are sized by."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (its affinity, where the system says; else every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
