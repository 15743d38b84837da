import json
import shutil

import pytest
import torch

from toystory_gpt import record, report, weights
from toystory_gpt.milestones import LADDER


@pytest.fixture
def folder(quick_weights, tmp_path):
    """A private copy of milestone 8's folder to break."""
    dst = tmp_path / "milestone8"
    shutil.copytree(quick_weights / "milestone8", dst)
    return dst


def test_round_trip_gives_identical_logits(quick_weights, tmp_path):
    saved = weights.load(quick_weights / "milestone8", LADDER[8])
    weights.save(tmp_path / "milestone8", saved.model, saved.record, "sample", "card")
    again = weights.load(tmp_path / "milestone8", LADDER[8])
    x = torch.randint(0, saved.tokenizer.vocab_size, (2, 20))
    assert torch.equal(saved.model(x)[0], again.model(x)[0])
    assert again.tokenizer.vocab == saved.tokenizer.vocab
    assert not again.model.training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["milestone8"]  # no temp folders left behind


def test_load_all_returns_every_milestone_in_order(quick_weights):
    loaded, broken = weights.load_all(quick_weights)
    assert [s.milestone.number for s in loaded] == [m.number for m in LADDER.milestones]
    assert broken == {}
    assert all(s.record.best_val_loss > 0 and s.record.history for s in loaded)


def test_folder_is_hub_shaped_without_pickle(quick_weights):
    names = {p.name for p in (quick_weights / "milestone3").iterdir()}
    assert names == {"config.json", "model.safetensors", "README.md", "history.json", "milestone3.txt", "snapshots"}
    assert {p.suffix for p in (quick_weights / "milestone3" / "snapshots").iterdir()} == {".safetensors"}
    assert not list(quick_weights.rglob("*.bin")) and not list(quick_weights.rglob("*.pt"))


@pytest.mark.parametrize("keep", [0, 7, 1000, -100], ids=["empty", "in-header-size", "in-header", "in-data"])
def test_truncated_safetensors_is_a_clear_error(folder, keep):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(weights.WeightsError, match=r"milestone8: model.safetensors: not a readable safetensors file"):
        weights.load(folder, LADDER[8])


def test_garbage_safetensors_is_a_clear_error(folder):
    (folder / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(weights.WeightsError, match=r"milestone8: model.safetensors"):
        weights.load(folder, LADDER[8])


def test_missing_weights_file_is_a_clear_error(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(weights.WeightsError, match=r"milestone8: model.safetensors: missing"):
        weights.load(folder, LADDER[8])


def edit_config(folder, change):
    cfg = json.loads((folder / "config.json").read_text())
    change(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_missing_config_is_a_clear_error(folder):
    (folder / "config.json").unlink()
    with pytest.raises(weights.WeightsError, match=r"milestone8: config.json: missing"):
        weights.load(folder, LADDER[8])


@pytest.mark.parametrize("change, message", [
    (lambda cfg: cfg.update(n_experts=8), r"config.json: unknown keys \['n_experts'\]"),
    (lambda cfg: cfg.pop("n_layer"), r"config.json: missing keys \['n_layer'\]"),
    (lambda cfg: cfg.update(n_head=3), r"config.json: .*divisible by n_head"),
    (lambda cfg: cfg.update(n_embd=cfg["n_embd"] * 2),
     r"model.safetensors: tensor '.*' has shape \[.*\], config.json needs"),
    (lambda cfg: cfg.update(n_layer=cfg["n_layer"] + 1), r"model.safetensors: missing tensors \['blocks.2"),
    (lambda cfg: cfg.update(vocab=cfg["vocab"][:-1]),
     r"config.json: its vocabulary has \d+ characters but the weights were trained with \d+"),
    (lambda cfg: cfg.update(n_head=0), r"config.json: n_head must be a whole number of at least 1, got 0"),
    (lambda cfg: cfg.update(dropout=1.5), r"config.json: dropout must be a number from 0 to below 1, got 1.5"),
    (lambda cfg: cfg.update(block_size=-1), r"config.json: block_size must be a whole number of at least 1, got -1"),
    (lambda cfg: cfg.update(n_embd="128"), r"config.json: n_embd must be a whole number of at least 1, got '128'"),
    (lambda cfg: cfg.update(vocab="aab"), r"config.json: vocab must be a non-empty string of distinct characters"),
], ids=["unknown-key", "missing-key", "bad-value", "wrong-shape", "another-model", "vocabulary-mismatch",
        "zero-heads", "dropout-out-of-range", "negative-context", "width-as-text", "repeated-vocabulary"])
def test_config_that_does_not_describe_the_weights(folder, change, message):
    edit_config(folder, change)
    with pytest.raises(weights.WeightsError, match=r"milestone8: " + message):
        weights.load(folder, LADDER[8])


def test_unreadable_history_is_left_out_of_the_summary_not_fatal(quick_weights, tmp_path):
    shutil.copytree(quick_weights, tmp_path / "w")
    (tmp_path / "w" / "milestone4" / "history.json").write_text("{not json")
    (tmp_path / "w" / "milestone6" / "history.json").unlink()
    rows = report.collect_rows(tmp_path / "w")
    assert [r.milestone for r in rows] == [1, 2, 3, 5, 7, 8, None]
    saved = weights.load(tmp_path / "w" / "milestone6", LADDER[6])  # no history: still loads
    assert saved.record is None
    assert "| 6 · + residual connections |" in report.table([report.row(LADDER[6], saved.record)])
    with pytest.raises(weights.WeightsError, match=r"milestone4: history.json: not valid JSON"):
        weights.load(tmp_path / "w" / "milestone4", LADDER[4])  # the loader, unlike the summary, refuses it


@pytest.mark.parametrize("change, message", [
    (lambda h: h.pop("format"), rf"format 1 is not {record.FORMAT}"),
    (lambda h: h.update(best_val_loss=None, extra=1), r"unknown keys \['extra'\]"),
    (lambda h: h.pop("history"), r"missing keys \['history'\]"),
    (lambda h: h["history"].append({"step": 1}),
     r"a history entry is not \{step, train_loss, val_loss, elapsed\[, sample\]\}"),
], ids=["old-format", "unknown-key", "missing-key", "bad-entry"])
def test_history_that_does_not_follow_the_schema(folder, change, message):
    history = json.loads((folder / "history.json").read_text())
    change(history)
    (folder / "history.json").write_text(json.dumps(history))
    with pytest.raises(weights.WeightsError, match=r"milestone8: history.json: " + message):
        weights.load(folder, LADDER[8])


def test_broken_folder_does_not_hide_the_healthy_ones(quick_weights, tmp_path):
    shutil.copytree(quick_weights, tmp_path / "w")
    (tmp_path / "w" / "milestone5" / "config.json").write_text("{not json")
    loaded, broken = weights.load_all(tmp_path / "w")
    assert [s.milestone.number for s in loaded] == [1, 2, 3, 4, 6, 7, 8]
    assert set(broken) == {5} and "config.json: not valid JSON" in str(broken[5])
