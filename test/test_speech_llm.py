"""SpeechLLM: forward/backward, what is frozen, LoRA on and off, the KL loss, weight round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sllm_fixtures import TASKS, make_imitation_data, make_model_dirs

from mtbi.errors import MtbiError
from mtbi.models.connectors import ConnectorConfig
from mtbi.models.interleave import InterleaveConfig, TextSegment
from mtbi.models.speech_llm import LoraSettings, SpeechLLMConfig, build_speech_llm
from mtbi.train.dataset import DataConfig, ImitationDataset, collate


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sllm")
    data = make_imitation_data(root / "data", num_utts=4)
    encoder_dir, teacher_dir = make_model_dirs(root)
    return {**data, "encoder": encoder_dir, "teacher": teacher_dir}


def batch_for(dirs: dict, tokenizer, interleave: float = 0.0, with_text: bool = False):
    data = DataConfig(interleave=InterleaveConfig(prob=interleave))
    dataset = ImitationDataset(dirs["feats"], dirs["targets"], tokenizer, list(TASKS), data, dirs["word_align"])
    return dataset, collate([dataset[(i, i)] for i in range(0, len(dataset), 3)], with_text)


@pytest.mark.parametrize("kind", ["conv", "stack_mlp", "qformer"])
def test_only_the_connector_learns_and_the_loss_is_per_response_token(dirs: dict, kind: str) -> None:
    torch.manual_seed(0)
    config = SpeechLLMConfig(connector=ConnectorConfig(kind=kind, stride=2, window=4, num_queries=2, hidden_size=32,
                                                       num_layers=1))
    model, tokenizer = build_speech_llm(config, dirs["encoder"], dirs["teacher"])
    model.train()
    assert not model.encoder.training  # frozen encoder: eval mode even while training
    _, batch = batch_for(dirs, tokenizer, interleave=1.0)
    out = model(batch, 1.0 / batch.num_target_tokens)
    assert out["loss"].item() == pytest.approx(out["ce_sum"].item() / batch.num_target_tokens)
    # a random LLM: about log(vocabulary) per token
    assert 0.5 * torch.log(torch.tensor(len(tokenizer))) < out["loss"] < 2 * torch.log(torch.tensor(len(tokenizer)))
    out["loss"].backward()
    for name, p in model.named_parameters():
        if name.startswith("connector."):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert set(model.trainable_state_dict()) == {n for n, _ in model.connector.named_parameters(prefix="connector")}


def test_lora_adds_trainable_adapters_and_kl_uses_the_llm_without_them(dirs: dict) -> None:
    torch.manual_seed(0)
    config = SpeechLLMConfig(lora=LoraSettings(rank=4, alpha=8, dropout=0.0))
    model, tokenizer = build_speech_llm(config, dirs["encoder"], dirs["teacher"])
    trainable = set(model.trainable_state_dict())
    assert any("lora_A" in n for n in trainable) and any(n.startswith("connector.") for n in trainable)
    assert not any("lora" not in n and n.startswith("llm.") for n in trainable)
    _, batch = batch_for(dirs, tokenizer, with_text=True)
    teacher = model.teacher_logits(batch)
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)  # adapters now change the LLM's outputs; the teacher must not see them
    assert torch.equal(model.teacher_logits(batch), teacher)
    assert teacher.shape == (batch.num_target_tokens, len(tokenizer))
    out = model(batch, 1.0, kl_weight=1.0, ce_weight=0.0)
    assert out["kl_sum"] > 0 and torch.isclose(out["loss"], out["kl_sum"])
    out["loss"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_A" in n)


def test_kl_is_zero_when_the_student_reads_the_transcript(dirs: dict) -> None:
    model, tokenizer = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    dataset, batch = batch_for(dirs, tokenizer, with_text=True)
    batch.segments = [[TextSegment(prompt)] for prompt in batch.text_prompts]
    out = model(batch, 1.0, kl_weight=1.0)
    assert out["kl_sum"].abs() < 1e-3


def test_trainable_weights_round_trip_and_a_mismatch_is_refused(dirs: dict) -> None:
    torch.manual_seed(0)
    model, tokenizer = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    torch.manual_seed(1)
    other, _ = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    other.load_trainable_state_dict(model.trainable_state_dict(), "ckpt")
    _, batch = batch_for(dirs, tokenizer)
    with torch.no_grad():
        assert torch.equal(model(batch, 1.0)["loss"], other(batch, 1.0)["loss"])
    wider, _ = build_speech_llm(SpeechLLMConfig(connector=ConnectorConfig(hidden_size=64)), dirs["encoder"], dirs["teacher"])
    with pytest.raises(MtbiError, match="ckpt: connector.convs.0.weight has shape .* another config"):
        wider.load_trainable_state_dict(model.trainable_state_dict(), "ckpt")
    with pytest.raises(MtbiError, match="missing .*was it trained with another config"):
        other.load_trainable_state_dict({}, "ckpt")


def test_held_out_and_missing_inputs_are_clear_errors(dirs: dict, tmp_path: Path) -> None:
    _, tokenizer = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    with pytest.raises(MtbiError, match="targets.jsonl is missing; it is made by stage 5"):
        ImitationDataset(dirs["feats"], tmp_path / "targets.jsonl", tokenizer, ["transcription"], DataConfig())
    with pytest.raises(MtbiError, match="no target of the tasks \\['sentiment'\\]"):
        ImitationDataset(dirs["feats"], dirs["targets"], tokenizer, ["sentiment"], DataConfig())
    with pytest.raises(MtbiError, match="interleaving needs word alignments"):
        ImitationDataset(dirs["feats"], dirs["targets"], tokenizer, ["transcription"],
                         DataConfig(interleave=InterleaveConfig(prob=0.5)), tmp_path / "word_align")
