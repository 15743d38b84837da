"""The app as ZeroGPU runs it: ``spaces`` imported before torch, no CUDA touched at import or while the app is
built, and, off ZeroGPU, ``spaces`` changing nothing. Each check runs in a fresh interpreter, where imports happen
for the first time (pytest's own process imported torch long ago)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from toystory_gpt import api

# Import the app, then report which modules were imported in which order (sys.modules keeps insertion order).
IMPORT_ORDER = """
import json, sys
{prelude}
import app
print(json.dumps(list(sys.modules)))
"""

# With torch.cuda's entry points watched, import the app and every module of the package, build the app as a Space
# does (``app.demo``), serve it and ask /generate once through gradio_client.
NO_CUDA = """
import importlib, json, pkgutil, sys, traceback
import torch

touched = []
def watch(name, function):
    def watched(*args, **kwargs):
        touched.append(f"torch.cuda.{name}, from\\n" + "".join(traceback.format_stack()[:-1]))
        return function(*args, **kwargs)
    return watched
# What initialises CUDA (``_lazy_init`` is behind every call that does) or asks for the device.
for name in ("_lazy_init", "init", "is_available", "device_count", "current_device", "set_device",
             "get_device_name", "get_device_properties", "get_device_capability", "is_bf16_supported",
             "mem_get_info", "synchronize", "get_rng_state", "set_rng_state"):
    setattr(torch.cuda, name, watch(name, getattr(torch.cuda, name)))

import app
import toystory_gpt
for module in pkgutil.walk_packages(toystory_gpt.__path__, "toystory_gpt."):
    importlib.import_module(module.name)
demo = app.demo
_, url, _ = app.launch(demo, server_name="127.0.0.1", server_port={port}, prevent_thread_lock=True, quiet=True)
from gradio_client import Client
texts = Client(url, verbose=False).predict(**{request}, api_name="/generate")
demo.close()
print(json.dumps(dict(touched=touched, initialized=torch.cuda.is_initialized(), texts=texts,
                      spaces="spaces" in sys.modules)))
"""

REQUEST = dict(milestones=[1, 3, 8], prompt="WOODY:", length=40, temperature=0.8, top_k=0, seed=5)


def run_python(code: str) -> dict | list:
    """Run ``code`` in a fresh interpreter on this checkout, off ZeroGPU and offline; what it printed last, as JSON."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("TOYSTORY_WEIGHTS", "TOYSTORY_WEIGHTS_REVISION", "SPACES_ZERO_GPU")}
    env |= dict(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_app_imports_spaces_before_torch():
    pytest.importorskip("spaces")
    modules = run_python(IMPORT_ORDER.format(prelude=""))
    assert modules.index("spaces") < modules.index("torch")  # ZeroGPU patches torch when `spaces` is imported


def test_app_imports_where_spaces_is_not_installed():
    modules = run_python(IMPORT_ORDER.format(prelude='sys.modules["spaces"] = None  # import spaces: ImportError'))
    assert "toystory_gpt.ui.page" in modules and "torch" in modules


@pytest.mark.slow  # starts the app
def test_no_cuda_at_import_or_build_and_with_spaces_the_app_serves_what_the_library_writes():
    from tests.conftest import free_port

    pytest.importorskip("spaces")
    result = run_python(NO_CUDA.replace("{port}", str(free_port())).replace("{request}", repr(REQUEST)))
    assert result["touched"] == [], "\n".join(result["touched"])
    assert not result["initialized"]
    assert result["spaces"]  # the app ran with `spaces` imported, off ZeroGPU: it must change nothing
    library = api.Service.from_folder(ROOT / "weights")
    try:
        assert result["texts"] == library.run(library.generate_request(**REQUEST)).model_dump()
    finally:
        library.close()
