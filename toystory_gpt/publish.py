"""Publish to the Hugging Face Hub: the app as a Space, the weights as a model repo, checked before anything is sent.

    python -m toystory_gpt publish space OWNER/NAME [--hardware zero-a10g] [--weights-repo OWNER/NAME] [--private]
                                        [--dry-run]
    python -m toystory_gpt publish model OWNER/NAME [--weights DIR] [--private] [--dry-run]

Neither ``git push`` nor a bare ``gradio deploy`` is safe here: the Hub refuses binaries pushed without
Xet/LFS, and ``gradio deploy`` uploads the whole folder, ``.venv/`` and the copyrighted screenplay in
``data/cache/`` included. So the files are picked from an allow-list, checked (by path, and for runs of
screenplay text when the screenplay is on this machine), and exactly the checked list is sent in one
commit through ``HfApi``, which stores binaries in the Hub's own storage.

A Space is put on its hardware before any file is sent (created on it, or an existing one moved to it), so
when the Hub refuses the hardware to the account nothing has been uploaded.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, SpaceHardware, get_token
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import filter_repo_objects
from tqdm import tqdm

from . import corpus, hub, weights

PROJECT_DIR = Path(__file__).resolve().parent.parent
# What the Space runs: app.py, the package it imports (``*`` spans subfolders) and the weights it serves.
# train.py, tests/, benchmarks/ and docs/ are left out: a Space only serves, and every file sent is one more to
# check; its page shows README.md, whose one image is the screenshot.
SPACE_CODE = ["app.py", "toystory_gpt/*.py", "requirements.txt", "README.md", "LICENSE", "docs/screenshot.png"]
SPACE_WEIGHTS = ["weights/*"]
# Hidden entries are never the project's: training's .checkpoints/ and its half-written or replaced
# folders (.milestoneN.tmp-PID, .milestoneN.old-PID), virtualenvs, editor and tool files.
HIDDEN = [".*", "*/.*"]
# The longest verbatim run of screenplay text in any file the Space sends is 62 characters (a one-line example
# in corpus.py), in the committed model samples 21: a pasted paragraph is longer than 100, a line or two of a
# well-trained model's sample shorter.
RUN = 100
# The Hub's hardware flavours. ZeroGPU ("zero-a10g", whatever GPU is behind it now) is the only one a free
# personal account can host a Gradio Space on (2 of them); cpu-basic needs a PRO or Team plan, the rest billing.
HARDWARE = [flavour.value for flavour in SpaceHardware]
ZERO_GPU = SpaceHardware.ZERO_A10G.value
FREE_CPU = SpaceHardware.CPU_BASIC.value
# The Hub refusing the account a Space or its hardware: bad token, payment required, forbidden, a name taken meanwhile.
REFUSED = (401, 402, 403, 409)
_WHITESPACE = re.compile(r"(?:\s|\\[nrt])+")  # JSON's escaped line breaks count as whitespace too


class PublishError(RuntimeError):
    """Publishing was refused before anything was sent; the message says why and what to do."""


@dataclass(frozen=True)
class Upload:
    """Exactly what one publish sends: ``files`` (paths relative to ``root``) to one Hub repo."""
    repo_id: str
    repo_type: str  # "space" or "model"
    root: Path
    files: list[str]
    variables: dict[str, str] = field(default_factory=dict)  # a Space's environment, e.g. where its weights are
    hardware: str | None = None  # a Space's hardware flavour, one of HARDWARE

    def size(self) -> int:
        """Total bytes sent."""
        return sum((self.root / name).stat().st_size for name in self.files)

    def listing(self) -> str:
        """One line per file with its size, then the total."""
        lines = [f"{_size((self.root / name).stat().st_size):>9}  {name}" for name in self.files]
        return "\n".join([*lines, f"{len(self.files)} files, {_size(self.size())} in all"]) + "\n"


def _size(n: int) -> str:
    return tqdm.format_sizeof(n, "B", 1000)


def project_files(root: Path) -> list[str]:
    """Every file under ``root`` that git counts as the project's (tracked, or untracked and not ignored).

    Outside a git checkout (an unpacked archive), every file outside hidden folders.
    """
    try:
        command = ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
        listed = subprocess.run(command, capture_output=True, check=True).stdout.decode()
        return sorted(name for name in listed.split("\0") if name and (root / name).is_file())
    except (OSError, subprocess.CalledProcessError):
        found = []
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]  # never walk a .venv's thousands of files
            found += [(Path(folder) / name).relative_to(root).as_posix() for name in names]
        return sorted(found)


def select(root: Path, allow: list[str]) -> list[str]:
    """The project's files under ``root`` that match ``allow``, hidden entries excluded."""
    return list(filter_repo_objects(project_files(root), allow_patterns=allow, ignore_patterns=HIDDEN))


def refusal(name: str) -> str | None:
    """Why the file ``name`` (relative to the folder published) must never be sent, else None."""
    parts = name.split("/")
    if parts[-1] == corpus.CORPUS_FILENAME or "/data/cache/" in f"/{name}":
        return "the copyrighted screenplay or its cache"
    if {".venv", "venv", "site-packages"} & set(parts):
        return "a virtualenv"
    if ".checkpoints" in parts:
        return "a training checkpoint"
    if any(fnmatch(part, ".*.tmp-*") or fnmatch(part, ".*.old-*") for part in parts):
        return "a half-written or replaced weights folder"
    return None


def local_screenplay(path: str | os.PathLike | None = None) -> Path | None:
    """The screenplay if it is here (``path``, ``$TOYSTORY_CORPUS`` or training's cache); never downloaded."""
    if path or os.environ.get(corpus.CORPUS_ENV):
        return corpus.locate(path)
    cached = corpus.DEFAULT_CACHE_DIR / corpus.CORPUS_FILENAME
    return cached if cached.is_file() else None


def screenplay_windows(raw: str) -> set[str]:
    """Every RUN-character window of the screenplay, raw and clean, with whitespace collapsed."""
    windows = set()
    for text in (raw, corpus.clean_screenplay(raw)):
        text = _WHITESPACE.sub(" ", text)
        windows.update(text[i:i + RUN] for i in range(len(text) - RUN + 1))
    return windows


def screenplay_run(data: bytes, windows: set[str]) -> str | None:
    """The first RUN characters of screenplay text in a text file's ``data``, else None (also for binary files)."""
    if b"\0" in data:
        return None  # weights, images: not text
    try:
        text = _WHITESPACE.sub(" ", data.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    return next((text[i:i + RUN] for i in range(len(text) - RUN + 1) if text[i:i + RUN] in windows), None)


def check(upload: Upload, screenplay: Path | None) -> None:
    """Refuse the whole upload if any file is forbidden by its path or holds a run of the screenplay."""
    problems = [f"{name}: {reason}" for name in upload.files if (reason := refusal(name))]
    if screenplay is not None:
        windows = screenplay_windows(corpus.read_screenplay(screenplay))
        for name in upload.files:
            if run := screenplay_run((upload.root / name).read_bytes(), windows):
                problems.append(f"{name}: holds {RUN}+ characters of the screenplay verbatim: {run[:60]!r}...")
    if problems:
        raise PublishError("refusing to publish, nothing was sent:\n  " + "\n  ".join(problems))


def check_weights(folder: Path) -> None:
    """Refuse weights the app could not serve: no milestone at all, or one that fails to load."""
    loaded, broken = weights.load_all(folder)
    for saved in loaded:  # the snapshots the app offers too
        for step in saved.snapshot_steps:
            try:
                weights.load_snapshot(saved, step)
            except weights.WeightsError as exc:
                broken[f"{saved.milestone.number}@{step}"] = exc
    if broken:
        raise PublishError("refusing to publish broken weights, nothing was sent:\n  "
                           + "\n  ".join(str(error) for error in broken.values()))
    if not loaded:
        raise PublishError(f"no milestone folders in {folder}/ to publish; train them with `python train.py`")


def hardware_refusal(error: HfHubHTTPError, upload: Upload) -> str:
    """What to do when the Hub refuses ``upload.hardware`` for the Space, from the HTTP status and the flavour."""
    status = error.response.status_code
    if status == 401:
        advice = ("The token is not valid or may not write: log in again with `hf auth login` using a token with "
                  "write access (https://huggingface.co/settings/tokens), or pass --token")
    elif status == 409:
        advice = ("A Space of this name exists that this token cannot read (another account's, or a fine-grained "
                  "token without read access to it): choose another name, or use a token that may write to it")
    elif upload.hardware == ZERO_GPU:
        advice = ("Hosting on ZeroGPU needs an account in good standing (a verified e-mail address, "
                  "https://huggingface.co/settings/account, and an account older than 30 days) and a free slot "
                  "(2 ZeroGPU Spaces on a free account, 10 on PRO: delete or move one, or upgrade at "
                  "https://huggingface.co/subscribe/pro); for an organisation's Space, write access to it and "
                  "a Team or Enterprise plan")
    elif upload.hardware == FREE_CPU:
        advice = (f"Gradio Spaces on {FREE_CPU} need a PRO (personal) or Team/Enterprise (organisation) plan, "
                  f"https://huggingface.co/subscribe/pro; on a free account publish with `--hardware {ZERO_GPU}`")
    else:
        advice = (f"Paid hardware such as {upload.hardware} needs a payment method and credits, "
                  f"https://huggingface.co/settings/billing; or publish with `--hardware {ZERO_GPU}` (free)")
    said = error.server_message or str(error).splitlines()[0]
    return (f"the Hub refused {upload.hardware} for the Space {upload.repo_id} ({status}: {said}); nothing was "
            f"uploaded. {advice}.")


def provide_space(api: HfApi, upload: Upload, private: bool) -> str:
    """The Space on ``upload.hardware``: created on it, or an existing one moved to it. Its URL; PublishError with
    what to do if the Hub refuses (then nothing else was asked of it)."""
    try:
        try:
            runtime = api.get_space_runtime(upload.repo_id)
        except RepositoryNotFoundError:
            # Not exist_ok: on a Space created meanwhile, create_repo would return without asking for the hardware.
            return api.create_repo(upload.repo_id, repo_type="space", space_sdk="gradio",
                                   space_hardware=upload.hardware, private=private or None)
        if (runtime.requested_hardware or runtime.hardware) != upload.hardware:  # asking again restarts it
            api.request_space_hardware(upload.repo_id, upload.hardware)
    except HfHubHTTPError as exc:
        if exc.response.status_code not in REFUSED:
            raise  # the Hub failing, not refusing: reported as any other failure
        raise PublishError(hardware_refusal(exc, upload)) from exc
    return f"{api.endpoint}/spaces/{upload.repo_id}"


def send(upload: Upload, token: str, private: bool, message: str):
    """Create the repo if needed (a Space on its hardware first), set its variables, and send exactly
    ``upload.files`` in one commit, last: (url, commit)."""
    api = HfApi(token=token)
    if upload.repo_type == "space":
        url = provide_space(api, upload, private)
    else:
        url = api.create_repo(upload.repo_id, repo_type=upload.repo_type, private=private or None, exist_ok=True)
    if private:  # create_repo keeps an existing repo's visibility: make sure nothing lands in a public one
        api.update_repo_settings(upload.repo_id, private=True, repo_type=upload.repo_type)
    for key, value in upload.variables.items():  # before the commit, so the build it triggers already sees them
        api.add_space_variable(upload.repo_id, key, value)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=upload.root / name) for name in upload.files]
    commit = api.create_commit(upload.repo_id, operations, commit_message=message, repo_type=upload.repo_type)
    return url, commit


def space_upload(repo_id: str, root: Path, weights_repo: str | None, weights_revision: str | None,
                 hardware: str = ZERO_GPU) -> Upload:
    """The Space on ``hardware``: the app's code, and either the committed weights or a model repo to fetch them
    from."""
    if weights_repo is None:
        if weights_revision:
            raise PublishError("--weights-revision pins a --weights-repo; without one the Space serves its weights/")
        return Upload(repo_id, "space", root, select(root, SPACE_CODE + SPACE_WEIGHTS), hardware=hardware)
    variables = {hub.WEIGHTS_ENV: weights_repo} | ({hub.REVISION_ENV: weights_revision} if weights_revision else {})
    return Upload(repo_id, "space", root, select(root, SPACE_CODE), variables, hardware)


def prepare(args) -> Upload:
    """The upload the command line asks for, checked and listed; PublishError if it must not be sent."""
    if args.kind == "space":
        upload = space_upload(args.repo_id, PROJECT_DIR, args.weights_repo, args.weights_revision, args.hardware)
        weights_dir = None if args.weights_repo else PROJECT_DIR / "weights"
    else:
        upload = Upload(args.repo_id, "model", Path(args.weights), select(Path(args.weights), ["*"]))
        weights_dir = upload.root
    if not upload.files:
        raise PublishError(f"nothing to publish in {upload.root}/ (files git ignores are never sent)")
    if weights_dir is not None:
        check_weights(weights_dir)
    try:
        screenplay = local_screenplay(args.corpus)
    except corpus.CorpusError as exc:
        raise PublishError(str(exc)) from None
    check(upload, screenplay)
    if screenplay is None:
        print(f"note: the screenplay is not on this machine (--corpus, ${corpus.CORPUS_ENV} or data/cache/), "
              "so files were checked by path only, not for screenplay text", file=sys.stderr)
    else:
        print(f"checked: no corpus cache, virtualenv, checkpoint or temp folder; "
              f"no {RUN}-character run of {screenplay}")
    print(f"{upload.repo_type} {upload.repo_id}, from {upload.root}/:")
    print(upload.listing(), end="")
    if upload.hardware:
        print(f"Space hardware {upload.hardware}")
    for key, value in upload.variables.items():
        print(f"Space variable {key}={value}")
    return upload


def cmd_publish(args) -> int:
    """Publish the app as a Space, or the weights as a model repo, after checking every file."""
    try:
        upload = prepare(args)
        if args.dry_run:
            print("dry run: nothing was sent")
            return 0
        token = args.token or get_token()
        if not token:
            raise PublishError("no Hugging Face token, nothing was sent: log in with `hf auth login`, set HF_TOKEN, "
                               "or pass --token (it needs write access: https://huggingface.co/settings/tokens)")
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        url, commit = send(upload, token, args.private, args.commit_message)
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # offline, bad token, no write access, rate limit...: one clear message for all
        print(f"error: publishing to the {upload.repo_type} {upload.repo_id} failed: {exc}", file=sys.stderr)
        return 1
    print(f"sent: {url} (commit {commit.oid})")
    if upload.repo_type == "model":
        print(f"serve it with {hub.WEIGHTS_ENV}={upload.repo_id} {hub.REVISION_ENV}={commit.oid}")
    return 0


def repo_id(value: str) -> str:
    """An argparse type: a Hub repo id OWNER/NAME, checked by huggingface_hub's own rules (``hub.is_repo_id``)."""
    if not hub.is_repo_id(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a Hub repo id like OWNER/NAME")
    return value


def add_commands(subparsers) -> None:
    """Register ``publish space`` and ``publish model`` on the CLI's subparsers."""
    publish = subparsers.add_parser("publish", help="the app as a Hugging Face Space, or the weights as a model repo")
    kinds = publish.add_subparsers(dest="kind", required=True)
    space = kinds.add_parser("space", help="the app, its package and weights/ as a Gradio Space")
    space.add_argument("--hardware", choices=HARDWARE, default=ZERO_GPU, metavar="FLAVOUR",
                       help=f"what the Space runs on (default: {ZERO_GPU}, ZeroGPU, the one a free account can host; "
                            f"{FREE_CPU} needs PRO, the others billing): {', '.join(HARDWARE)}")
    space.add_argument("--weights-repo", metavar="OWNER/NAME", type=repo_id,
                       help=f"send no weights: the Space serves this model repo (Space variable ${hub.WEIGHTS_ENV})")
    space.add_argument("--weights-revision", help=f"pin --weights-repo to a branch, tag or commit ({hub.REVISION_ENV})")
    model = kinds.add_parser("model", help="the weights folder as one model repo that TOYSTORY_WEIGHTS can serve")
    model.add_argument("--weights", default=str(hub.DEFAULT_WEIGHTS_DIR), help="the folder to send (default: weights/)")
    for kind, message in ((space, "Publish the Toy Story GPT app"), (model, "Publish the Toy Story GPT weights")):
        kind.add_argument("repo_id", metavar="OWNER/NAME", type=repo_id, help="the repo on the Hub (created if needed)")
        kind.add_argument("--private", action="store_true", help="create it private, or make an existing one private")
        kind.add_argument("--dry-run", action="store_true", help="list every file and the total size, send nothing")
        kind.add_argument("--token", help="a Hub token with write access (default: HF_TOKEN, else `hf auth login`'s)")
        kind.add_argument("--corpus", help=f"the screenplay, to check for its text (default: ${corpus.CORPUS_ENV}, "
                                           "else the cache; never downloaded)")
        kind.add_argument("--commit-message", default=message)
        kind.set_defaults(run=cmd_publish)
