"""The About tab: what each step of the ladder did and scored, how to run it, and where the data comes from."""

from __future__ import annotations

import gradio as gr

from .. import corpus, report

TITLE = "About"

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


def build(context) -> None:
    if context.summary is None or context.summary.corpus.name == corpus.SCREENPLAY_NAME:
        data = DATA
    else:  # another text: the screenplay's licence is not this ladder's
        data = (f"\n## Data\n\nThese models are trained on {context.presentation.described}; the Training tab "
                f"shows its record (file, SHA-256, size, vocabulary).\n")
    gr.Markdown("## The ladder, and what each step did\n\n" + report.ladder_commentary(context.rows) + "\n" + HOW_TO
                + data)
