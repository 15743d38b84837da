"""Visitors' own ladders, kept for their pages only: each under an unguessable name, at most ``capacity`` of them,
each dropped when its page closes or ``ttl`` seconds after it was last used, its folder deleted with it."""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

CAPACITY = 8            # visitor ladders on the server at once: ~100 MB each (docs/your-text.md)
TTL = 60 * 60           # seconds a ladder is kept after its last use


class Full(RuntimeError):
    """The server holds as many visitor ladders as it may; the message says when one frees."""


class Unknown(KeyError):
    """No visitor ladder by this name (never made, dropped, or expired)."""


@dataclass
class Kept(Generic[T]):
    name: str
    owner: str | None          # the page (Gradio session) that trained it: its closing drops the ladder
    folder: Path
    served: T                  # what serves it (an api.Service)
    used: float = field(default=0.0)


class VisitorLadders(Generic[T]):
    """The ladders, by name. ``open(folder)`` makes what serves a ladder, ``close(served)`` frees it."""

    def __init__(self, open: Callable[[Path], T], close: Callable[[T], None], capacity: int = CAPACITY,
                 ttl: float = TTL, clock: Callable[[], float] = time.monotonic):
        self._open, self._close, self.capacity, self.ttl, self._clock = open, close, capacity, ttl, clock
        self._kept: dict[str, Kept[T]] = {}
        self._gone: dict[str, float] = {}  # pages closed (when), so that a ladder loading for one is dropped
        self._lock = threading.Lock()

    def room(self) -> None:
        """Full if no ladder more can be kept now (the expired ones are dropped first)."""
        self.expire()
        with self._lock:
            if len(self._kept) >= self.capacity:
                oldest = min(kept.used for kept in self._kept.values())
                wait = max(1, round((oldest + self.ttl - self._clock()) / 60))
                raise Full(f"The server already keeps {self.capacity} visitors' ladders, its most; one frees when its "
                           f"page closes, or within {wait} min. Try again then.")

    def add(self, folder: Path, owner: str | None) -> Kept[T]:
        """Serve the ladder in ``folder`` under a new unguessable name, instead of any the page ``owner`` had (Full
        if there is no room; Unknown if the page closed while it loaded: it is dropped)."""
        self.room()
        served = self._open(folder)
        kept = Kept(secrets.token_urlsafe(16), owner, Path(folder), served, self._clock())
        with self._lock:
            self._kept[kept.name] = kept
            gone = owner in self._gone
        if owner is not None:  # a page uses one ladder, its latest: an earlier one only takes room
            self._drop_where(lambda other: other.owner == owner and (gone or other is not kept))
        if gone:
            raise Unknown(kept.name)
        return kept

    def get(self, name: str) -> Kept[T]:
        """The ladder called ``name``, marked as used now; Unknown if there is none (or it expired)."""
        self.expire()
        with self._lock:
            kept = self._kept.get(name) if isinstance(name, str) else None
            if kept is None:
                raise Unknown(name)
            kept.used = self._clock()
            return kept

    def all(self) -> list[Kept[T]]:
        with self._lock:
            return list(self._kept.values())

    def __len__(self) -> int:
        return len(self._kept)

    def drop(self, name: str) -> None:
        with self._lock:
            kept = self._kept.pop(name, None)
        if kept is not None:
            self._close(kept.served)
            shutil.rmtree(kept.folder, ignore_errors=True)

    def drop_owner(self, owner: str) -> None:
        """Drop every ladder the page ``owner`` trained (it closed), and any that finishes loading for it later."""
        with self._lock:
            self._gone[owner] = self._clock()
        self._drop_where(lambda kept: kept.owner == owner)

    def expire(self) -> None:
        now = self._clock()
        with self._lock:
            self._gone = {owner: when for owner, when in self._gone.items() if now - when <= self.ttl}
        self._drop_where(lambda kept: now - kept.used > self.ttl)

    def close(self) -> None:
        self._drop_where(lambda kept: True)

    def _drop_where(self, dropped: Callable[[Kept[T]], bool]) -> None:
        """Drop every ladder kept now for which ``dropped`` is true."""
        for kept in self.all():
            if dropped(kept):
                self.drop(kept.name)
