"""Shared fixtures: the texts tests train on and parse (tests/data, shipped), the real screenplay where it is (never
shipped), a tiny trained ladder, and small untrained models."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from toystory_gpt.model import GPT
from toystory_gpt.ui.page import free_port

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "toy-story-1995-screenplay.txt"
# What the quick ladder trains on, and a screenplay in the real one's layout: see tests/data/README.md.
LADDER_TEXT = ROOT / "tests" / "data" / "tiny-shakespeare-excerpt.txt"
SCREENPLAY_SAMPLE = ROOT / "tests" / "data" / "screenplay-sample.txt"


# Property-based tests: the full count by default (make test, CI), a tenth in the edit loop (make test-fast).
settings.register_profile("full", deadline=None)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "full"))
FUZZ_SCALE = 0.1 if settings().max_examples < 100 else 1.0  # for tests that set their own example counts

# Characters of the screenplay's vocabulary, enough to write prompts like "WOODY: " and "BUZZ: ".
TEST_VOCAB = "\n !',.:?ABCDEHINORSTUWYZabcdefghiklmnorstuvwy"


def small_model(milestone, spread: float | None = None, vocab: str = TEST_VOCAB, **overrides) -> GPT:
    """``milestone``'s model at test size (context 16, width 32, at most two blocks), seeded, in eval mode.
    ``spread`` draws every weight from N(0, spread²): fresh weights give near-uniform logits, alike for every token."""
    cfg = milestone.model_config(vocab)
    if cfg.has_attention:
        cfg = dataclasses.replace(cfg, block_size=16, n_embd=32, n_layer=min(cfg.n_layer, 2))
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(cfg, **overrides)).eval()
    if spread:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, spread)
    return model


CHROMIUM = "/usr/bin/chromium"  # Debian's: Playwright's own browser download is not reachable here
# The machine's network is closed: without these, Chromium stalls on its own background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, driven by Playwright; the test is skipped where either is missing."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        yield browser
        browser.close()


def last_logits(model, ids) -> np.ndarray:
    """The model's next-token logits (V,) after ``ids``, by one full forward pass: what decoders must match."""
    with torch.no_grad():
        return model(torch.tensor([ids]))[0][0, -1].numpy()


@pytest.fixture(scope="session")
def corpus_path() -> Path:
    """The real screenplay, for the few tests about that file itself; the others parse SCREENPLAY_SAMPLE."""
    if not CORPUS.is_file():
        pytest.skip(f"the screenplay is not at {CORPUS} (see ../shared/data/README.md); it is never committed")
    return CORPUS


@pytest.fixture(scope="session")
def quick_weights(tmp_path_factory) -> Path:
    """All eight milestones (and the ablation) trained with train.py --quick on LADDER_TEXT: real folders, in
    seconds."""
    import train

    out = tmp_path_factory.mktemp("weights")
    assert train.main(["--quick", "--out", str(out), "--text", str(LADDER_TEXT)]) == 0
    return out


@pytest.fixture(scope="session")
def served_weights(request) -> Path:
    """What the app tests serve: $TOYSTORY_TEST_WEIGHTS if set (e.g. the real weights, for the README
    screenshot), else the quick ladder."""
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


@pytest.fixture(scope="session")
def service(quick_weights):
    """The quick ladder behind the one entry for requests (``api.Service``), with its own engine."""
    from toystory_gpt import api

    served = api.Service.from_folder(quick_weights)
    yield served
    served.close()


@pytest.fixture(scope="session")
def served(served_weights):
    """A service over what the app tests serve: the library side of every app-versus-library comparison."""
    from toystory_gpt import api

    library = api.Service.from_folder(served_weights)
    yield library
    library.close()


@pytest.fixture(scope="module")
def client(app_url):
    """A gradio_client for the app in this process."""
    from gradio_client import Client

    connected = Client(app_url, verbose=False)
    yield connected
    connected.close()
