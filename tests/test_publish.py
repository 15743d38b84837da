"""Publishing to the Hub, up to the HTTP layer: what is picked, what is refused, what is sent, on which hardware;
a Space rehearsal. No real Hub is reachable here: ``HfApi``'s methods are replaced, and the Hub's refusals are
the errors huggingface_hub itself raises for such answers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
from gradio_client import Client
from huggingface_hub import HfApi, SpaceRuntime, constants, metadata_load
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import hf_raise_for_status

from tests.conftest import ROOT, SCREENPLAY_SAMPLE, free_port
from toystory_gpt import corpus, publish
from toystory_gpt.__main__ import main
from toystory_gpt.trainer import TrainConfig

HAZARDS = ["data/cache/toy-story-1995-screenplay.txt", ".venv/lib/python3.11/site-packages/x.py",
           "weights/.checkpoints/milestone8/state.json", "weights/.milestone8.tmp-123/model.safetensors",
           "weights/.milestone8.old-123/config.json"]
JUNK = ["toystory_gpt/__pycache__/publish.cpython-311.pyc", "weights/milestone8/.DS_Store"]  # harmless, not needed
APP_NEEDS = ["app.py", "requirements.txt", "README.md", "LICENSE", "docs/screenshot.png",
             "weights/README.md", "weights/results.json",
             *(f"weights/{folder}/{name}" for folder in
               [*(f"milestone{n}" for n in range(1, 9)), "ablation-deep-no-residual"]
               for name in ("config.json", "model.safetensors", "history.json", "README.md", f"{folder}.txt")),
             # the snapshots the Compare tab's Weights choice serves (the ablation keeps none)
             *(f"weights/milestone{n}/snapshots/step-{step}.safetensors" for n in range(1, 9)
               for step in TrainConfig().snapshot_steps),
             # the other seeds' records, behind the Training and About tabs' mean ± sd
             *(f"weights/seeds/seed-{seed}/{folder}.json" for seed in json.loads(
                 (ROOT / "weights" / "results.json").read_text())["seeds"][1:]
               for folder in [*(f"milestone{n}" for n in range(1, 9)), "ablation-deep-no-residual"])]


def worktree_files() -> list[str]:
    """This checkout's project files as they stand, committed or not."""
    return publish.project_files(ROOT)


@pytest.fixture
def checkout(tmp_path) -> Path:
    """The project after `make run` and training: a screenplay cached, a .venv, checkpoints, temp folders."""
    root = tmp_path / "checkout"
    for name in worktree_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    for name in HAZARDS + JUNK:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    shutil.copy2(SCREENPLAY_SAMPLE, root / HAZARDS[0])
    return root


def hub_error(status: int, path: str, message: str, **headers) -> HfHubHTTPError:
    """The error huggingface_hub raises when the Hub answers a request to ``path`` with ``status`` and ``message``."""
    request = httpx2.Request("POST", f"{constants.ENDPOINT}{path}")
    try:
        hf_raise_for_status(httpx2.Response(status, json={"error": message}, headers=headers, request=request))
    except HfHubHTTPError as exc:
        return exc
    raise AssertionError(f"huggingface_hub raised nothing for {status}")


class FakeHub:
    """HfApi's methods that publishing calls, recorded instead of sent: ``calls`` holds (method, token, args,
    kwargs). ``space``: the hardware of the Space already there (None: there is none); ``refusals``: the error
    the Hub answers a method with."""
    RESULTS = {"create_repo": "https://huggingface.co/spaces/you/toystory-gpt", "update_repo_settings": None,
               "request_space_hardware": None, "add_space_variable": {},
               "create_commit": SimpleNamespace(oid="c0ffee" * 6 + "beef")}

    def __init__(self, monkeypatch):
        self.calls: list[tuple] = []
        self.space: str | None = None
        self.refusals: dict[str, HfHubHTTPError] = {}
        for name in ["get_space_runtime", *self.RESULTS]:
            def record(api, *args, _name=name, **kwargs):
                self.calls.append((_name, api.token, args, kwargs))
                return self.answer(_name, args)
            monkeypatch.setattr(HfApi, name, record)

    def answer(self, name: str, args: tuple):
        if name in self.refusals:
            raise self.refusals[name]
        if name != "get_space_runtime":
            return self.RESULTS[name]
        if self.space is None:
            raise hub_error(404, f"/api/spaces/{args[0]}/runtime", "Repository not found", **{"X-Error-Code":
                                                                                               "RepoNotFound"})
        return SpaceRuntime({"stage": "RUNNING", "hardware": {"current": self.space, "requested": self.space}})

    def names(self) -> list[str]:
        return [name for name, *_ in self.calls]


@pytest.fixture
def hub(monkeypatch) -> FakeHub:
    return FakeHub(monkeypatch)


@pytest.fixture
def hub_calls(hub) -> list[tuple]:
    """Every HfApi call publishing makes, recorded instead of sent: (method, token, args, kwargs)."""
    return hub.calls


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No token anywhere huggingface_hub looks: not in the environment, no `hf auth login`."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))  # read at import


def paste(screenplay: Path) -> str:
    """A paragraph of the clean screenplay, as someone might paste it into a file."""
    clean = corpus.clean_screenplay(corpus.read_screenplay(screenplay))
    return clean[1_000:1_400]


@pytest.mark.parametrize("under_git", [True, False], ids=["git-checkout", "unpacked-archive"])
def test_space_upload_set_is_what_the_app_needs_and_nothing_hazardous(checkout, under_git):
    if under_git:
        subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    upload = publish.space_upload("you/toystory-gpt", checkout, None, None)
    package = sorted(name for name in worktree_files() if name.startswith("toystory_gpt/") and name.endswith(".py"))
    assert set(upload.files) == set(APP_NEEDS + package)
    assert not set(HAZARDS + JUNK) & set(upload.files)
    left_out = ("tests/", "benchmarks/", "data/", ".", "train.py")
    assert not [name for name in upload.files if name.startswith(left_out)]
    publish.check(upload, SCREENPLAY_SAMPLE)


def test_what_a_space_sends_holds_no_run_of_the_real_screenplay(checkout, corpus_path):
    """The committed samples, model cards and docs, against the screenplay itself."""
    publish.check(publish.space_upload("you/toystory-gpt", checkout, None, None), corpus_path)


def test_code_only_space_sends_no_weights_and_names_its_model_repo(checkout):
    upload = publish.space_upload("you/toystory-gpt", checkout, "you/toystory-weights", "v1")
    assert "app.py" in upload.files and not [name for name in upload.files if name.startswith("weights/")]
    assert upload.variables == {"TOYSTORY_WEIGHTS": "you/toystory-weights", "TOYSTORY_WEIGHTS_REVISION": "v1"}


@pytest.mark.parametrize("name", HAZARDS)
def test_a_hazardous_path_is_refused_even_if_an_allow_list_let_it_through(checkout, name):
    with pytest.raises(publish.PublishError, match=rf"nothing was sent:\n  {re.escape(name)}: "):
        publish.check(publish.Upload("you/x", "space", checkout, ["app.py", name]), None)


@pytest.mark.parametrize("target, form", [("weights/milestone8/milestone8.txt", "clean"), ("README.md", "raw"),
                                          ("weights/milestone8/history.json", "json")])
def test_pasted_screenplay_fails_loudly_naming_the_file_and_sends_nothing(checkout, monkeypatch, capsys, hub_calls,
                                                                          target, form):
    # A passage as it stands in the screenplay file (its line ends, indentation), cleaned, or in a JSON string.
    if form == "json":
        history = json.loads((checkout / target).read_text())
        (checkout / target).write_text(json.dumps(history | {"name": paste(SCREENPLAY_SAMPLE)}, indent=1))
    else:
        text = corpus.read_screenplay(SCREENPLAY_SAMPLE)[2_000:2_600] if form == "raw" else paste(SCREENPLAY_SAMPLE)
        with open(checkout / target, "a", encoding="utf-8", newline="") as f:
            f.write("\n" + text + "\n")
    monkeypatch.setattr(publish, "PROJECT_DIR", checkout)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert main(["publish", "space", "you/toystory-gpt", "--corpus", str(SCREENPLAY_SAMPLE)]) == 2
    err = capsys.readouterr().err
    assert "error: refusing to publish, nothing was sent" in err
    assert f"{target}: holds {publish.RUN}+ characters of the screenplay verbatim" in err
    assert hub_calls == []


def test_dry_run_lists_every_file_and_the_total_and_calls_nothing(checkout, monkeypatch, capsys, hub_calls, no_token):
    monkeypatch.setattr(publish, "PROJECT_DIR", checkout)
    assert main(["publish", "space", "you/toystory-gpt", "--dry-run", "--corpus", str(SCREENPLAY_SAMPLE)]) == 0
    out = capsys.readouterr().out
    upload = publish.space_upload("you/toystory-gpt", checkout, None, None)
    listed = [line.split()[-1] for line in out.splitlines() if line.startswith(" ")]
    assert listed == upload.files
    total = sum((checkout / name).stat().st_size for name in upload.files)
    assert f"{len(upload.files)} files, {publish._size(total)} in all" in out
    assert f"no {publish.RUN}-character run of {SCREENPLAY_SAMPLE}" in out
    assert out.endswith("Space hardware zero-a10g\ndry run: nothing was sent\n")
    assert hub_calls == []


def test_model_dry_run_lists_the_weights_folders_under_the_overview_card(checkout, capsys, hub_calls, monkeypatch):
    monkeypatch.delenv(corpus.CORPUS_ENV, raising=False)
    monkeypatch.setattr(corpus, "DEFAULT_CACHE_DIR", checkout / "nowhere")
    assert main(["publish", "model", "you/toystory-weights", "--weights", str(checkout / "weights"), "--dry-run"]) == 0
    captured = capsys.readouterr()
    listed = [line.split()[-1] for line in captured.out.splitlines() if line.startswith(" ")]
    assert listed == sorted(name.removeprefix("weights/") for name in APP_NEEDS if name.startswith("weights/"))
    assert "checked by path only, not for screenplay text" in captured.err
    assert hub_calls == []


def test_space_upload_call_creates_a_private_gradio_space_and_sends_exactly_the_checked_files(checkout, monkeypatch,
                                                                                            capsys, hub_calls):
    monkeypatch.setattr(publish, "PROJECT_DIR", checkout)
    assert main(["publish", "space", "you/toystory-gpt", "--private", "--token", "hf_test",
                 "--corpus", str(SCREENPLAY_SAMPLE)]) == 0
    files = publish.space_upload("you/toystory-gpt", checkout, None, None).files
    assert [call[:2] for call in hub_calls] == [("get_space_runtime", "hf_test"), ("create_repo", "hf_test"),
                                                ("update_repo_settings", "hf_test"), ("create_commit", "hf_test")]
    _, (_, _, args, kwargs), (_, _, settings_args, settings), (_, _, commit_args, commit) = hub_calls
    assert (args, kwargs) == (("you/toystory-gpt",), dict(repo_type="space", private=True, space_sdk="gradio",
                                                           space_hardware="zero-a10g"))
    assert (settings_args, settings) == (("you/toystory-gpt",), dict(private=True, repo_type="space"))
    repo_id, operations = commit_args
    assert repo_id == "you/toystory-gpt" and commit["repo_type"] == "space"
    assert [op.path_in_repo for op in operations] == files
    assert [op.path_or_fileobj for op in operations] == [str(checkout / name) for name in files]
    assert "sent: https://huggingface.co/spaces/you/toystory-gpt (commit c0ffee" in capsys.readouterr().out


def test_code_only_space_sets_its_variables_before_the_commit(checkout, monkeypatch, hub_calls):
    monkeypatch.setattr(publish, "PROJECT_DIR", checkout)
    assert main(["publish", "space", "you/toystory-gpt", "--token", "hf_test", "--weights-repo", "you/w",
                 "--weights-revision", "v1"]) == 0
    space = "you/toystory-gpt"
    assert [(name, args) for name, _, args, _ in hub_calls] == [
        ("get_space_runtime", (space,)), ("create_repo", (space,)),
        ("add_space_variable", (space, "TOYSTORY_WEIGHTS", "you/w")),
        ("add_space_variable", (space, "TOYSTORY_WEIGHTS_REVISION", "v1")),
        ("create_commit", (space, hub_calls[-1][2][1]))]
    assert hub_calls[1][3]["private"] is None  # not asked for: the owner's default visibility


@pytest.mark.parametrize("flag, hardware", [([], "zero-a10g"), (["--hardware", "cpu-basic"], "cpu-basic"),
                                            (["--hardware", "t4-small"], "t4-small")])
def test_a_new_space_is_created_on_the_hardware_asked_for(checkout, monkeypatch, hub, flag, hardware):
    monkeypatch.setattr(publish, "PROJECT_DIR", checkout)
    assert main(["publish", "space", "you/toystory-gpt", "--token", "hf_test", *flag]) == 0
    assert hub.names() == ["get_space_runtime", "create_repo", "create_commit"]
    assert hub.calls[1][3]["space_hardware"] == hardware


@pytest.mark.parametrize("before, requests", [("cpu-basic", ["request_space_hardware"]), ("zero-a10g", [])],
                         ids=["moved", "already-there"])
def test_an_existing_space_is_moved_to_the_hardware_before_any_file_is_sent(checkout, monkeypatch, capsys, hub,
                                                                             before, requests):
    monkeypatch.setattr(publish, "PROJECT_DIR", checkout)
    hub.space = before
    assert main(["publish", "space", "you/toystory-gpt", "--token", "hf_test", "--private"]) == 0
    # Asking for the hardware it already has would only restart it; visibility, then the files, come after.
    assert hub.names() == ["get_space_runtime", *requests, "update_repo_settings", "create_commit"]
    if requests:
        assert hub.calls[1][2] == ("you/toystory-gpt", "zero-a10g")
    assert "sent: https://huggingface.co/spaces/you/toystory-gpt (commit c0ffee" in capsys.readouterr().out


def test_an_unknown_hardware_is_refused_listing_the_flavours_before_anything_is_sent(capsys, hub_calls):
    with pytest.raises(SystemExit) as exited:
        main(["publish", "space", "you/toystory-gpt", "--token", "hf_test", "--hardware", "a10g"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --hardware: invalid choice: 'a10g'" in err
    assert all(f"'{flavour}'" in err for flavour in publish.HARDWARE) and "'zero-a10g'" in err
    assert hub_calls == []


# What the Hub answers and what the user is told to do. The first and fourth messages are the Hub's own (quoted in
# gradio-app/gradio#3804 and ed-donner/agents#1469); the others are illustrative: whatever the Hub says is quoted.
PRO_ONLY = ("Static Spaces are free for everyone, but hosting Gradio and Docker Spaces on free cpu-basic requires a "
            "PRO subscription. Subscribe at https://huggingface.co/pro")
BILLING = ("You must add a payment method to your account to upgrade your space's hardware. Visit your billing "
           "settings to add one: https://huggingface.co/settings/billing")
REFUSALS = {
    "cpu-basic-needs-pro": (None, "cpu-basic", "create_repo", 402, PRO_ONLY,
                            ["PRO (personal) or Team/Enterprise", "`--hardware zero-a10g`"]),
    "zerogpu-account-too-new": (None, "zero-a10g", "create_repo", 403, "Your account cannot host ZeroGPU Spaces yet",
                                ["verified e-mail address", "older than 30 days"]),
    "zerogpu-two-space-limit": ("cpu-basic", "zero-a10g", "request_space_hardware", 402,
                                "You have reached the maximum number of ZeroGPU Spaces",
                                ["2 ZeroGPU Spaces on a free account, 10 on PRO"]),
    "gpu-needs-billing": ("cpu-basic", "t4-small", "request_space_hardware", 403, BILLING,
                          ["Paid hardware such as t4-small", "settings/billing", "`--hardware zero-a10g` (free)"]),
    "token-cannot-write": (None, "zero-a10g", "create_repo", 401, "Invalid credentials in Authorization header",
                           ["`hf auth login`", "write access"]),
    "name-taken-unreadable": (None, "zero-a10g", "create_repo", 409, "You already created this space repo",
                              ["exists that this token cannot read", "choose another name"]),
}


@pytest.mark.parametrize("space, hardware, method, status, said, advice", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refused_hardware_is_one_clear_message_and_nothing_is_uploaded(checkout, monkeypatch, capsys, hub, space,
                                                                         hardware, method, status, said, advice):
    monkeypatch.setattr(publish, "PROJECT_DIR", checkout)
    hub.space = space
    path = "/api/repos/create" if method == "create_repo" else "/api/spaces/you/toystory-gpt/hardware"
    hub.refusals[method] = hub_error(status, path, said)
    assert main(["publish", "space", "you/toystory-gpt", "--token", "hf_test", "--hardware", hardware,
                 "--weights-repo", "you/w", "--private"]) == 1
    assert hub.names()[-1] == method  # nothing after it: no visibility change, no variable, no file
    captured = capsys.readouterr()
    assert "sent:" not in captured.out
    assert captured.err.count("error:") == 1
    error = captured.err[captured.err.index("error:"):]
    assert error.startswith(f"error: the Hub refused {hardware} for the Space you/toystory-gpt ({status}: {said}); "
                            "nothing was uploaded. ")
    assert all(part in error for part in advice), error


def test_the_hub_failing_is_a_failure_not_a_refusal_and_still_nothing_is_uploaded(checkout, monkeypatch, capsys,
                                                                                  hub):
    monkeypatch.setattr(publish, "PROJECT_DIR", checkout)
    hub.refusals["create_repo"] = hub_error(503, "/api/repos/create", "Service Unavailable")
    assert main(["publish", "space", "you/toystory-gpt", "--token", "hf_test"]) == 1
    assert hub.names() == ["get_space_runtime", "create_repo"]
    error = capsys.readouterr().err
    assert "error: publishing to the space you/toystory-gpt failed: " in error and "refused" not in error


def test_the_space_card_asks_for_a_python_zerogpu_runs_and_suggests_zerogpu():
    card = metadata_load(ROOT / "README.md")
    assert card["python_version"] in ("3.12", "3.12.12", "3.10", "3.10.13")  # ZeroGPU's Pythons (hub-docs, 2026)
    assert card["suggested_hardware"] == publish.ZERO_GPU
    assert card["sdk"] == "gradio" and card["app_file"] == "app.py"


def test_model_upload_call_sends_the_weights_folder_to_a_model_repo(checkout, monkeypatch, capsys, hub_calls):
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    weights = checkout / "weights"
    assert main(["publish", "model", "you/toystory-weights", "--weights", str(weights), "--commit-message", "v1"]) == 0
    (name, token, args, kwargs), (_, _, commit_args, commit) = hub_calls
    assert (name, token, args) == ("create_repo", "hf_env", ("you/toystory-weights",))
    assert kwargs == dict(repo_type="model", private=None, exist_ok=True)
    assert commit == dict(commit_message="v1", repo_type="model")
    paths = [op.path_in_repo for op in commit_args[1]]
    assert "README.md" in paths and "milestone8/model.safetensors" in paths
    assert not [path for path in paths if path.startswith(".")]
    assert "TOYSTORY_WEIGHTS=you/toystory-weights TOYSTORY_WEIGHTS_REVISION=c0ffee" in capsys.readouterr().out


def test_no_token_is_a_clear_error_and_sends_nothing(checkout, capsys, hub_calls, no_token):
    assert main(["publish", "model", "you/toystory-weights", "--weights", str(checkout / "weights")]) == 2
    err = capsys.readouterr().err
    assert "error: no Hugging Face token, nothing was sent: log in with `hf auth login`, set HF_TOKEN" in err
    assert hub_calls == []


def test_broken_weights_are_refused(checkout, capsys, hub_calls):
    (checkout / "weights" / "milestone8" / "model.safetensors").write_bytes(b"truncated")
    assert main(["publish", "model", "you/w", "--weights", str(checkout / "weights"), "--token", "hf_test"]) == 2
    assert "refusing to publish broken weights" in capsys.readouterr().err
    assert hub_calls == []


# The app's tabs, in order, as the Space shows them: a new tab joins this list.
TABS = ["Compare", "Inside", "Your text", "Training", "About"]


@pytest.mark.slow  # starts the app in a subprocess
def test_space_rehearsal_the_listed_files_alone_started_as_a_space_serve_all_eight_and_every_tab(tmp_path, capsys):
    assert main(["publish", "space", "you/toystory-gpt", "--dry-run"]) == 0
    listed = [line.split()[-1] for line in capsys.readouterr().out.splitlines() if line.startswith(" ")]
    space = tmp_path / "space"  # a bare folder: no git checkout, no ../shared beside it, not this checkout's cwd
    for name in listed:
        (space / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, space / name)
    assert not (space / ".git").exists() and not (tmp_path / "shared").exists()
    port = free_port()
    # As the Hub starts a Gradio Space: `python app.py` in the repo's folder, on the port it names; offline here.
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "TOYSTORY_WEIGHTS", "TOYSTORY_WEIGHTS_REVISION", "TOYSTORY_CORPUS")}
    env |= dict(SYSTEM="spaces", SPACE_ID="you/toystory-gpt", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
                GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    url = f"http://127.0.0.1:{port}/"
    with open(tmp_path / "space.log", "w+") as log:
        server = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while True:
                assert server.poll() is None, f"app.py exited with {server.returncode}:\n{Path(log.name).read_text()}"
                assert time.monotonic() < deadline, f"app.py did not come up in 180 s:\n{Path(log.name).read_text()}"
                try:
                    urllib.request.urlopen(url, timeout=5)
                    break
                except OSError:
                    time.sleep(1)
            client = Client(url, verbose=False)
            answer = client.predict(milestones=list(range(1, 9)), prompt="WOODY:", length=20, temperature=0.8,
                                    top_k=0, seed=0, api_name="/generate")
            tabs = [c["props"]["label"] for c in client.config["components"] if c["type"] == "tabitem"]
            client.close()
        finally:
            server.kill()
            server.wait()
    assert [(w["milestone"], len(w["text"])) for w in answer["texts"]] == [(n, 20) for n in range(1, 9)], answer
    assert tabs == TABS
    assert f"serving 8 of 8 milestones from {space / 'weights'}" in Path(log.name).read_text()  # the copy, not ROOT
