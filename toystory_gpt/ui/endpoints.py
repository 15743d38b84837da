"""The app's API endpoints, all registered here (``register``): ``/generate``, the Inside views
``/surprise``, ``/next_chars``, ``/attention`` and ``/logit_lens``, and ``/train`` (a visitor's ladder, which
the others then serve when their ``ladder`` input names it). Each builds its request model from the raw
inputs and asks the one ``api.Service``; its answer is that service's typed answer, whose shape the API page and
``/gradio_api/info`` show. A bad request becomes the message Gradio shows (or sends to an API client) in place of a
traceback. The tabs' own events are private: removing a tab removes no endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import html
import inspect
import typing
from collections.abc import AsyncIterator, Callable

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


def address(visitor: gr.Request | None) -> str | None:
    """The visitor's network address, for its fair share: behind a proxy (a Space) the connection's own is the
    proxy's, the same for everyone, so it is the entry the nearest proxy appended to X-Forwarded-For, the rightmost;
    those left of it are whatever the client sent, which anyone can forge. Without the header, the connection's."""
    if visitor is None:
        return None
    forwarded = (getattr(visitor, "headers", {}).get("x-forwarded-for") or "").rsplit(",", 1)[-1].strip()
    return forwarded or getattr(getattr(visitor, "client", None), "host", None)


def generate(service: api.Service):
    """The ``/generate`` handler: an async generator, so a waiting visitor holds no thread while the engine
    writes; it yields the texts so far, at most every UPDATE_INTERVAL seconds, and the finished ones last."""

    async def generate(milestones: list[int], prompt: str = api.DEFAULT_PROMPT, length: int = api.DEFAULT_LENGTH,
                       temperature: float = api.DEFAULT_TEMPERATURE, top_k: int = 0, seed: int = 0,
                       step: int | str = api.FINAL, ladder: str | None = None,
                       visitor: gr.Request | None = None) -> AsyncIterator[api.GenerateAnswer]:
        """Continue the prompt with each chosen milestone, with its final weights or as it was at training step
        ``step``, of the app's ladder or a visitor's ``ladder`` (/train's last update names it); the chosen
        milestones' texts in ladder order, and the prompt's characters left out."""
        owner = visitor.session_hash if visitor is not None else None
        # The visitor's share is held from here, so that Stop ends the request even while it is being checked.
        with answered(), service.visit(owner, address(visitor)) as visit:
            # In a thread: a snapshot's first request loads it from disk, and the event loop serves every stream.
            request = await asyncio.to_thread(service.generate_request, milestones=milestones, prompt=prompt,
                                              length=length, temperature=temperature, top_k=top_k, seed=seed,
                                              step=step, ladder=ladder)
            if dropped := service.dropped(request):
                gr.Warning(f"Left out characters the models have never seen: "
                           f"{html.escape(shown_characters(dropped))}")
            # Gradio closes only the handler's own generator (a closed tab): closing this one closes the stream now.
            async with contextlib.aclosing(service.stream(request, UPDATE_INTERVAL, visit)) as answers:
                async for answer in answers:
                    yield answer

    return generate


def stop(service: api.Service):
    """The Stop button's handler: ends the page's generations on the server, each with its texts so far as its
    last update (a request still being checked, with none), so the page sees them finish as if written.

    Gradio's own ``cancels=`` alone is not enough for a running stream: its ``/cancel`` completes the event
    with an empty message that, when the event stream lags the page's requests, reaches the page after the
    page has marked the event cancelled and shows "Error" on every card."""

    async def stop(visitor: gr.Request) -> None:
        await service.stop(visitor.session_hash)

    return stop


def views(service: api.Service) -> list[Callable]:
    """The Inside views as plain-JSON endpoints, /surprise, /next_chars, /attention and /logit_lens."""

    def surprise(text: str, milestones: list[int], ladder: str | None = None) -> analysis.SurpriseAnswer:
        """Bits of surprise at each character of text (read from the start of a line), per milestone."""
        with answered():
            return service.surprise(service.parse(api.TextRequest, text=text, milestones=milestones, ladder=ladder))

    def next_chars(text: str, milestones: list[int], temperature: float = api.DEFAULT_TEMPERATURE, top_k: int = 0,
                   k: int = 5, position: int | None = None, ladder: str | None = None) -> analysis.NextCharsAnswer:
        """The k likeliest next characters per milestone, raw and as sampled, at a position (default: the end)."""
        with answered():
            return service.next_chars(service.parse(api.NextCharsRequest, text=text, milestones=milestones,
                                                    temperature=temperature, top_k=top_k, k=k, position=position,
                                                    ladder=ladder))

    def attention(text: str, milestone: int, position: int | None = None,
                  ladder: str | None = None) -> analysis.AttentionAnswer:
        """Attention weights (layers, heads, T, T) over the context of a position (default: the end)."""
        with answered():
            return service.attention(service.parse(api.AttentionRequest, text=text, milestone=milestone,
                                                   position=position, ladder=ladder))

    def logit_lens(text: str, milestone: int | str, ladder: str | None = None) -> analysis.LensAnswer:
        """A deep model's bits at each character read after each block (0: the embeddings); milestone: a number
        or "ablation"."""
        with answered():
            return service.logit_lens(service.parse(api.LensRequest, text=text, milestone=milestone, ladder=ladder))

    return [surprise, next_chars, attention, logit_lens]


def train(service: api.Service):
    """The ``/train`` handler: a visitor's ladder trained on a text, its progress streamed."""

    async def train(text: str, milestones: list[int], visitor: gr.Request) -> AsyncIterator[api.TrainingUpdate]:
        """Train the chosen milestones on text (the checks of `train.py --text`, and the length limit); streams the
        training's progress; the last update's "ladder" is the name to pass as `ladder` to /generate, /surprise,
        /logit_lens... It is kept while this client's session lasts, at most an hour after its last use."""
        owner = visitor.session_hash
        with answered():
            request = service.parse(api.TrainRequest, text=text, milestones=milestones)
            corpus = await asyncio.to_thread(service.text_of, request)
            running = service.start_training(corpus, request.milestones, owner)
            async for update in service.train(running, owner):
                yield update

    return train


def typed(fn: Callable) -> Callable:
    """``fn`` with its answer's type in its signature, for the API page: Gradio reads the return annotation as
    written (a string, under postponed annotations), and a stream's is what it yields."""
    answer = typing.get_type_hints(fn)["return"]
    if typing.get_origin(answer) is AsyncIterator:
        (answer,) = typing.get_args(answer)
    fn.__signature__ = inspect.signature(fn).replace(return_annotation=answer)
    return fn


def register(service: api.Service) -> None:
    """Every API endpoint of the app; call inside the app's Blocks."""
    # Every visitor's generation at once: the engine batches them, and an async handler holds no thread. Not one
    # concurrency group with the Compare tab's Generate: Gradio then leaves a page's event pending after Stop
    # ends it while it is being checked (tests/test_browser.py); each has the engine's capacity.
    gr.api(typed(generate(service)), api_name="generate", concurrency_limit=service.engine.capacity)
    for view in views(service):
        gr.api(typed(view), api_name=view.__name__)
    # Not limited here: Service.start_training refuses a second training while one runs.
    gr.api(typed(train(service)), api_name="train", concurrency_limit=None)
