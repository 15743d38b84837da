"""Shared fixtures: the real screenplay from ../shared/data and a tiny trained ladder."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "toy-story-1995-screenplay.txt"


@pytest.fixture(scope="session")
def corpus_path() -> Path:
    if not CORPUS.is_file():
        pytest.skip(f"the screenplay is not at {CORPUS} (see ../shared/data/README.md)")
    return CORPUS


@pytest.fixture(scope="session")
def quick_weights(tmp_path_factory, corpus_path) -> Path:
    """All eight milestones (and the ablation) trained with train.py --quick: real folders, in seconds."""
    import train

    out = tmp_path_factory.mktemp("weights")
    assert train.main(["--quick", "--out", str(out), "--corpus", str(corpus_path)]) == 0
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def served_weights(request) -> Path:
    """What the app tests serve: $TOYSTORY_TEST_WEIGHTS if set (e.g. the real weights, for the README screenshot), else the quick ladder."""
    if folder := os.environ.get("TOYSTORY_TEST_WEIGHTS"):
        return Path(folder)
    return request.getfixturevalue("quick_weights")


@pytest.fixture(scope="session")
def app_url(served_weights):
    """The web app, launched in this process on a free local port."""
    import app

    demo = app.build_app(served_weights)
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield url.rstrip("/")
    demo.close()
