"""The ONNX Runtime decoding: same logits as PyTorch, follows the weights, and a clean fallback without it."""

import dataclasses
import sys
import warnings

import numpy as np
import pytest
import torch

from toystory_gpt import onnx_decode
from toystory_gpt.milestones import MILESTONES
from toystory_gpt.model import GPT
from toystory_gpt.sampler import Decoder, generate
from toystory_gpt.tokenizer import CharTokenizer

TOK = CharTokenizer("\n !',.:?ABCDEHINORSTUWYZabcdefghiklmnorstuvwy")


def model_for(milestone, n_layer=2):
    cfg = dataclasses.replace(milestone.model_config(TOK.vocab), block_size=16, n_embd=32, n_layer=n_layer)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    with torch.no_grad():  # spread the weights so that logits differ visibly between tokens
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def full_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids]))[0][0, -1].numpy()


@pytest.mark.parametrize("milestone", MILESTONES[2:], ids=lambda m: m.folder)
def test_prefill_and_steps_give_the_full_recompute_logits(milestone):
    model = model_for(milestone)
    decoding = onnx_decode.for_model(model)
    assert decoding is not None and decoding.prefill_length == 8
    stream = decoding.stream(model.new_cache())
    ids = [int(i) for i in torch.randint(len(TOK.vocab), (16,), generator=torch.Generator().manual_seed(1))]
    np.testing.assert_allclose(stream.prefill(ids[:8]), full_logits(model, ids[:8]), rtol=0, atol=1e-5)
    for t in range(8, 16):
        np.testing.assert_allclose(stream(ids[t]), full_logits(model, ids[:t + 1]), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="longer than the context"):
        stream(ids[0])
    with pytest.raises(ValueError, match="takes 8 tokens"):
        stream.prefill(ids[:5])


def test_exported_once_and_again_after_the_weights_change():
    model = model_for(MILESTONES[7])
    first = onnx_decode.for_model(model)
    assert onnx_decode.for_model(model) is first  # made once, reused by every decoder
    assert not model.training  # exporting leaves the model as it found it
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    second = onnx_decode.for_model(model)
    assert second is not first
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    np.testing.assert_allclose(second.stream(model.new_cache()).prefill(ids), full_logits(model, ids), rtol=0, atol=1e-5)
    assert "_onnx_decoding" not in dict(model.named_modules()) and not any("onnx" in k for k in model.state_dict())


def test_a_new_storage_or_a_mistranslated_export_is_caught():
    model = model_for(MILESTONES[7])
    first = onnx_decode.for_model(model)
    model.lm_head.weight.data = model.lm_head.weight.data * 2  # no in-place version bump, but new values
    assert onnx_decode.for_model(model) is not first

    other = model_for(MILESTONES[7])
    decoding = onnx_decode.OnnxDecoding(other)
    with torch.no_grad():
        other.lm_head.weight.mul_(2)  # the export now disagrees with the model it claims to be
    with pytest.raises(ValueError, match="differ from PyTorch"):
        decoding._check(other)


def test_one_token_context_stays_in_pytorch():
    model = model_for(MILESTONES[7])
    model = GPT(dataclasses.replace(model.config, block_size=1)).eval()
    assert onnx_decode.for_model(model) is None
    assert len("".join(generate(model, TOK, "BUZZ", 5))) == 5


def test_no_export_for_contextless_models_nor_batches():
    assert onnx_decode.for_model(model_for(MILESTONES[0], n_layer=0)) is None
    assert onnx_decode.for_model(model_for(MILESTONES[1], n_layer=0)) is None
    model = model_for(MILESTONES[7])
    with pytest.raises(ValueError, match="batch size 1"):
        onnx_decode.for_model(model).stream(model.new_cache(batch_size=2))


def test_without_onnx_runtime_the_same_text_comes_from_pytorch(monkeypatch):
    args = (TOK, "BUZZ: ", 40, 0.9, 0, 7)  # past the 16-token window: prefill and steps both fall back
    fast = "".join(generate(model_for(MILESTONES[7]), *args))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    model = model_for(MILESTONES[7])
    with pytest.warns(RuntimeWarning, match="sampling in PyTorch"):
        assert Decoder(model).fast is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the failure is remembered: no second warning, no second attempt
        assert "".join(generate(model, *args)) == fast
