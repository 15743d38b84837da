"""The ONNX Runtime decoding: the full recompute's logits, exported once per loaded model, checked, and a fallback."""

import shutil
import sys
import warnings

import numpy as np
import pytest
import torch

from tests.conftest import TEST_VOCAB, last_logits, small_model
from toystory_gpt import onnx_decode
from toystory_gpt.decoding import KVCache, TorchDecoding
from toystory_gpt.milestones import LADDER
from toystory_gpt.pool import generate
from toystory_gpt.serving import Models
from toystory_gpt.tokenizer import CharTokenizer
from toystory_gpt.weights import load_all

TOK = CharTokenizer(TEST_VOCAB)


@pytest.mark.parametrize("milestone", LADDER.milestones[2:], ids=lambda m: m.folder)
def test_exported_encode_and_steps_give_the_full_recompute_logits(milestone):
    model = small_model(milestone, spread=0.1)
    exported = onnx_decode.export(model)
    assert exported is not None
    rows = [torch.randint(len(TOK.vocab), (16,), generator=torch.Generator().manual_seed(s)).tolist() for s in (1, 2)]
    cache = KVCache(model.config, 2)
    logits, keys, values = exported.encode(np.array([ids[:8] for ids in rows]))  # two windows in one batch
    cache.fill(np.arange(2), keys, values)
    for row, ids in enumerate(rows):
        np.testing.assert_allclose(logits[row], last_logits(model, ids[:8]), rtol=0, atol=1e-5)
    for t in range(8, 16):
        logits, new_keys, new_values = exported.advance(cache, 2, np.array([ids[t] for ids in rows]),
                                                        cache.lengths.copy())
        cache.append(np.arange(2), new_keys, new_values)
        for row, ids in enumerate(rows):
            np.testing.assert_allclose(logits[row], last_logits(model, ids[:t + 1]), rtol=0, atol=1e-5)
    assert not model.training  # exporting leaves the model as it found it


def test_a_loaded_model_is_exported_once(quick_weights):
    models = Models(*load_all(quick_weights))
    first = models.decoding(8)
    assert isinstance(first, onnx_decode.OnnxDecoding) and models.decoding(8) is first
    assert not any("onnx" in k for k in models.saved[8].model.state_dict())
    assert isinstance(models.decoding(8, models.saved[8].snapshot_steps[0]), TorchDecoding)  # snapshots: PyTorch


def test_only_a_model_in_eval_mode_is_exported():
    with pytest.raises(ValueError, match="eval mode"):
        onnx_decode.OnnxDecoding(small_model(LADDER.milestones[7]).train())


def test_a_mistranslated_export_is_caught():
    model = small_model(LADDER.milestones[7], spread=0.1)
    exported = onnx_decode.OnnxDecoding(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(2)  # the export now disagrees with the model it claims to be
    with pytest.raises(ValueError, match="differ from PyTorch"):
        exported.check()


def test_no_export_where_none_is_needed_or_possible():
    assert onnx_decode.export(small_model(LADDER.milestones[0])) is None
    assert onnx_decode.export(small_model(LADDER.milestones[1])) is None
    one_token = small_model(LADDER.milestones[7], block_size=1)
    assert onnx_decode.export(one_token) is None
    assert len(generate(one_token, TOK, "BUZZ", 5)) == 5


def test_without_onnx_runtime_the_same_text_comes_from_pytorch(monkeypatch, quick_weights, tmp_path):
    shutil.copytree(quick_weights / "milestone8", tmp_path / "milestone8")
    models = Models(*load_all(tmp_path))
    args = (models.saved[8].tokenizer, "BUZZ: ", 80, 0.9, 0, 7)  # past the 32-token window: encodes and steps
    fast = generate(models.saved[8].model, *args, decoding=models.decoding(8))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    again = Models(*load_all(tmp_path))
    with pytest.warns(RuntimeWarning, match="decoding in PyTorch"):
        fallback = again.decoding(8)
    assert isinstance(fallback, TorchDecoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the failure is remembered: no second warning, no second attempt
        assert again.decoding(8) is fallback
        assert generate(again.saved[8].model, *args, decoding=fallback) == fast
