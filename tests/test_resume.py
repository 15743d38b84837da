"""Interrupted training: SIGKILL at several points, saving included, never costs a saved folder; --resume finishes."""

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import train
from tests.conftest import ROOT
from toystory_gpt import weights
from toystory_gpt.milestones import BY_NUMBER

ARGS = ["--quick", "--milestones", "8", "--max-steps", "60"]

# Run train.py in a child that stops (prints a marker, then sleeps) at a chosen instant, for the test to kill it there.
CHILD = textwrap.dedent("""
    import os, sys, time
    import torch
    import train
    from toystory_gpt import checkpoint, model
    point = sys.argv[1]
    torch.set_num_threads(int(sys.argv[2]))  # the parent's: thread count changes float summation order
    def pause(label):
        print("PAUSED", label, flush=True)
        time.sleep(120)
    if point == "checkpoint-written":  # just after a checkpoint landed, mid-training
        real_save = checkpoint.save
        def save(folder, tensors, state):
            real_save(folder, tensors, state)
            if state["step"] >= 20:
                pause("after checkpoint")
        checkpoint.save = save
    elif point == "writing-checkpoint":  # halfway through writing a checkpoint's files
        real_save_file = checkpoint.save_file
        def save_file(tensors, path):
            real_save_file(tensors, path)
            pause("inside checkpoint write")
        checkpoint.save_file = save_file
    elif point == "writing-weights":  # halfway through writing the final weights folder
        real = model.GPT.save_pretrained
        def save_pretrained(self, path, **kw):
            real(self, path, **kw)
            pause("inside weights write")
        model.GPT.save_pretrained = save_pretrained
    elif point == "swapping-weights":  # between moving the old weights folder aside and renaming the new one in
        real_replace = os.replace
        def replace(src, dst):
            real_replace(src, dst)
            if ".old-" in str(dst) and "milestone8" in str(dst) and ".checkpoints" not in str(dst):
                pause("between renames")
        os.replace = replace
    sys.exit(train.main(sys.argv[3:]))
""")


def run_until_paused(point: str, args: list[str]) -> str:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, point, str(torch.get_num_threads()), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if line.startswith("PAUSED"):
                return line.strip()
            assert time.monotonic() < deadline, "the child never reached the kill point"
        pytest.fail(f"the child exited ({proc.wait()}) without reaching {point}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def reference(corpus_path, tmp_path_factory):
    """The same run, never interrupted."""
    out = tmp_path_factory.mktemp("reference")
    assert train.main([*ARGS, "--corpus", str(corpus_path), "--out", str(out)]) == 0
    return json.loads((out / "milestone8" / "history.json").read_text())


@pytest.mark.parametrize("point", ["checkpoint-written", "writing-checkpoint", "writing-weights", "swapping-weights"])
def test_sigkill_loses_nothing_and_resume_completes(point, reference, corpus_path, quick_weights, tmp_path):
    out = tmp_path / "w"
    out.mkdir()
    shutil.copytree(quick_weights / "milestone8", out / "milestone8")  # a previously saved folder to protect
    before = (out / "milestone8" / "model.safetensors").read_bytes()

    paused = run_until_paused(point, [*ARGS, "--corpus", str(corpus_path), "--out", str(out)])
    assert "PAUSED" in paused

    # The previous folder is intact and loadable, whatever instant the kill hit.
    saved = weights.load(out / "milestone8", BY_NUMBER[8])
    if point != "swapping-weights":
        assert (out / "milestone8" / "model.safetensors").read_bytes() == before
    assert saved.model.num_params > 0

    assert train.main(["--resume", "--out", str(out)]) == 0
    history = json.loads((out / "milestone8" / "history.json").read_text())
    assert history["steps"] == reference["steps"]
    assert history["best_val_loss"] == pytest.approx(reference["best_val_loss"], abs=1e-6)
    assert [h["val_loss"] for h in history["history"]] == pytest.approx([h["val_loss"] for h in reference["history"]], abs=1e-6)
    assert not (out / ".checkpoints").exists()
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "milestone8", "results.json"]


def test_resume_with_nothing_to_resume_says_so(tmp_path, capsys):
    assert train.main(["--resume", "--out", str(tmp_path)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_corrupt_checkpoint_is_a_clear_error(corpus_path, tmp_path):
    out = tmp_path / "w"
    run_until_paused("checkpoint-written", [*ARGS, "--corpus", str(corpus_path), "--out", str(out)])
    state = out / ".checkpoints" / "milestone8" / "tensors.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    proc = subprocess.run([sys.executable, "train.py", "--resume", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "checkpoint" in proc.stderr and "cannot be read" in proc.stderr and "delete it" in proc.stderr
