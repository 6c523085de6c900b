"""SpeechLLMModel: forward/backward, what is frozen, LoRA on and off, the KL loss, weight round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sllm_fixtures import TASKS, make_imitation_data, make_model_dirs
from torch import nn

from mtbi.errors import MtbiError
from mtbi.models.connectors import ConnectorConfig
from mtbi.models.interleave import InterleaveConfig, SpeechSegment, TextSegment
from mtbi.models.speech_llm import IGNORE, LoraSettings, SpeechLLMConfig, build_speech_llm, shared_prefix_length
from mtbi.train.dataset import DataConfig, ImitationDataset, collate, in_utt_fraction
from mtbi.train.trainer import llm_lengths


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sllm")
    data = make_imitation_data(root / "data", num_utts=4)
    encoder_dir, teacher_dir = make_model_dirs(root)
    return {**data, "encoder": encoder_dir, "teacher": teacher_dir}


def batch_for(dirs: dict, tokenizer, interleave: float = 0.0, with_text: bool = False):
    data = DataConfig(interleave=InterleaveConfig(prob=interleave))
    dataset = ImitationDataset(dirs["feats"], dirs["targets"], tokenizer, list(TASKS), data, dirs["word_align"])
    return dataset, collate([dataset[(i, i, 0)] for i in range(0, len(dataset), 3)], with_text)


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


def test_the_frozen_llm_runs_in_eval_mode_unless_lora_trains_it(dirs: dict) -> None:
    frozen, _ = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    assert not frozen.train().llm.training and frozen.connector.training
    adapted, _ = build_speech_llm(SpeechLLMConfig(lora=LoraSettings(rank=4)), dirs["encoder"], dirs["teacher"])
    assert adapted.train().llm.training  # LoRA dropout trains with the adapters


def connector_gradients(model, batch) -> tuple[dict[str, torch.Tensor], int]:
    """The connector's gradients on ``batch`` and the number of values autograd kept for them."""
    model.train()
    model.zero_grad()
    kept = [0]

    def count(tensor: torch.Tensor) -> torch.Tensor:
        kept[0] += tensor.numel()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
        loss = model(batch, 1.0 / batch.num_target_tokens)["loss"]
    loss.backward()
    return {n: p.grad.clone() for n, p in model.connector.named_parameters()}, kept[0]


def test_gradient_checkpointing_gives_the_same_gradients_from_less_memory(dirs: dict) -> None:
    torch.manual_seed(0)
    plain, tokenizer = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    checkpointed, _ = build_speech_llm(SpeechLLMConfig(gradient_checkpointing=True), dirs["encoder"], dirs["teacher"])
    checkpointed.connector.load_state_dict(plain.connector.state_dict())
    _, batch = batch_for(dirs, tokenizer, interleave=1.0)
    expected, kept_plain = connector_gradients(plain, batch)
    got, kept_checkpointed = connector_gradients(checkpointed, batch)
    assert not checkpointed.llm.training  # recomputed, yet without dropout
    assert kept_checkpointed < 0.5 * kept_plain  # the LLM layers' activations are recomputed, not kept
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7)


def test_a_bfloat16_llm_keeps_a_float32_connector(dirs: dict) -> None:
    torch.manual_seed(0)
    full, tokenizer = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    half, _ = build_speech_llm(SpeechLLMConfig(attn_implementation="eager"), dirs["encoder"], dirs["teacher"],
                               llm_dtype="bfloat16")
    half.connector.load_state_dict(full.connector.state_dict())
    assert {p.dtype for p in half.llm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.connector.parameters()} == {torch.float32}
    assert half.llm.config._attn_implementation == "eager"
    _, batch = batch_for(dirs, tokenizer, interleave=0.5)
    expected, got = connector_gradients(full, batch)[0], connector_gradients(half, batch)[0]
    for name in expected:
        assert got[name].dtype == torch.float32
        cosine = torch.nn.functional.cosine_similarity(got[name].flatten(), expected[name].flatten(), dim=0)
        assert cosine > 0.95, name  # the same gradient, up to bf16 rounding
    with pytest.raises(MtbiError, match="attn_implementation 'flash': use one of sdpa, flash_attention_2, eager"):
        SpeechLLMConfig(attn_implementation="flash")


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
    with pytest.raises(MtbiError, match="no usable target of the tasks \\['sentiment'\\]"):
        ImitationDataset(dirs["feats"], dirs["targets"], tokenizer, ["sentiment"], DataConfig())
    with pytest.raises(MtbiError, match="interleaving needs word alignments"):
        ImitationDataset(dirs["feats"], dirs["targets"], tokenizer, ["transcription"],
                         DataConfig(interleave=InterleaveConfig(prob=0.5)), tmp_path / "word_align")


def test_shared_prefix_length_leaves_every_example_a_position_before_its_response() -> None:
    speech = SpeechSegment(None, None)
    assert shared_prefix_length([[TextSegment([1, 2, 3]), speech], [TextSegment([1, 2, 4]), speech]]) == 2
    assert shared_prefix_length([[TextSegment([1, 2])], [TextSegment([1, 2])]]) == 1
    assert shared_prefix_length([[TextSegment([1, 2, 3]), speech], [speech, TextSegment([1])]]) == 0
    assert shared_prefix_length([[TextSegment([5, 2, 3]), speech], [TextSegment([1, 2, 3]), speech]]) == 0


def test_cached_prefix_and_loss_position_head_equal_one_full_pass(dirs: dict) -> None:
    """forward (shared prompt prefix once without gradient, LM head only where a response token
    is predicted) gives the loss and connector gradients of a full-vocabulary pass over whole rows."""
    torch.manual_seed(0)
    model, tokenizer = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    model.train()
    _, batch = batch_for(dirs, tokenizer, interleave=1.0)
    system = tokenizer("the happy dog found", add_special_tokens=False)["input_ids"]  # as a system prompt
    batch.segments = [[TextSegment(system), *segments] for segments in batch.segments]
    assert model.caches_prefix and shared_prefix_length(batch.segments) >= len(system)
    params = [p for p in model.parameters() if p.requires_grad]
    embeds, mask, labels = model.embed(batch)
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
    targets = labels[:, 1:]
    full = nn.functional.cross_entropy(logits[:, :-1][targets != IGNORE], targets[targets != IGNORE], reduction="sum")
    full_grads = torch.autograd.grad(full, params)
    loss = model(batch, 1.0)["loss"]
    grads = torch.autograd.grad(loss, params)
    assert loss.item() == pytest.approx(full.item(), rel=1e-5)
    for g, f in zip(grads, full_grads):
        torch.testing.assert_close(g, f, rtol=1e-4, atol=1e-6)


def test_teacher_answers_cut_at_max_new_tokens_are_learned_without_eos(dirs: dict, tmp_path: Path) -> None:
    """Cut answers get no eos, in the examples and in the lengths the batch sampler plans with;
    lines written before ``truncated`` was recorded count as cut when ``gen.max_new_tokens`` long."""
    model, tokenizer = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    records = [json.loads(line) for line in dirs["targets"].read_text().splitlines()]
    lengths = [len(tokenizer(r["response"], add_special_tokens=False)["input_ids"]) for r in records]
    for n, record in enumerate(records):
        if n % 3 == 2:  # an old line: cut when as long as max_new_tokens
            record["gen"] = {"max_new_tokens": lengths[n] if n % 2 else lengths[n] + 1}
        else:
            record["truncated"] = n % 2 == 1
    targets = tmp_path / "targets.jsonl"
    targets.write_text("".join(json.dumps(r) + "\n" for r in records))
    for response, ends in (("teacher", lambda n: n % 2 == 0), ("transcript", lambda n: True)):
        dataset = ImitationDataset(dirs["feats"], targets, tokenizer, list(TASKS), DataConfig(response=response))
        assert len(dataset) == len(records)
        examples = [dataset[(n, 0, 0)] for n in range(len(dataset))]
        for n, example in enumerate(examples):
            answer = records[n]["response"] if response == "teacher" else records[n]["transcript"]
            ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
            assert example.response == ids + [tokenizer.eos_token_id] * ends(n)
        with torch.no_grad():
            _, mask, _ = model.embed(collate(examples))
        assert list(llm_lengths(model, dataset)) == mask.sum(1).tolist()


def test_empty_cut_answers_are_left_out(dirs: dict, tmp_path: Path) -> None:
    """A cut answer of no tokens has nothing to learn (and would make a batch of no target
    tokens); an empty answer that ended is kept: its eos is learned."""
    _, tokenizer = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    records = [json.loads(line) for line in dirs["targets"].read_text().splitlines()]
    records[0].update(response="", truncated=True)
    records[1].update(response="", truncated=False)
    targets = tmp_path / "targets.jsonl"
    targets.write_text("".join(json.dumps(r) + "\n" for r in records))
    dataset = ImitationDataset(dirs["feats"], targets, tokenizer, list(TASKS), DataConfig())
    assert len(dataset) == len(records) - 1
    assert len(dataset.lengths) == len(dataset.utt_index) == len(dataset.text_tokens) == len(dataset)
    kept = dataset[(0, 0, 0)]
    assert (kept.utt, kept.task, kept.response) == (records[1]["utt"], records[1]["task"], [tokenizer.eos_token_id])
    assert [dataset[(n, 0, 0)].utt for n in range(len(dataset))] == [r["utt"] for r in records[1:]]
    for record in records:
        record.update(response="", truncated=True)
    targets.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(MtbiError, match=f"no usable target .*{len(records)} empty cut answers left out"):
        ImitationDataset(dirs["feats"], targets, tokenizer, list(TASKS), DataConfig())


def test_utt_fraction_trains_on_nested_shares_of_the_utterances(dirs: dict) -> None:
    utts = [f"spk{n % 7}-utt{n:04d}" for n in range(4000)]
    kept = {f: {u for u in utts if in_utt_fraction(u, f)} for f in (0.1, 0.25, 0.5, 1.0)}
    assert kept[0.1] < kept[0.25] < kept[0.5] < kept[1.0] == set(utts)
    for fraction in (0.1, 0.25, 0.5):  # within 3 binomial standard deviations (at most 0.024)
        assert len(kept[fraction]) / len(utts) == pytest.approx(fraction, abs=0.024)
    _, tokenizer = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    full = ImitationDataset(dirs["feats"], dirs["targets"], tokenizer, list(TASKS), DataConfig())
    half = ImitationDataset(dirs["feats"], dirs["targets"], tokenizer, list(TASKS), DataConfig(utt_fraction=0.5))
    full_utts = {full[(n, 0, 0)].utt for n in range(len(full))}
    assert {half[(n, 0, 0)].utt for n in range(len(half))} == {u for u in full_utts if in_utt_fraction(u, 0.5)}
    assert 0 < len(half) < len(full)
    with pytest.raises(MtbiError, match="data.utt_fraction 0"):
        DataConfig(utt_fraction=0)


def test_interleaving_curriculum_follows_the_training_step_of_each_item(dirs: dict) -> None:
    """With until_step 2 and 2 batches a step (gradient accumulation), items of batches 0-3 are
    interleaved and items of batch 4 on are speech only."""
    _, tokenizer = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    data = DataConfig(interleave=InterleaveConfig(prob=1.0, min_ratio=0.5, max_ratio=0.5, until_step=2))
    dataset = ImitationDataset(dirs["feats"], dirs["targets"], tokenizer, list(TASKS), data, dirs["word_align"],
                               batches_per_step=2)
    for batch, interleaved in ((0, True), (3, True), (4, False), (9, False)):
        for i in range(len(dataset)):
            speech = [s for s in dataset[(i, 7, batch)].segments if isinstance(s, SpeechSegment)]
            assert (speech != [SpeechSegment(None, None)]) == interleaved, (batch, i, speech)
