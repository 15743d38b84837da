"""The app's API endpoints, defined once: ``/generate`` (bound to the Compare tab's Generate button) and the
Inside views ``/surprise``, ``/next_chars``, ``/attention`` and ``/logit_lens``. Each builds its ``api``
request model from the raw inputs and asks the one ``api.Service``; a bad request becomes the message Gradio
shows (or sends to an API client) in place of a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import AsyncIterator

import gradio as gr

from .. import analysis, api

UPDATE_INTERVAL = 0.05  # seconds between screen updates while streaming: 20 a second looks live and stays light


def shown_characters(characters: str) -> str:
    """The characters for a message, space-separated; invisible ones and lone surrogates as U+XXXX.

    A lone surrogate (which JSON can carry) would otherwise break the server's event stream: it cannot be encoded.
    """
    return " ".join(c if c.isprintable() else f"U+{ord(c):04X}" for c in characters)


@contextlib.contextmanager
def answered():
    """A bad request is the visitor's message, not a traceback in the server's log."""
    try:
        yield
    except (api.InvalidRequest, api.GenerationError, analysis.Unanswerable) as exc:
        raise gr.Error(str(exc), print_exception=False) from None


def generate(service: api.Service):
    """The ``/generate`` handler: an async generator, so a waiting visitor holds no thread while the engine
    writes; it yields all eight texts in one update, at most every UPDATE_INTERVAL seconds."""

    async def generate(milestones, prompt, length, temperature, top_k, seed, step=api.FINAL,
                       visitor: gr.Request | None = None) -> AsyncIterator[list[str]]:
        """Continue the prompt with each chosen milestone, with its final weights or as it was at training step
        ``step``; returns one text per milestone of the ladder, in order ("" where not chosen)."""
        with answered():
            # In a thread: a snapshot's first request loads it from disk, and the event loop serves every stream.
            request = await asyncio.to_thread(service.generate_request, milestones=milestones, prompt=prompt,
                                              length=length, temperature=temperature, top_k=top_k, seed=seed,
                                              step=step)
            if dropped := service.dropped(request):
                gr.Warning(f"Left out characters the models have never seen: "
                           f"{html.escape(shown_characters(dropped))}")
            owner = visitor.session_hash if visitor is not None else None
            async for texts in service.stream(request, UPDATE_INTERVAL, owner):
                yield texts

    return generate


def stop(service: api.Service):
    """The Stop button's handler: ends the page's generations on the server, each with its texts so far as its
    last update, so the page sees them finish as if written.

    Gradio's own ``cancels=`` alone is not enough for a running stream: its ``/cancel`` completes the event
    with an empty message that, when the event stream lags the page's requests, reaches the page after the
    page has marked the event cancelled and shows "Error" on every card."""

    async def stop(visitor: gr.Request) -> None:
        await service.stop(visitor.session_hash)

    return stop


def register_views(service: api.Service) -> None:
    """The Inside views as plain-JSON endpoints, /surprise, /next_chars, /attention and /logit_lens."""

    def surprise(text: str, milestones: list[int]) -> dict:
        """Bits of surprise at each character of text (read from the start of a line), per milestone."""
        with answered():
            return service.surprise(api.TextRequest.parse(text=text, milestones=milestones))

    def next_chars(text: str, milestones: list[int], temperature: float = 0.8, top_k: int = 0, k: int = 5,
                   position: int | None = None) -> dict:
        """The k likeliest next characters per milestone, raw and as sampled, at a position (default: the end)."""
        with answered():
            return service.next_chars(api.NextCharsRequest.parse(text=text, milestones=milestones,
                                                                 temperature=temperature, top_k=top_k, k=k,
                                                                 position=position))

    def attention(text: str, milestone: int, position: int | None = None) -> dict:
        """Attention weights (layers, heads, T, T) over the context of a position (default: the end)."""
        with answered():
            return service.attention(api.AttentionRequest.parse(text=text, milestone=milestone, position=position))

    def logit_lens(text: str, milestone: int | str) -> dict:
        """A deep model's bits at each character read after each block (0: the embeddings); 6-8 or "ablation"."""
        with answered():
            return service.logit_lens(api.LensRequest.parse(text=text, milestone=milestone))

    for fn in (surprise, next_chars, attention, logit_lens):
        gr.api(fn, api_name=fn.__name__)
