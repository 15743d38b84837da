"""The bulk-drawn dropout: nn.Dropout's behaviour, with masks that follow torch's seed."""

import pytest
import torch

from toystory_gpt.dropout import Dropout


def test_it_drops_p_of_the_elements_and_keeps_the_mean():
    x = torch.ones(1000, 1000)
    out = Dropout(0.1).train()(x)
    dropped = (out == 0).float().mean().item()
    assert dropped == pytest.approx(6554 / 65536, abs=0.002)  # 1e6 elements: the standard error is 0.0003
    assert out.unique().tolist() == pytest.approx([0.0, 65536 / (65536 - 6554)], rel=1e-7)  # float32
    assert out.mean().item() == pytest.approx(1.0, abs=0.003)


def test_the_same_seed_gives_the_same_mask_and_the_gradient_follows_it():
    dropout = Dropout(0.1).train()
    x = torch.randn(64, 128, requires_grad=True)
    torch.manual_seed(5)
    a = dropout(x)
    torch.manual_seed(5)
    b = dropout(x)
    assert torch.equal(a, b) and not torch.equal(a, dropout(x))  # the generator moved on: a new mask
    a.sum().backward()
    assert torch.equal(x.grad, torch.where(a != 0, dropout.scale, 0.0))


def test_eval_mode_and_zero_p_are_the_identity():
    x = torch.randn(8, 8)
    assert Dropout(0.1).eval()(x) is x and Dropout(0.0).train()(x) is x
