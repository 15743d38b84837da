"""The ONNX Runtime decoding: the same logits as PyTorch, checked before use, and a clean fallback without it."""

import shutil
import sys
import warnings

import numpy as np
import pytest
import torch

from tests.conftest import TEST_VOCAB, last_logits, small_model
from toystory_gpt import onnx_decode, weights
from toystory_gpt.milestones import LADDER
from toystory_gpt.sampler import generate
from toystory_gpt.tokenizer import CharTokenizer

TOK = CharTokenizer(TEST_VOCAB)


@pytest.mark.parametrize("milestone", LADDER.milestones[2:], ids=lambda m: m.folder)
def test_exported_prefill_and_steps_give_the_full_recompute_logits(milestone):
    model = small_model(milestone, spread=0.1)
    exported = onnx_decode.export(model)
    assert exported is not None and exported.prefill_length == 8
    decoder = exported.decoder()
    ids = torch.randint(len(TOK.vocab), (16,), generator=torch.Generator().manual_seed(1)).tolist()
    np.testing.assert_allclose(decoder.start(ids[:8]), last_logits(model, ids[:8]), rtol=0, atol=1e-5)
    for t in range(8, 16):
        np.testing.assert_allclose(decoder.push(ids[t]), last_logits(model, ids[:t + 1]), rtol=0, atol=1e-5)
    assert not model.training  # exporting leaves the model as it found it


def test_a_loaded_model_is_exported_once(quick_weights):
    saved = weights.load(quick_weights / "milestone8", LADDER[8])
    first = saved.exported
    assert first is not None and saved.exported is first
    assert not any("onnx" in k for k in saved.model.state_dict())


def test_only_a_model_in_eval_mode_is_exported():
    with pytest.raises(ValueError, match="eval mode"):
        onnx_decode.OnnxDecoding(small_model(LADDER.milestones[7]).train())


def test_a_mistranslated_export_is_caught():
    model = small_model(LADDER.milestones[7], spread=0.1)
    exported = onnx_decode.OnnxDecoding(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(2)  # the export now disagrees with the model it claims to be
    with pytest.raises(ValueError, match="differ from PyTorch"):
        exported._check()


def test_no_export_where_none_is_needed_or_possible():
    assert onnx_decode.export(small_model(LADDER.milestones[0])) is None
    assert onnx_decode.export(small_model(LADDER.milestones[1])) is None
    one_token = small_model(LADDER.milestones[7], block_size=1)
    assert onnx_decode.export(one_token) is None
    assert len("".join(generate(one_token, TOK, "BUZZ", 5))) == 5


def test_without_onnx_runtime_the_same_text_comes_from_pytorch(monkeypatch, quick_weights, tmp_path):
    shutil.copytree(quick_weights / "milestone8", tmp_path / "milestone8")
    saved = weights.load(tmp_path / "milestone8", LADDER[8])
    args = (saved.tokenizer, "BUZZ: ", 80, 0.9, 0, 7)  # past the 32-token window: prefill and steps both fall back
    fast = "".join(generate(saved.model, *args, exported=saved.exported))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    again = weights.load(tmp_path / "milestone8", LADDER[8])
    with pytest.warns(RuntimeWarning, match="sampling in PyTorch"):
        assert again.exported is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the failure is remembered: no second warning, no second attempt
        assert again.exported is None
        assert "".join(generate(again.model, *args, exported=again.exported)) == fast
