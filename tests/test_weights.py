import json
import shutil

import pytest
import torch

from toystory_gpt import weights
from toystory_gpt.milestones import BY_NUMBER, MILESTONES


@pytest.fixture
def folder(quick_weights, tmp_path):
    """A private copy of milestone 8's folder to break."""
    dst = tmp_path / "milestone8"
    shutil.copytree(quick_weights / "milestone8", dst)
    return dst


def test_round_trip_gives_identical_logits(quick_weights, tmp_path):
    saved = weights.load(quick_weights / "milestone8", BY_NUMBER[8])
    weights.save(tmp_path / "milestone8", saved.model, saved.info, "sample", "card")
    again = weights.load(tmp_path / "milestone8", BY_NUMBER[8])
    x = torch.randint(0, saved.tokenizer.vocab_size, (2, 20))
    assert torch.equal(saved.model(x)[0], again.model(x)[0])
    assert again.tokenizer.vocab == saved.tokenizer.vocab
    assert not again.model.training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["milestone8"]  # no temp folders left behind


def test_load_all_returns_every_milestone_in_order(quick_weights):
    loaded, broken = weights.load_all(quick_weights)
    assert [s.milestone.number for s in loaded] == [m.number for m in MILESTONES]
    assert broken == {}
    assert all(s.info["best_val_loss"] > 0 and s.info["history"] for s in loaded)


def test_folder_is_hub_shaped_without_pickle(quick_weights):
    names = {p.name for p in (quick_weights / "milestone3").iterdir()}
    assert names == {"config.json", "model.safetensors", "README.md", "history.json", "milestone3.txt"}
    assert not list(quick_weights.rglob("*.bin")) and not list(quick_weights.rglob("*.pt"))


def test_truncated_safetensors_is_a_clear_error(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(weights.WeightsError, match=r"milestone8: model.safetensors: cannot be loaded"):
        weights.load(folder, BY_NUMBER[8])


def test_garbage_safetensors_is_a_clear_error(folder):
    (folder / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(weights.WeightsError, match=r"milestone8: model.safetensors"):
        weights.load(folder, BY_NUMBER[8])


def test_missing_weights_file_is_a_clear_error(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(weights.WeightsError, match=r"milestone8: model.safetensors: missing"):
        weights.load(folder, BY_NUMBER[8])


def test_config_that_does_not_match_the_tensors(folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["n_embd"] *= 2
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(weights.WeightsError, match=r"milestone8: model.safetensors: .*size mismatch"):
        weights.load(folder, BY_NUMBER[8])


def test_broken_folder_does_not_hide_the_healthy_ones(quick_weights, tmp_path):
    shutil.copytree(quick_weights, tmp_path / "w")
    (tmp_path / "w" / "milestone5" / "config.json").write_text("{not json")
    loaded, broken = weights.load_all(tmp_path / "w")
    assert [s.milestone.number for s in loaded] == [1, 2, 3, 4, 6, 7, 8]
    assert set(broken) == {5} and "config.json: not valid JSON" in str(broken[5])
