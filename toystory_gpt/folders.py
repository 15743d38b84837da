"""Replace a folder (or a file) as a whole, so that a kill at any moment leaves the old version or the new one.

The new contents are built in a sibling ``.NAME.tmp-PID``; then the old folder is renamed aside to
``.NAME.old-PID`` and the new one renamed in. A directory cannot be renamed over a non-empty one,
so there is one instant between those two renames with only the backup on disk: ``current`` reads
through it, and the next ``write`` puts it back first.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def _backups(folder: Path) -> list[Path]:
    return sorted(folder.parent.glob(f".{folder.name}.old-*"), key=lambda p: p.stat().st_mtime)


def current(folder: Path) -> Path:
    """The folder, or, if a kill fell between the two renames, the previous version it was replacing."""
    folder = Path(folder)
    if not folder.exists() and (backups := _backups(folder)):
        return backups[-1]
    return folder


def write(folder: Path, fill: Callable[[Path], None]) -> None:
    """Call ``fill(tmp)`` to build the new contents in an empty ``tmp`` folder, then swap them in for ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if not folder.exists() and (backups := _backups(folder)):
        os.replace(backups[-1], folder)  # finish undoing an interrupted swap before starting a new one
    for stale in [*folder.parent.glob(f".{folder.name}.tmp-*"), *_backups(folder)]:
        shutil.rmtree(stale, ignore_errors=True)  # left by runs killed mid-write
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def write_file(path: Path, text: str) -> None:
    """Write a text file whole or not at all: built beside its place, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
