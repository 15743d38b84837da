"""Watching the models learn: samples recorded at every evaluation, weight snapshots, and generating from them."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from gradio_client.exceptions import AppError
from safetensors.torch import load_file

from tests.conftest import TEST_VOCAB, small_model
from toystory_gpt import __main__ as cli
from toystory_gpt import api, ladder_run, weights
from toystory_gpt.milestones import LADDER
from toystory_gpt.pool import generate
from toystory_gpt.tokenizer import CharTokenizer
from toystory_gpt.trainer import TrainConfig, Trainer

TINY = TrainConfig(max_steps=24, batch_size=4, block_size=16, eval_interval=6, warmup_steps=2, patience=0,
                   snapshot_steps=(6, 18))


def tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(len(TEST_VOCAB), (n,), generator=torch.Generator().manual_seed(seed))


def train_tiny(sample=None):
    torch.manual_seed(0)
    model = small_model(LADDER[8])  # dropout 0.1: training draws random masks, which sampling must not disturb
    result = Trainer(model, TINY, tokens(3000, 1), tokens(500, 2)).run(sample=sample)
    return model, result


def test_recording_samples_does_not_change_training():
    tokenizer = CharTokenizer(TEST_VOCAB)

    def sample(model):
        assert not model.training  # sampled in eval mode
        torch.rand(10)  # even a sampler that draws from torch's RNG leaves training's draws alone
        return generate(model, tokenizer, "WOODY: ", 20, seed=1)

    plain, without = train_tiny()
    recorded, with_samples = train_tiny(sample)
    assert [p.val_loss for p in with_samples.history] == pytest.approx([p.val_loss for p in without.history], abs=1e-6)
    assert [p.train_loss for p in with_samples.history[1:]] == \
        pytest.approx([p.train_loss for p in without.history[1:]], abs=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), recorded.state_dict().values()))
    assert [p.step for p in with_samples.history] == [0, 6, 12, 18, 24]
    assert all(p.sample is not None and len(p.sample) == 20 for p in with_samples.history)
    assert all(p.sample is None for p in without.history)
    assert sorted(with_samples.snapshots) == [6, 18]  # the weights then, not the best
    assert not all(torch.equal(a, b) for a, b in zip(with_samples.snapshots[6].values(),
                                                      with_samples.snapshots[18].values()))


def test_every_evaluation_recorded_a_sample_ending_on_the_final_one(quick_weights):
    for m in LADDER:
        record = weights.read_record(quick_weights / m.folder)
        assert [p.step for p in record.history] == [0, 10, 20, 30]
        assert all(len(p.sample) == ladder_run.RECORD_LENGTH for p in record.history)
        # At the best step the model had its final weights: its recorded sample starts the final sample.
        best = next(p for p in record.history if p.step == record.best_step)
        final = (quick_weights / m.folder / f"{m.folder}.txt").read_text(encoding="utf-8")
        assert record.corpus.presentation.sample_prompt + best.sample in final, m.folder
    assert len({p.sample for p in weights.read_record(quick_weights / "milestone8").history}) > 1  # it learned


def test_snapshots_are_half_precision_weights_of_their_step(quick_weights):
    saved = weights.load(quick_weights / "milestone8", LADDER[8])
    assert saved.snapshot_steps == [10, 20]
    then = weights.load_snapshot(saved, 10)
    assert {p.dtype for p in then.model.parameters()} == {torch.float32}
    x = torch.randint(saved.tokenizer.vocab_size, (1, 20))
    assert not torch.allclose(then.model(x)[0], saved.model(x)[0])
    files = sorted((quick_weights / "milestone8" / "snapshots").iterdir())
    assert [f.name for f in files] == ["step-10.safetensors", "step-20.safetensors"]
    final = (quick_weights / "milestone8" / "model.safetensors").stat().st_size
    for f in files:  # half the bytes of the final weights, give or take the header
        assert f.stat().st_size < 0.55 * final
        assert {t.dtype for t in load_file(f).values()} == {torch.float16}
    assert not (quick_weights / "ablation-deep-no-residual" / "snapshots").exists()
    with pytest.raises(weights.WeightsError, match=r"no snapshot at step 15 \(kept: 10, 20\)"):
        weights.load_snapshot(saved, 15)


def test_the_service_loads_a_snapshot_once(service):
    then = service.models.at(8, 10)
    assert service.models.at(8, 10) is then and then is not service.models.at(8)
    assert then.snapshot_steps == service.models.saved[8].snapshot_steps == [10, 20]


def test_a_broken_snapshot_is_a_clear_error(quick_weights, tmp_path):
    shutil.copytree(quick_weights / "milestone8", tmp_path / "milestone8")
    (tmp_path / "milestone8" / "snapshots" / "step-10.safetensors").write_bytes(b"\0" * 100)
    saved = weights.load(tmp_path / "milestone8", LADDER[8])
    with pytest.raises(weights.WeightsError,
                       match=r"milestone8: snapshots/step-10.safetensors: not a readable safetensors file"):
        weights.load_snapshot(saved, 10)
    service = api.Service.from_folder(tmp_path)  # the request is refused with words, before streaming
    try:
        with pytest.raises(api.InvalidRequest, match=r"Milestone 8 · \+ dropout's weights at step 10 are broken"):
            service.generate_request(milestones=[8], prompt="WOODY:", length=5, temperature=0.8, top_k=0, seed=0,
                                     step=10)
    finally:
        service.close()


def test_generating_from_a_snapshot_is_the_same_everywhere(quick_weights, service, client, served_weights, capsys):
    if served_weights != quick_weights:
        pytest.skip("the app serves other weights")
    settings = dict(milestones=[3, 8], prompt="WOODY:", length=40, temperature=0.8, top_k=0, seed=5)
    library = service.run(service.generate_request(**settings, step=10))
    then = weights.load_snapshot(service.models.saved[8], 10)  # a snapshot decodes in PyTorch
    assert library.text(8) == generate(then.model, then.tokenizer, "WOODY:", 40, 0.8, 0, 5)
    assert library != service.run(service.generate_request(**settings))  # not the final weights
    served = client.predict(**settings, step=10, api_name="/generate")
    assert served == library.model_dump()
    final = client.predict(**settings, api_name="/generate")  # the default: today's texts
    assert final == service.run(service.generate_request(**settings)).model_dump()
    assert cli.main(["generate", "--weights", str(quick_weights), "--milestones", "3,8", "--length", "40",
                     "--seed", "5", "--prompt", "WOODY:", "--step", "10", "--json"]) == 0
    assert [t["text"] for t in json.loads(capsys.readouterr().out)] == [library.text(3), library.text(8)]
    with pytest.raises(AppError, match="Milestone 8 · \\+ dropout kept no weights at step 15; it kept steps 10, 20"):
        client.predict(milestones=[8], prompt="W", length=5, temperature=0.8, top_k=0, seed=0, step=15,
                       api_name="/generate")


def test_default_jobs_follow_the_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert ladder_run.default_jobs(torch.device("cpu"), 9) == 4
    assert ladder_run.default_jobs(torch.device("cpu"), 1) == 1  # one model: trained in this process
    assert ladder_run.default_jobs(torch.device("cuda"), 9) == 1
