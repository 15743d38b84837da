"""The app under load: ``python app.py`` started locally, then N concurrent gradio_client users (each with its
own client) each asking for all eight milestones R times in a row, at the app's default settings.

    python benchmarks/app.py                         # users 1, 16, 32, 64 x 4 requests, length 300, weights/
    python benchmarks/app.py --quick                 # users 1, 4 x 2 requests, length 100: well under a minute
    python benchmarks/app.py --users 32 --requests 5 --weights /tmp/weights
    python benchmarks/app.py --baseline ../baseline  # and the same load on another checkout's app, in this run
    python benchmarks/app.py --json                  # one JSON object instead of the table
    python benchmarks/app.py --users 1 --greedy      # and a visitor beside one client, then one address, holding
                                                     # their fair shares
    python benchmarks/app.py --users 16 --training ../shared/data/tiny-shakespeare.txt   # each stage again while
                                                     # a visitor's ladder trains on that text (the Your text tab)

``--baseline DIR`` serves the ``app.py`` of another checkout (for example the last commit before the serving
engine: ``git worktree add ../baseline e0e3dc2``) on that checkout's own ``weights/`` (the same shapes, so the
same work), after this one, with the same stages, so that both are measured side by side in one run.

Per N: requests, ok, busy (refused because the queue was full: gradio_client's "Queue is full! Please try
again."), other errors, p50/p95/max latency (submit to final text, queueing included), throughput, and the
server's RSS before and after. Only 127.0.0.1 traffic; every request has a timeout; the server started here
is always stopped.

``--greedy`` adds, on this checkout's app, one visitor's requests (as the first stage) beside long generations
(all eight x 2,000) held by others as far as the fair shares let them, twice: one client (one session, as many as
one visitor may hold: api.OWNER_LIMIT), then a script with as many clients from one other address as that
address may hold (api.ADDRESS_LIMIT; sent as X-Forwarded-For, as a Space's proxy does), with the message each
one's next request gets; their p50 is compared with the same visitor's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from common import ROOT, WEIGHTS, machine, machine_line

from toystory_gpt import api
from toystory_gpt.milestones import LADDER
from toystory_gpt.report import markdown_table as table
from toystory_gpt.ui.page import free_port
from toystory_gpt.weights import load_all

START_TIMEOUT = 180      # seconds for the app to load its weights and answer
REQUEST_TIMEOUT = 300    # seconds per request, queueing included
HTTP_TIMEOUT = 120       # seconds for any one HTTP read (the event stream gets a heartbeat every 15 s)
MB = 2**20


DEFAULTS = dict(prompt=api.DEFAULT_PROMPT, length=api.DEFAULT_LENGTH, temperature=api.DEFAULT_TEMPERATURE, top_k=0)


class Server:
    """``python app.py`` of the checkout at ``root`` on 127.0.0.1:<free port>, serving ``weights``; its log goes
    to a temporary file."""

    def __init__(self, weights: Path, root: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="toystory-app-", suffix=".log", delete=False)
        env = {**os.environ, "TOYSTORY_WEIGHTS": str(weights), "GRADIO_SERVER_NAME": "127.0.0.1",
               "GRADIO_SERVER_PORT": str(self.port), "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = str(root)  # that checkout's library, whatever is installed
        self.process = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.ps = psutil.Process(self.process.pid)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"error: the app exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/config", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"error: the app did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")

    def rss(self) -> int:
        """The server's resident memory, its child processes included (Gradio may start a helper)."""
        processes = [self.ps, *self.ps.children(recursive=True)]
        total = 0
        for p in processes:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the process started here (its whole session, so any helper it spawned goes too); never anything else."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 15)
                self.process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, 9)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=20)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def texts_of(answer) -> list[str]:
    """The texts of a /generate answer: this checkout's typed answer, or the list of eight an older release
    (``--baseline``) sends."""
    if isinstance(answer, dict):
        return [written["text"] for written in answer["texts"]]
    return list(answer)


def user(url: str, number: int, requests: int, length: int, barrier: threading.Barrier) -> list[dict]:
    """One visitor with its own client: ``requests`` generations of all eight milestones, one after another."""
    from gradio_client import Client
    from gradio_client.utils import QueueError

    try:  # connecting fetches the app's config; under load that can be slow, but never fatal to the run
        # ssl_verify=False: plain HTTP to 127.0.0.1, and gradio_client makes an httpx client per call, each loading
        # the CA bundle unless told not to verify: the users stand in for browsers elsewhere, so their CPU, on
        # the server's own cores, should be as little as it can be.
        client = Client(url, verbose=False, ssl_verify=False, httpx_kwargs={"timeout": httpx.Timeout(HTTP_TIMEOUT)})
    except Exception as exc:  # noqa: BLE001
        client, failure = None, f"could not connect: {type(exc).__name__}: {exc}"
    try:
        barrier.wait(timeout=REQUEST_TIMEOUT)  # every user connected (or failed to): the load starts at once
    except threading.BrokenBarrierError:
        pass
    if client is None:
        return [{"kind": "error", "seconds": None, "error": failure}] * requests
    outcomes = []
    try:
        for i in range(requests):
            inputs = dict(DEFAULTS, milestones=[m.number for m in LADDER.milestones], length=length,
                          seed=1000 * number + i)
            start = time.perf_counter()
            job = client.submit(**inputs, api_name="/generate")
            try:
                texts = texts_of(job.result(timeout=REQUEST_TIMEOUT))
                ok = [len(t) for t in texts] == [length] * len(LADDER.milestones)
                outcomes.append({"kind": "ok" if ok else "error", "seconds": time.perf_counter() - start,
                                 **({} if ok else {"error": f"wrong lengths {[len(t) for t in texts]}"})})
            except QueueError as exc:
                outcomes.append({"kind": "busy", "seconds": time.perf_counter() - start, "error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - counted and reported, never fatal to the run
                job.cancel()
                outcomes.append({"kind": "error", "seconds": time.perf_counter() - start,
                                 "error": f"{type(exc).__name__}: {exc}"})
    finally:
        client.close()
    return outcomes


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def stage(server: Server, users: int, requests: int, length: int) -> dict:
    """N users at once; their outcomes, latencies and the server's RSS around them."""
    rss_before = server.rss()
    barrier = threading.Barrier(users)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=users) as pool:
        sessions = list(pool.map(lambda n: user(server.url, n, requests, length, barrier), range(users)))
    wall = time.perf_counter() - start  # includes each client's start-up (one config fetch), a small share
    outcomes = [o for session in sessions for o in session]
    ok = sorted(o["seconds"] for o in outcomes if o["kind"] == "ok")
    errors = [o["error"] for o in outcomes if o["kind"] == "error"]
    return {"users": users, "requests": len(outcomes), "ok": len(ok),
            "busy": sum(o["kind"] == "busy" for o in outcomes),
            "errors": len(errors), "error_examples": sorted(set(errors))[:3],
            "p50_s": percentile(ok, 50), "p95_s": percentile(ok, 95), "max_s": ok[-1] if ok else None,
            "wall_s": wall, "requests_per_s": len(ok) / wall,
            "chars_per_s": len(ok) * len(LADDER.milestones) * length / wall,
            "rss_before_mb": rss_before / MB, "rss_after_mb": server.rss() / MB}


GREEDY_LENGTH = 2000  # characters per milestone of the greedy client's generations: they outlast the stage
GREEDY_ADDRESS = "203.0.113.7"  # the greedy clients' address (a documentation address), not the visitor's
GREEDY = dict(DEFAULTS, milestones=[m.number for m in LADDER.milestones], length=GREEDY_LENGTH)


class Holders:
    """``sessions`` clients of one address (``GREEDY_ADDRESS``, sent as X-Forwarded-For as a Space's proxy does),
    each keeping its fair share of long generations written (all eight x ``GREEDY_LENGTH``): a new one as soon as
    one ends, until ``stop``."""

    def __init__(self, server: Server, sessions: int):
        from gradio_client import Client

        self.clients = []
        try:
            for _ in range(sessions + 1):
                self.clients.append(Client(server.url, verbose=False, ssl_verify=False,
                                           headers={"X-Forwarded-For": GREEDY_ADDRESS},
                                           httpx_kwargs={"timeout": httpx.Timeout(HTTP_TIMEOUT)}))
        except Exception:
            for client in self.clients:
                client.close()
            raise
        self.extra = self.clients.pop()  # for the one too many
        self.stopped = threading.Event()
        self.jobs: list = [None] * (sessions * api.OWNER_LIMIT)
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._hold, args=(slot,), daemon=True)
                        for slot in range(len(self.jobs))]
        for thread in self.threads:
            thread.start()

    def _hold(self, slot: int) -> None:
        client = self.clients[slot // api.OWNER_LIMIT]
        seed = 7000 + slot
        while not self.stopped.is_set():
            self.jobs[slot] = job = client.submit(**GREEDY, seed=seed, api_name="/generate")
            if self.stopped.is_set():  # stop() may have cancelled the jobs it saw before this one
                job.cancel()
                return
            try:
                job.result(timeout=REQUEST_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - counted, never fatal to the run
                if not self.stopped.is_set():
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    return
            seed += len(self.jobs)

    def writing(self) -> int:
        """How many of their generations are being written now."""
        return sum(job is not None and job.status().code.name in ("PROCESSING", "ITERATING", "PROGRESS")
                   for job in self.jobs)

    def wait_all_writing(self) -> None:
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while self.writing() < len(self.jobs) and time.monotonic() < deadline and not self.errors:
            time.sleep(0.05)

    def one_too_many(self) -> str | None:
        """What their next generation is told: a session's next, or, once the sessions fill the address's share,
        another session's (None: it was served)."""
        client = self.clients[0] if len(self.jobs) < api.ADDRESS_LIMIT else self.extra
        try:
            client.submit(**GREEDY, seed=7999, api_name="/generate").result(timeout=REQUEST_TIMEOUT)
            return None
        except Exception as exc:  # noqa: BLE001 - what the client is told is the figure
            return str(exc)

    def stop(self) -> None:
        self.stopped.set()
        for job in self.jobs:
            if job is not None:
                job.cancel()
        for thread in self.threads:
            thread.join(timeout=HTTP_TIMEOUT)
        for client in [*self.clients, self.extra]:
            client.close()


def greedy_stage(server: Server, requests: int, length: int, sessions: int = 1) -> dict:
    """One visitor's ``requests`` generations alone, then beside ``Holders``: p50 alone and beside them, how many
    they held while it ran, and what their one too many was told."""
    alone = stage(server, 1, requests, length)
    holders = None
    try:
        holders = Holders(server, sessions)
        holders.wait_all_writing()
        refused = holders.one_too_many()
        before = holders.writing()
        beside = stage(server, 1, requests, length)
        after = holders.writing()
    finally:
        if holders is not None:
            holders.stop()
    ratio = beside["p50_s"] / alone["p50_s"] if alone["p50_s"] and beside["p50_s"] else None
    return {"sessions": sessions, "alone_p50_s": alone["p50_s"], "beside_p50_s": beside["p50_s"], "ratio": ratio,
            "errors": alone["errors"] + beside["errors"] + len(holders.errors), "held": len(holders.jobs),
            "writing_before": before, "writing_after": after, "refused_with": refused,
            "holder_errors": holders.errors[:3]}


class Training:
    """A visitor's ladder training on the server (``/train``, every milestone) while a stage runs; ``stop`` cancels
    it. ``running`` says whether it was still training when asked."""

    def __init__(self, url: str, text: str):
        from gradio_client import Client

        self.client = Client(url, verbose=False, ssl_verify=False)
        self.job = self.client.submit(text=text, milestones=[m.number for m in LADDER.milestones], api_name="/train")
        next(iter(self.job))  # its plan: the training has started

    @property
    def running(self) -> bool:
        return not self.job.done()

    def stop(self) -> None:
        self.job.cancel()
        self.client.close()


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def run_all(server: Server, users: list[int], requests: int, length: int, greedy: bool = False,
            training_text: str | None = None) -> dict:
    """Start ``server``, warm it up, run every stage (each again while a visitor's ladder trains on
    ``training_text``, if given; and the greedy client's, if asked), stop it: its figures."""
    try:
        server.wait_ready()
        warm = stage(server, 1, 1, length)  # first request: lazy imports and allocations, not counted
        if warm["ok"] != 1:
            raise SystemExit(f"error: the warm-up request failed: {warm['error_examples']}\n{server.log_tail()}")
        rss_start = server.rss() / MB
        stages = []
        for n in users:
            stages.append({**stage(server, n, requests, length), "training": "no"})
            if training_text is not None:
                training = Training(server.url, training_text)
                try:
                    figures = stage(server, n, requests, length)
                    figures["training"] = "yes" if training.running else "finished during the stage"
                finally:
                    training.stop()
                time.sleep(2)  # the stopped worker gone before the next stage
                stages.append(figures)
        rss_end = server.rss() / MB
        fair = [greedy_stage(server, requests, length, sessions)
                for sessions in (1, api.ADDRESS_LIMIT // api.OWNER_LIMIT)] if greedy else []
    finally:
        server.stop()
    return {"rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_growth_mb": rss_end - rss_start, "stages": stages,
            **({"greedy": fair} if fair else {})}


def stage_table(figures: dict) -> str:
    return table(["users", "training", "requests", "ok", "busy", "errors", "p50 s", "p95 s", "max s", "req/s",
                  "chars/s", "RSS before MB", "RSS after MB"],
                 [[s["users"], s.get("training", "no"), s["requests"], s["ok"], s["busy"], s["errors"],
                   seconds(s["p50_s"]),
                   seconds(s["p95_s"]), seconds(s["max_s"]), f"{s['requests_per_s']:.2f}", f"{s['chars_per_s']:,.0f}",
                   f"{s['rss_before_mb']:.0f}", f"{s['rss_after_mb']:.0f}"] for s in figures["stages"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS,
                        help="weights folder to serve (default: the repo's weights/)")
    parser.add_argument("--users", default=None,
                        help="comma-separated concurrent user counts (default 1,16,32,64; --quick 1,4)")
    parser.add_argument("--requests", type=int, default=None, help="requests per user (default 4; --quick 2)")
    parser.add_argument("--length", type=int, default=None,
                        help=f"characters per milestone (default {DEFAULTS['length']}; --quick 100)")
    parser.add_argument("--baseline", type=Path, help="another checkout whose app.py to load the same way, after")
    parser.add_argument("--quick", action="store_true", help="a run of well under a minute")
    parser.add_argument("--greedy", action="store_true",
                        help="also one visitor beside a client, then a client address, holding their fair shares "
                             "of long generations")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--training", type=Path, metavar="TEXT",
                        help="run each stage again while a visitor's ladder trains on this text (all milestones)")
    args = parser.parse_args(argv)
    users = [int(n) for n in (args.users or ("1,4" if args.quick else "1,16,32,64")).split(",") if n.strip()]
    requests = args.requests or (2 if args.quick else 4)
    length = args.length or (100 if args.quick else DEFAULTS["length"])
    if not users or min(users) < 1 or requests < 1 or length < 1:
        parser.error("--users, --requests and --length must be positive")
    if args.baseline and not (args.baseline / "app.py").is_file():
        parser.error(f"--baseline {args.baseline}: no app.py there")

    loaded, broken = load_all(args.weights)
    if len(loaded) < len(LADDER.milestones):
        print(f"error: {len(loaded)} of {len(LADDER.milestones)} milestones load from {args.weights}"
              f"{': ' + '; '.join(map(str, broken.values())) if broken else ''}; train them or pass --weights",
              file=sys.stderr)
        return 2
    del loaded

    training_text = args.training.read_text(encoding="utf-8") if args.training else None
    runs = {"this checkout": run_all(Server(args.weights), users, requests, length, args.greedy, training_text)}
    if args.baseline:
        # Its own committed weights: an older checkout may not read this one's records; the models' shapes, and
        # so their speed, are the same.
        base = args.baseline.resolve()
        runs[f"baseline ({args.baseline}, serving its own weights/)"] = run_all(Server(base / "weights", base), users,
                                                                              requests, length)
    figures = {"benchmark": "app", "weights": str(args.weights), "length": length, "requests_per_user": requests,
               "milestones_per_request": len(LADDER.milestones), "machine": machine(), "runs": runs}
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    print(f"The app under load: all {len(LADDER.milestones)} milestones x {length} characters per request, "
          f"{requests} requests per user, served from {args.weights}")
    print(machine_line(figures["machine"]) + " (benchmark process)\n")
    for name, run in runs.items():
        print(f"{name}:\n\n{stage_table(run)}\n")
        print(f"Server RSS after warm-up {run['rss_start_mb']:.0f} MB, after every stage {run['rss_end_mb']:.0f} MB "
              f"(growth {run['rss_growth_mb']:+.0f} MB). Latency is submit to final text, queueing included.\n")
        for fair in run.get("greedy", []):
            ratio = "-" if fair["ratio"] is None else f"{fair['ratio']:.2f}"
            print(f"One visitor's {requests} requests beside {fair['sessions']} client(s) of one other address "
                  f"keeping {fair['held']} all-eight x {GREEDY_LENGTH:,} generations written ({fair['writing_before']}"
                  f" writing as it started, {fair['writing_after']} as it ended): p50 {seconds(fair['beside_p50_s'])}"
                  f" s, alone {seconds(fair['alone_p50_s'])} s ({ratio}x; {fair['errors']} errors"
                  f"{': ' + '; '.join(fair['holder_errors']) if fair['holder_errors'] else ''}). Their one too many "
                  f"was told: {fair['refused_with']!r}\n")
        for s in run["stages"]:
            for error in s["error_examples"]:
                print(f"  {s['users']} users, error: {error}")
    if len(runs) == 2:
        ours, base = (run["stages"] for run in runs.values())
        print(table(["users", "p95 s, this", "p95 s, baseline", "req/s, this", "req/s, baseline", "throughput ×"],
                    [[a["users"], seconds(a["p95_s"]), seconds(b["p95_s"]), f"{a['requests_per_s']:.2f}",
                      f"{b['requests_per_s']:.2f}", f"{a['requests_per_s'] / max(b['requests_per_s'], 1e-9):.1f}×"]
                     for a, b in zip(ours, base)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
