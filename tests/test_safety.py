"""No pickle anywhere, no eval/exec, and the weights location taken only from configuration, pinned when asked.

The source scan is AST-based (comments and strings that merely mention these names do not count) and covers
every Python file git knows of or would add (tracked, or untracked and not ignored): a new file is checked
before it is ever committed.
"""

from __future__ import annotations

import ast
import inspect
import shutil
import subprocess
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import app
from toystory_gpt import hub, weights
from toystory_gpt.milestones import LADDER
from toystory_gpt.ui.page import free_port

ROOT = Path(__file__).resolve().parent.parent

# Modules whose loading runs arbitrary code from a file.
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "pickletools"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
UNSAFE_ATTRIBUTES = {("torch", "load"), ("pd", "read_pickle"), ("pandas", "read_pickle"), ("np", "load"),
                     ("numpy", "load"), ("builtins", "eval"), ("builtins", "exec")}
SAFE_WEIGHT_FILES = {".safetensors", ".json", ".md", ".txt"}
PICKLE_FILES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"}


def python_sources() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=ROOT,
                                capture_output=True, text=True, check=True, timeout=60).stdout.split()
        files = [ROOT / name for name in listed]
    except (OSError, subprocess.SubprocessError):  # not a git checkout (e.g. an sdist): every file but the venv
        files = [p for p in ROOT.rglob("*.py") if ".venv" not in p.parts]
    return sorted(p for p in files if p.is_file())


def unsafe_uses(source: str) -> list[str]:
    """``import pickle`` and friends, ``torch.load``/``np.load``/``read_pickle``/``.to_pickle``,
    eval/exec/compile calls, weights_only=False."""
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in UNSAFE_BUILTINS:
                found.append(f"{where}: {func.id}()")
            elif isinstance(func, ast.Attribute):
                owner = func.value.id if isinstance(func.value, ast.Name) else None
                if (owner, func.attr) in UNSAFE_ATTRIBUTES or func.attr in {"to_pickle", "read_pickle"}:
                    found.append(f"{where}: {owner or '…'}.{func.attr}()")
            for keyword in node.keywords:
                if keyword.arg in {"weights_only", "allow_pickle"} and not (
                        isinstance(keyword.value, ast.Constant)
                        and keyword.value.value is (keyword.arg == "weights_only")):
                    found.append(f"{where}: {keyword.arg}={ast.unparse(keyword.value)}")
        elif isinstance(node, ast.Attribute) and node.attr in {"load", "loads"} and isinstance(node.value, ast.Name) \
                and node.value.id in UNSAFE_MODULES:
            found.append(f"{where}: {node.value.id}.{node.attr}")
    return found


def test_the_scan_finds_what_it_looks_for():
    bad = ("import pickle\nfrom joblib import load\nimport torch\ntorch.load('x')\neval('1')\nexec('x=1')\n"
           "df.to_pickle('x')\nnp.load('x', allow_pickle=True)\nf(weights_only=False)\n")
    assert len(unsafe_uses(bad)) == 9
    fine = ("model.eval()\nre.compile('x')\njson.loads('1')\nload_file('x')\n"
            "s = 'import pickle; eval(x)'  # torch.load\n")
    assert unsafe_uses(fine) == []


def test_no_pickle_eval_or_exec_in_any_python_source():
    sources = python_sources()
    assert ROOT / "app.py" in sources and ROOT / "toystory_gpt" / "weights.py" in sources
    problems = {str(p.relative_to(ROOT)): uses for p in sources if (uses := unsafe_uses(p.read_text(encoding="utf-8")))}
    assert problems == {}


def weight_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_weights_folders_hold_only_safetensors_and_text(quick_weights):
    files = weight_files(quick_weights)
    assert any(p.suffix == ".safetensors" for p in files)
    assert sorted({p.suffix for p in files} - SAFE_WEIGHT_FILES) == []


def test_no_pickle_format_file_is_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert [name for name in tracked if Path(name).suffix in PICKLE_FILES] == []
    assert [name for name in tracked
            if name.startswith("weights/") and Path(name).suffix not in SAFE_WEIGHT_FILES] == []


def test_a_pickle_beside_missing_safetensors_is_never_loaded(quick_weights, tmp_path):
    folder = tmp_path / LADDER.milestones[7].folder
    shutil.copytree(quick_weights / LADDER.milestones[7].folder, folder)
    (folder / weights.WEIGHTS_FILE).unlink()
    canary = tmp_path / "unpickled"
    # A protocol-0 pickle that, if anything ever unpickled it, would create `canary` (builtins.open(canary, "w")).
    payload = f"cbuiltins\nopen\n(V{canary}\nVw\ntR.".encode()
    for name in ("pytorch_model.bin", "model.pt", "model.pkl"):
        (folder / name).write_bytes(payload)
    with pytest.raises(weights.WeightsError, match="model.safetensors: missing"):
        weights.load(folder, LADDER.milestones[7])
    assert not canary.exists()


# ------------------------------------------------------------------------- where the weights come from

PATH_LIKE = ("path", "dir", "folder", "file", "weights", "location", "repo", "revision", "url")


def test_no_api_endpoint_takes_a_path_like_parameter(app_url):
    api = Client(app_url, verbose=False).view_api(print_info=False, return_format="dict")
    endpoints = api["named_endpoints"]
    # ``ladder`` names a visitor's ladder held in memory (a random token), never a place on disk or the Hub.
    assert [p["parameter_name"] for p in endpoints["/generate"]["parameters"]] == \
        ["milestones", "prompt", "length", "temperature", "top_k", "seed", "step", "ladder"]
    for name, endpoint in {**endpoints, **api.get("unnamed_endpoints", {})}.items():
        for parameter in endpoint["parameters"]:
            assert not any(word in (parameter.get("parameter_name") or "").lower()
                           for word in PATH_LIKE), (name, parameter)


def test_the_weights_location_comes_only_from_an_argument_or_the_environment(quick_weights, monkeypatch):
    assert list(inspect.signature(hub.resolve).parameters) == ["location", "revision"]
    # What a Space does: app.demo serves $TOYSTORY_WEIGHTS, resolved once, with nothing a request could have set.
    monkeypatch.setenv(hub.WEIGHTS_ENV, str(quick_weights))
    calls, resolve = [], hub.resolve
    monkeypatch.setattr(hub, "resolve",
                        lambda *args, **kwargs: calls.append((args, kwargs)) or resolve(*args, **kwargs))
    app._demo.cache_clear()
    demo = client = None
    try:
        demo = app.demo
        _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                               quiet=True)
        client = Client(url, verbose=False)
        # ...the request's only inputs are the seven generation settings and a visitor ladder's name, and serving
        # never resolves again: a name that looks like a folder is only an unknown ladder.
        generate = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]
        assert [p["parameter_name"] for p in generate["parameters"]] == \
            ["milestones", "prompt", "length", "temperature", "top_k", "seed", "step", "ladder"]
        with pytest.raises(AppError, match="No ladder named"):
            client.predict(milestones=[3], prompt="WOODY:", length=5, ladder="../weights", api_name="/generate")
        for seed in range(3):
            answer = client.predict(milestones=[3, 8], prompt="WOODY:", length=5, temperature=0.8, top_k=0, seed=seed,
                                    api_name="/generate")
            assert [len(w["text"]) for w in answer["texts"]] == [5, 5]
        assert app.demo is demo
    finally:
        if client is not None:
            client.close()
        if demo is not None:
            demo.close()
        app._demo.cache_clear()  # the next user of app.demo builds it from its own environment
    assert calls == [((), {})]


@pytest.fixture
def downloads(tmp_path, monkeypatch):
    calls = []

    def fake_snapshot_download(repo_id, revision=None, **kwargs):
        calls.append(dict(repo_id=repo_id, revision=revision, **kwargs))
        return str(tmp_path)

    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.delenv(hub.WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(hub.REVISION_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # so "someone/toystory-gpt" is not accidentally an existing folder
    return calls


def test_a_configured_revision_pins_the_hub_download(downloads, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    hub.resolve("someone/toystory-gpt", revision=commit)
    monkeypatch.setenv(hub.WEIGHTS_ENV, "someone/toystory-gpt")
    monkeypatch.setenv(hub.REVISION_ENV, "v1.0")
    hub.resolve()
    hub.resolve(revision=commit)  # the argument wins over the environment
    assert downloads == [dict(repo_id="someone/toystory-gpt", revision=commit),
                         dict(repo_id="someone/toystory-gpt", revision="v1.0"),
                         dict(repo_id="someone/toystory-gpt", revision=commit)]


def test_without_a_revision_the_hub_default_branch_is_used(downloads):
    hub.resolve("someone/toystory-gpt")
    assert downloads == [dict(repo_id="someone/toystory-gpt", revision=None)]


def test_a_local_folder_never_touches_the_hub(downloads, tmp_path):
    (tmp_path / "someone" / "toystory-gpt").mkdir(parents=True)  # a folder that looks like a repo id is a folder
    assert hub.resolve("someone/toystory-gpt") == Path("someone/toystory-gpt")
    assert hub.resolve(tmp_path) == tmp_path
    assert downloads == []
