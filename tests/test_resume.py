"""Interrupted training: SIGKILL at several points, saving included, never costs a saved folder; --resume finishes."""

import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

import train
from tests.conftest import LADDER_TEXT, ROOT
from toystory_gpt import weights
from toystory_gpt.milestones import LADDER

pytestmark = pytest.mark.slow

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


PAUSES = {"checkpoint-written": "after checkpoint", "writing-checkpoint": "inside checkpoint write",
          "writing-weights": "inside weights write", "swapping-weights": "between renames"}
CHILD_DEADLINE = 120  # seconds for the child to reach its kill point; it bounds a hang, it does not time anything


def run_until_paused(point: str, args: list[str]) -> str:
    """Start the child, wait (at most CHILD_DEADLINE, even if it prints nothing) until it pauses at ``point``,
    then SIGKILL it; returns the line it paused with."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, point, str(torch.get_num_threads()), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)], daemon=True).start()
    try:
        deadline = time.monotonic() + CHILD_DEADLINE
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the child did not reach {point} within {CHILD_DEADLINE} s")
            if line is None:
                pytest.fail(f"the child exited ({proc.wait()}) without reaching {point}")
            if line.startswith("PAUSED"):
                return line.strip()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run, never interrupted: its milestone 8 folder."""
    out = tmp_path_factory.mktemp("reference")
    assert train.main([*ARGS, "--text", str(LADDER_TEXT), "--out", str(out)]) == 0
    return out / "milestone8"


@pytest.mark.parametrize("point", ["checkpoint-written", "writing-checkpoint", "writing-weights", "swapping-weights"])
def test_sigkill_loses_nothing_and_resume_completes(point, reference, quick_weights, tmp_path):
    out = tmp_path / "w"
    out.mkdir()
    shutil.copytree(quick_weights / "milestone8", out / "milestone8")  # a previously saved folder to protect
    before = (out / "milestone8" / "model.safetensors").read_bytes()

    paused = run_until_paused(point, [*ARGS, "--text", str(LADDER_TEXT), "--out", str(out)])
    assert paused == f"PAUSED {PAUSES[point]}"

    # The previous folder is intact and loads the previous weights, whatever instant the kill hit.
    saved = weights.load(out / "milestone8", LADDER[8])
    if point != "swapping-weights":  # there the old folder is aside, and the loader reads it from there
        assert (out / "milestone8" / "model.safetensors").read_bytes() == before
    previous = weights.load(quick_weights / "milestone8", LADDER[8]).model.state_dict()
    assert all(torch.equal(tensor, previous[name]) for name, tensor in saved.model.state_dict().items())

    assert train.main(["--resume", "--out", str(out)]) == 0
    record, expected = weights.read_record(out / "milestone8"), weights.read_record(reference)
    assert record.steps == expected.steps
    assert record.best_val_loss == pytest.approx(expected.best_val_loss, abs=1e-6)
    assert [h.val_loss for h in record.history] == pytest.approx([h.val_loss for h in expected.history], abs=1e-6)
    # What it wrote at every evaluation, and the weights it kept then, survive the kill too.
    assert [h.sample for h in record.history] == [h.sample for h in expected.history]
    kept = sorted(p.name for p in (reference / "snapshots").iterdir())
    assert kept == sorted(p.name for p in (out / "milestone8" / "snapshots").iterdir()) and len(kept) == 2
    for name in kept:
        resumed, uninterrupted = (load_file(folder / "snapshots" / name) for folder in (out / "milestone8", reference))
        # Half precision: the same weights to float rounding may round one half-precision step apart.
        assert all(torch.allclose(t.float(), resumed[k].float(), rtol=1e-3, atol=1e-5)
                   for k, t in uninterrupted.items())
    assert not (out / ".checkpoints").exists()
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "milestone8", "results.json"]


def test_resume_with_nothing_to_resume_says_so(tmp_path, capsys):
    assert train.main(["--resume", "--out", str(tmp_path)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "w"
    run_until_paused("checkpoint-written", [*ARGS, "--text", str(LADDER_TEXT), "--out", str(out)])
    state = out / ".checkpoints" / "milestone8" / "tensors.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    assert train.main(["--resume", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "checkpoint" in error and "cannot be read" in error and "delete it" in error
