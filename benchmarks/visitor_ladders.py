"""The server's memory with visitors' ladders loaded: the app's service over ``weights/``, then one visitor ladder
after another up to the most the server keeps (``visitor_ladders.CAPACITY``), each a full-size ladder (a copy of
``weights/``: the shapes a visitor's full ladder has, give or take its vocabulary) served once, as a visitor's page
would use it.

    python benchmarks/visitor_ladders.py
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
from common import WEIGHTS, machine, machine_line

from toystory_gpt import api
from toystory_gpt.milestones import LADDER
from toystory_gpt.report import markdown_table
from toystory_gpt.serving.visitor_ladders import CAPACITY

MB = 2**20


def main() -> None:
    process = psutil.Process()
    print(machine_line(machine()))
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    service = api.Service.from_folder(WEIGHTS)
    service.engine.warm_up()
    request = dict(milestones=LADDER.numbers, prompt="WOODY:", length=300, temperature=0.8, top_k=0, seed=0)
    service.run(service.generate_request(**request))
    rows = [["the app's ladder only", 0, f"{process.memory_info().rss / MB:.0f}", "–", "–"]]
    base = process.memory_info().rss
    with tempfile.TemporaryDirectory(prefix="visitor-ladders-") as scratch:
        for n in range(1, CAPACITY + 1):
            folder = Path(scratch) / f"ladder-{n}"
            shutil.copytree(WEIGHTS, folder)
            start = time.perf_counter()
            kept = service.ladders.add(folder, f"page-{n}")
            loaded = time.perf_counter() - start
            service.run(service.generate_request(**request, ladder=kept.name))
            rss = process.memory_info().rss
            rows.append([f"+ visitor ladder {n}", n, f"{rss / MB:.0f}", f"{(rss - base) / MB / n:.0f}",
                         f"{loaded:.1f}"])
        try:
            service.ladders.room()
        except Exception as exc:  # noqa: BLE001 - what the next visitor is told
            print(f"a visitor after these is told: {exc}")
        service.close()
    print(markdown_table(["server", "visitor ladders", "RSS MB", "MB per visitor ladder", "load + warm-up s"], rows))


if __name__ == "__main__":
    main()
