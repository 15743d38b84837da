"""Each milestone's idea is really there: shapes, causality, context, heads, residuals, norms, dropout."""

import dataclasses

import pytest
import torch

from tests.conftest import small_model
from toystory_gpt.milestones import LADDER
from toystory_gpt.model import GPTConfig
from toystory_gpt.recorder import Recorder

VOCAB = "".join(chr(c) for c in range(32, 32 + 20))


def small(milestone, **overrides):
    return small_model(milestone, vocab=VOCAB, **overrides)


def ids(B=2, T=16, seed=1):
    return torch.randint(0, len(VOCAB), (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("milestone", LADDER.milestones, ids=lambda m: m.folder)
def test_forward_contract(milestone):
    model = small(milestone)
    x, y = ids(), ids(seed=2)
    logits, loss = model(x)
    assert logits.shape == (2, 16, len(VOCAB)) and loss is None
    logits, loss = model(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()  # every milestone is trainable
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("milestone", LADDER.milestones, ids=lambda m: m.folder)
def test_causality(milestone):
    """Logits at position t never depend on tokens after t."""
    model = small(milestone)
    x = ids(B=1)
    changed = x.clone()
    changed[0, 9:] = (changed[0, 9:] + 1) % len(VOCAB)
    a, _ = model(x)
    b, _ = model(changed)
    assert torch.allclose(a[0, :9], b[0, :9], atol=1e-6)


def test_unigram_ignores_its_input():
    model = small(LADDER.milestones[0])
    a, _ = model(ids(seed=1))
    b, _ = model(ids(seed=2))
    assert torch.equal(a, b)
    assert torch.equal(a[0, 0], a[1, 5])
    assert model.num_params == len(VOCAB)


def test_bigram_sees_only_the_current_character():
    model = small(LADDER.milestones[1])
    x = ids(B=1)
    changed = x.clone()
    changed[0, :8] = (changed[0, :8] + 3) % len(VOCAB)  # rewrite the past, keep position 8 onwards
    a, _ = model(x)
    b, _ = model(changed)
    assert torch.equal(a[0, 8:], b[0, 8:])
    assert not torch.allclose(a[0, :8], b[0, :8])


@pytest.mark.parametrize("milestone", LADDER.milestones[2:], ids=lambda m: m.folder)
def test_attention_uses_earlier_context(milestone):
    """Unlike the bigram, changing an earlier token changes later predictions."""
    model = small(milestone)
    x = ids(B=1)
    changed = x.clone()
    changed[0, 2] = (changed[0, 2] + 1) % len(VOCAB)
    a, _ = model(x)
    b, _ = model(changed)
    assert not torch.allclose(a[0, 10], b[0, 10], atol=1e-7)


def attention_maps(model, x) -> list[torch.Tensor]:
    with Recorder(model, "blocks.*.attn.weights") as seen:
        model(x)
    return [seen[f"blocks.{i}.attn.weights"] for i in range(model.config.n_layer)]


def test_attention_maps_per_layer_and_head_are_causal_distributions():
    model = small(LADDER.milestones[7])
    x = ids(B=2, T=10)
    maps = attention_maps(model, x)
    assert len(maps) == model.config.n_layer
    for att in maps:
        assert att.shape == (2, 4, 10, 10)
        assert torch.allclose(att.sum(-1), torch.ones(2, 4, 10))
        assert torch.all(att.triu(diagonal=1) == 0)  # no weight on the future
    # the explicit path, taken only while someone watches, computes the same logits as the fused one
    with Recorder(model, "blocks.*.attn.weights"):
        explicit = model(x)[0]
    assert torch.allclose(model(x)[0], explicit, atol=1e-5)
    assert all(block.attn.weights.watched == 0 for block in model.blocks)  # and the fused path is back


def test_a_recorder_sees_only_its_own_thread_and_names_what_it_cannot_find():
    import threading

    model = small(LADDER.milestones[7])
    with Recorder(model, "blocks.0") as seen:
        worker = threading.Thread(target=model, args=(ids(B=3),))
        worker.start()
        worker.join()
        assert seen == {}  # another thread's pass (the app serves several people at once) is not recorded
        model(ids(B=1))
    assert seen["blocks.0"].shape == (1, 16, 32)
    with pytest.raises(ValueError, match="no submodule of GPT is named like blocks.9"):
        Recorder(model, "blocks.9")


def test_single_head_vs_multi_head_differ_only_in_heads():
    one, four = small(LADDER.milestones[2]), small(LADDER.milestones[3])
    assert one.num_params == four.num_params
    assert one.blocks[0].attn.n_head == 1 and four.blocks[0].attn.n_head == 4
    with torch.no_grad():  # sharpen attention: at init it is nearly uniform, whatever the heads
        one.blocks[0].attn.c_attn.weight.mul_(50)
    four.load_state_dict(one.state_dict())  # same tensors, split differently
    x = ids()
    assert not torch.allclose(one(x)[0], four(x)[0], rtol=1e-3, atol=1e-6)
    maps = attention_maps(four, x)
    assert not torch.allclose(maps[0][:, 0], maps[0][:, 1])  # heads attend independently


def test_feed_forward_residual_and_norm_are_switched_on_in_order():
    m4, m5, m6, m7 = (small(m) for m in LADDER.milestones[3:7])
    assert m4.blocks[0].mlp is None and m5.blocks[0].mlp is not None
    assert not m5.blocks[0].residual and m6.blocks[0].residual
    assert isinstance(m6.blocks[0].ln_1, torch.nn.Identity) and isinstance(m7.blocks[0].ln_1, torch.nn.LayerNorm)
    assert isinstance(m7.ln_f, torch.nn.LayerNorm)


def test_residual_adds_the_block_input_back():
    """With the block's sub-layers zeroed out, a residual block is the identity; without residuals it is not."""
    for residual in (True, False):
        model = small(LADDER.milestones[5], residual=residual)
        block = model.blocks[0]
        for p in block.parameters():
            torch.nn.init.zeros_(p)
        x = torch.randn(1, 5, model.config.n_embd)
        out = block(x)
        assert torch.allclose(out, x) == residual


def test_depth_of_the_ladder_and_the_ablation():
    depths = [m.model_config(VOCAB).n_layer for m in LADDER.milestones]
    assert depths[:2] == [0, 0] and depths[2:5] == [1, 1, 1]
    assert depths[5] == depths[6] == depths[7] > 1
    assert LADDER.ablation.model_config(VOCAB) == dataclasses.replace(LADDER.milestones[5].model_config(VOCAB),
                                                                      residual=False)


def test_each_milestone_differs_from_the_previous_by_its_own_idea():
    diffs = []
    for prev, cur in zip(LADDER.milestones, LADDER.milestones[1:]):
        a, b = prev.model_config(VOCAB), cur.model_config(VOCAB)
        diffs.append({k for k, v in dataclasses.asdict(b).items() if dataclasses.asdict(a)[k] != v})
    assert diffs[0] == {"sees_input"}
    assert diffs[1] >= {"n_layer"}  # attention arrives (with its width and context)
    assert diffs[2] == {"n_head"}
    assert diffs[3] == {"feed_forward"}
    assert diffs[4] == {"residual", "n_layer"}
    assert diffs[5] == {"layer_norm"}
    assert diffs[6] == {"dropout"}


def test_dropout_only_in_training():
    model = small(LADDER.milestones[7])
    x = ids()
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])
    no_dropout = small(LADDER.milestones[6]).train()
    assert torch.equal(no_dropout(x)[0], no_dropout(x)[0])


def test_context_longer_than_the_position_table_is_refused():
    model = small(LADDER.milestones[7])
    with pytest.raises(ValueError, match="sequence of 17 tokens is longer than the context"):
        model(ids(B=1, T=17))


def test_config_rejects_heads_that_do_not_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab=VOCAB, n_layer=1, n_embd=30, n_head=4)
