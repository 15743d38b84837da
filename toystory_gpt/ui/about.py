"""The About tab: what each step of the ladder did and scored, how to run it, and where the data comes from."""

from __future__ import annotations

import gradio as gr

from .. import report

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
```

Set `TOYSTORY_WEIGHTS` to serve another weights folder, or a Hugging Face Hub repo id
(pinned with `TOYSTORY_WEIGHTS_REVISION`).

## Data and licence

The models are trained on the final-draft screenplay of *Toy Story* (1995), written by Joss Whedon,
Andrew Stanton, Joel Cohen and Alec Sokolow; the text is copyrighted by its owners. It is **not**
included here: `train.py` downloads it from a public copy (pinned URL, checked SHA-256) or reads a
local file you give it. What the models write imitates that text; it is shown for teaching only.
"""


def build(context) -> None:
    gr.Markdown("## The ladder, and what each step did\n\n" + report.ladder_commentary(context.rows) + "\n" + HOW_TO)
