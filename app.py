"""Toy Story GPT in the browser: what the milestones write from the same prompt, streaming side by side.

    python app.py                                   # serves weights/ on http://127.0.0.1:7860
    TOYSTORY_WEIGHTS=/tmp/weights python app.py     # another folder, or a Hub repo id (owner/name)
    gradio app.py                                   # the same, reloading on every code change

On a Hugging Face Space this file runs as is. ``demo`` serves ``$TOYSTORY_WEIGHTS`` (pinned with
``$TOYSTORY_WEIGHTS_REVISION``) or the repo's own ``weights/``; it is built on first use, so importing
this module for ``build_app`` or ``launch`` loads no model. Generation runs on the CPU on any hardware,
ZeroGPU included: it spends no visitor's GPU quota.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

# On ZeroGPU, `spaces` must come before torch: it patches torch at import and refuses to start once CUDA is
# initialised. Elsewhere it changes nothing, and where it is not installed the app runs without it.
if importlib.util.find_spec("spaces"):  # not a try/except: a broken install must fail here, not later
    import spaces  # noqa: F401

from toystory_gpt import hub
from toystory_gpt.ui.page import build_app, launch

__all__ = ["build_app", "launch"]  # and ``demo``, made on first use


@functools.cache
def _demo():
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("toystory_gpt").setLevel(logging.INFO)
    return build_app(hub.resolve())


def __getattr__(name: str):
    if name == "demo":  # what Spaces and `gradio app.py` look up
        return _demo()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    launch(_demo())
