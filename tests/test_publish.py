"""Publishing to the Hub, up to the HTTP layer: what is picked, what is refused, what is sent; a Space smoke test."""

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

import pytest
from gradio_client import Client
from huggingface_hub import HfApi, constants

from tests.conftest import ROOT, free_port
from toystory_gpt import corpus, publish
from toystory_gpt.__main__ import main
from toystory_gpt.trainer import TrainConfig

HAZARDS = ["data/cache/toy-story-1995-screenplay.txt", ".venv/lib/python3.11/site-packages/x.py",
           "weights/.checkpoints/milestone8/state.json", "weights/.milestone8.tmp-123/model.safetensors",
           "weights/.milestone8.old-123/config.json"]
JUNK = ["toystory_gpt/__pycache__/publish.cpython-311.pyc", "weights/milestone8/.DS_Store"]  # harmless, not needed
APP_NEEDS = ["app.py", "requirements.txt", "README.md", "LICENSE", "docs/screenshot.png", "docs/inside.png",
             "docs/inside-phone.png",
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
def checkout(tmp_path, corpus_path) -> Path:
    """The project after `make run` and training: the screenplay cached, a .venv, checkpoints, temp folders."""
    root = tmp_path / "checkout"
    for name in worktree_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    for name in HAZARDS + JUNK:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    shutil.copy2(corpus_path, root / HAZARDS[0])
    return root


@pytest.fixture
def hub_calls(monkeypatch) -> list[tuple]:
    """Every HfApi call publishing makes, recorded instead of sent: (method, token, args, kwargs)."""
    calls = []
    results = {"create_repo": "https://huggingface.co/spaces/you/toystory-gpt", "update_repo_settings": None,
               "add_space_variable": {}, "create_commit": SimpleNamespace(oid="c0ffee" * 6 + "beef")}
    for name, result in results.items():
        def record(self, *args, _name=name, _result=result, **kwargs):
            calls.append((_name, self.token, args, kwargs))
            return _result
        monkeypatch.setattr(HfApi, name, record)
    return calls


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No token anywhere huggingface_hub looks: not in the environment, no `hf auth login`."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))  # read at import


def paste(corpus_path: Path) -> str:
    """A paragraph of the clean screenplay, as someone might paste it into a file."""
    clean = corpus.clean_screenplay(corpus.read_screenplay(corpus_path))
    return clean[60_000:60_400]


@pytest.mark.parametrize("under_git", [True, False], ids=["git-checkout", "unpacked-archive"])
def test_space_upload_set_is_what_the_app_needs_and_nothing_hazardous(checkout, corpus_path, under_git):
    if under_git:
        subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    upload = publish.space_upload("you/toystory-gpt", checkout, None, None)
    package = sorted(name for name in worktree_files() if name.startswith("toystory_gpt/") and name.endswith(".py"))
    assert set(upload.files) == set(APP_NEEDS + package)
    assert not set(HAZARDS + JUNK) & set(upload.files)
    left_out = ("tests/", "benchmarks/", "data/", ".", "train.py")
    assert not [name for name in upload.files if name.startswith(left_out)]
    publish.check(upload, corpus_path)  # the committed samples and docs hold no run of the screenplay


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
def test_pasted_screenplay_fails_loudly_naming_the_file_and_sends_nothing(checkout, corpus_path, monkeypatch, capsys,
                                                                          hub_calls, target, form):
    # A passage as it stands in the screenplay file (CR line ends, indentation), cleaned, or in a JSON string.
    if form == "json":
        history = json.loads((checkout / target).read_text())
        (checkout / target).write_text(json.dumps(history | {"name": paste(corpus_path)}, indent=1))
    else:
        text = corpus.read_screenplay(corpus_path)[84_000:84_600] if form == "raw" else paste(corpus_path)
        with open(checkout / target, "a", encoding="utf-8", newline="") as f:
            f.write("\n" + text + "\n")
    monkeypatch.setattr(publish, "PROJECT_DIR", checkout)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert main(["publish", "space", "you/toystory-gpt", "--corpus", str(corpus_path)]) == 2
    err = capsys.readouterr().err
    assert "error: refusing to publish, nothing was sent" in err
    assert f"{target}: holds {publish.RUN}+ characters of the screenplay verbatim" in err
    assert hub_calls == []


def test_dry_run_lists_every_file_and_the_total_and_calls_nothing(checkout, corpus_path, monkeypatch, capsys, hub_calls,
                                                                  no_token):
    monkeypatch.setattr(publish, "PROJECT_DIR", checkout)
    assert main(["publish", "space", "you/toystory-gpt", "--dry-run", "--corpus", str(corpus_path)]) == 0
    out = capsys.readouterr().out
    upload = publish.space_upload("you/toystory-gpt", checkout, None, None)
    listed = [line.split()[-1] for line in out.splitlines() if line.startswith(" ")]
    assert listed == upload.files
    total = sum((checkout / name).stat().st_size for name in upload.files)
    assert f"{len(upload.files)} files, {publish._size(total)} in all" in out
    assert f"no {publish.RUN}-character run of {corpus_path}" in out
    assert out.endswith("dry run: nothing was sent\n")
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


def test_space_upload_call_creates_a_private_gradio_space_and_sends_exactly_the_checked_files(checkout, corpus_path,
                                                                                            monkeypatch, capsys,
                                                                                            hub_calls):
    monkeypatch.setattr(publish, "PROJECT_DIR", checkout)
    assert main(["publish", "space", "you/toystory-gpt", "--private", "--token", "hf_test",
                 "--corpus", str(corpus_path)]) == 0
    files = publish.space_upload("you/toystory-gpt", checkout, None, None).files
    assert [call[:2] for call in hub_calls] == [("create_repo", "hf_test"), ("update_repo_settings", "hf_test"),
                                                ("create_commit", "hf_test")]
    (_, _, args, kwargs), (_, _, settings_args, settings), (_, _, commit_args, commit) = hub_calls
    assert (args, kwargs) == (("you/toystory-gpt",), dict(repo_type="space", private=True, exist_ok=True,
                                                           space_sdk="gradio"))
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
        ("create_repo", (space,)), ("add_space_variable", (space, "TOYSTORY_WEIGHTS", "you/w")),
        ("add_space_variable", (space, "TOYSTORY_WEIGHTS_REVISION", "v1")),
        ("create_commit", (space, hub_calls[-1][2][1]))]
    assert hub_calls[0][3]["private"] is None  # not asked for: the owner's default visibility


def test_model_upload_call_sends_the_weights_folder_to_a_model_repo(checkout, monkeypatch, capsys, hub_calls):
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    weights = checkout / "weights"
    assert main(["publish", "model", "you/toystory-weights", "--weights", str(weights), "--commit-message", "v1"]) == 0
    (name, token, args, kwargs), (_, _, commit_args, commit) = hub_calls
    assert (name, token, args) == ("create_repo", "hf_env", ("you/toystory-weights",))
    assert kwargs == dict(repo_type="model", private=None, exist_ok=True, space_sdk=None)
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


@pytest.mark.slow  # starts the app in a subprocess
def test_space_smoke_test_the_upload_set_alone_serves_all_eight(tmp_path):
    upload = publish.space_upload("you/toystory-gpt", ROOT, None, None)
    space = tmp_path / "space"
    for name in upload.files:
        (space / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, space / name)
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "TOYSTORY_WEIGHTS", "TOYSTORY_WEIGHTS_REVISION")}
    env |= dict(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", GRADIO_SERVER_NAME="127.0.0.1",
                GRADIO_SERVER_PORT=str(port))
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
            texts = Client(url, verbose=False).predict(milestones=list(range(1, 9)), prompt="WOODY:", length=20,
                                                       temperature=0.8, top_k=0, seed=0, api_name="/generate")
        finally:
            server.kill()
            server.wait()
    assert len(texts) == 8 and all(texts), texts
    assert f"serving 8 of 8 milestones from {space / 'weights'}" in Path(log.name).read_text()  # the copy, not ROOT
