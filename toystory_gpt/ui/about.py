"""The About tab: what each step of the ladder did and scored, the code of each idea, how to run it, and where the
data comes from."""

from __future__ import annotations

import gradio as gr

from .. import corpus, excerpts, report

TITLE = "About"

CSS = """
/* As many code boxes a row as fit at 420 px, one on a phone; a long line scrolls inside its box. */
#idea-code { display: grid !important; grid-template-columns: repeat(auto-fill, minmax(min(100%, 420px), 1fr));
             gap: 12px; }
#idea-code > .idea-code { min-width: 0 !important; max-width: 100%; }
#idea-code .cm-editor { max-width: 100%; }
"""

HOW_TO = """
## How to run it yourself

```bash
# in a clone of this repository, with Python 3.11
python -m venv .venv && . .venv/bin/activate
pip install -r requirements.txt
python app.py                      # this app, on http://127.0.0.1:7860
python -m toystory_gpt generate --milestones 2,5,8 --prompt "WOODY:" --seed 0   # the same from a terminal
python train.py                    # retrain the ladder into weights/ (CPU is enough)
python train.py --text my-book.txt --out mine   # the same ladder on your own UTF-8 text
TOYSTORY_WEIGHTS=mine python app.py             # ... and this app on it
```

Set `TOYSTORY_WEIGHTS` to serve another weights folder, or a Hugging Face Hub repo id
(pinned with `TOYSTORY_WEIGHTS_REVISION`).
"""

DATA = """
## Data and licence

The models are trained on the final-draft screenplay of *Toy Story* (1995), written by Joss Whedon,
Andrew Stanton, Joel Cohen and Alec Sokolow; the text is copyrighted by its owners. It is **not**
included here: `train.py` downloads it from a public copy (pinned URL, checked SHA-256) or reads a
local file you give it. What the models write imitates that text; it is shown for teaching only.
"""


CODE_INTRO = """
## The code of each idea

One `GPTConfig` switch per step turns its idea on in [`toystory_gpt/model.py`](toystory_gpt/model.py); these are
the lines each switch reaches, read from that file when the app started.
"""


def code_label(excerpt: excerpts.Excerpt) -> str:
    milestone = excerpt.milestone
    value = milestone.config.get(excerpt.switch)
    setting = f"{excerpt.switch}={value!r}" if value is not None else excerpt.switch
    return f"{milestone.label} · {setting}"


def build(context) -> None:
    if context.summary is None or context.summary.corpus.name == corpus.SCREENPLAY_NAME:
        data = DATA
    else:  # another text: the screenplay's licence is not this ladder's
        data = (f"\n## Data\n\nThese models are trained on {context.presentation.described}; the Training tab "
                f"shows its record (file, SHA-256, size, vocabulary).\n")
    gr.Markdown("## The ladder, and what each step did\n\n" + report.ladder_commentary(context.rows, context.ladder))
    gr.Markdown(CODE_INTRO)
    with gr.Row(elem_id="idea-code"):
        for excerpt in excerpts.read(context.ladder):
            # no line numbers of its own: the comments give model.py's
            gr.Code(excerpt.code, language="python", label=code_label(excerpt), interactive=False, min_width=0,
                    show_line_numbers=False, buttons=["copy"], elem_classes="idea-code")
    gr.Markdown(HOW_TO + data)
