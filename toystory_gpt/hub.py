"""Where the trained weights come from: a local folder, or a Hugging Face Hub repo fetched into the local cache.

Configuration only (an argument, else ``$TOYSTORY_WEIGHTS``), never a web request: the app decides
once, at start-up, which folder it serves. ``$TOYSTORY_WEIGHTS_REVISION`` pins a Hub repo to a
branch, tag or commit.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.utils import HFValidationError, validate_repo_id

WEIGHTS_ENV = "TOYSTORY_WEIGHTS"
REVISION_ENV = "TOYSTORY_WEIGHTS_REVISION"
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class LocationError(RuntimeError):
    """The configured weights location is neither a folder nor a reachable Hub repo."""


def is_repo_id(text: str) -> bool:
    """Whether ``text`` reads as a Hub repo id, ``owner/name``."""
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return text.count("/") == 1


def resolve(location: str | os.PathLike | None = None, revision: str | None = None) -> Path:
    """The local folder to load from: ``location``, else ``$TOYSTORY_WEIGHTS``, else the repo's ``weights/``.

    A path that is an existing folder is used as is; otherwise ``owner/name`` is a Hub model repo,
    downloaded (or found in the Hub cache) at ``revision``, else ``$TOYSTORY_WEIGHTS_REVISION``, else main.
    """
    location = location or os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS_DIR
    if Path(location).is_dir() or not is_repo_id(str(location)):
        return Path(location)  # a missing folder simply holds no milestones; the caller says so
    revision = revision or os.environ.get(REVISION_ENV) or None
    try:
        return Path(snapshot_download(str(location), revision=revision))
    except Exception as exc:  # offline, no such repo or revision, gated...: one clear message for all
        raise LocationError(f"{location!r} is not a local folder, and fetching it from the Hugging Face Hub"
                            f"{f' at revision {revision!r}' if revision else ''} failed: {exc}") from exc
