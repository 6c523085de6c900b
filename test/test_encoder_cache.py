"""Cached frozen-encoder outputs (mtbi/models/encoder_cache.py) against the live encoder."""

from __future__ import annotations

import logging
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from sllm_fixtures import TASKS, make_imitation_data, make_model_dirs, make_random_encoder
from transformers import WhisperConfig, WhisperModel

from mtbi.data.datadir import read_table
from mtbi.errors import MtbiError
from mtbi.models.encoder_cache import cache_gb, cache_step, encode_feats
from mtbi.models.encoders import WhisperSpeechEncoder, load_speech_encoder, save_encoder
from mtbi.models.speech_llm import SpeechLLMConfig, build_speech_llm
from mtbi.train.dataset import DataConfig, ImitationDataset, collate


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cache")
    encoder, teacher = make_model_dirs(root)
    data = make_imitation_data(root / "data", num_utts=5)
    encode_feats(encoder, data["feats"], root / "cache", batch_size=2, dtype="float32")  # exact comparisons
    return {"root": root, "encoder": encoder, "teacher": teacher, "cache": root / "cache", **data}


def test_cached_outputs_equal_the_live_encoder_per_utterance(dirs: dict) -> None:
    encoder = load_speech_encoder(dirs["encoder"]).eval()
    cached = dict(kaldiio.load_scp(str(dirs["cache"] / "feats.scp")))
    feats = dict(kaldiio.load_scp(str(dirs["feats"] / "feats.scp")))
    assert sorted(cached) == sorted(feats)
    frames = read_table(dirs["cache"] / "utt2num_frames")
    for utt, mat in feats.items():
        with torch.no_grad():
            out, lens = encoder(torch.tensor(mat)[None], torch.tensor([mat.shape[0]]))
        assert cached[utt].shape == (int(lens[0]), encoder.output_size) == (int(frames[utt]), encoder.output_size)
        torch.testing.assert_close(torch.tensor(cached[utt]), out[0, :int(lens[0])], atol=1e-5, rtol=1e-4)


def test_training_loss_from_the_cache_equals_the_live_loss(dirs: dict) -> None:
    torch.manual_seed(0)
    model, tokenizer = build_speech_llm(SpeechLLMConfig(), dirs["encoder"], dirs["teacher"])
    model.eval()
    config = DataConfig(tasks=list(TASKS))
    live = ImitationDataset(dirs["feats"], dirs["targets"], tokenizer, list(TASKS), config)
    cached = ImitationDataset(dirs["feats"], dirs["targets"], tokenizer, list(TASKS), config,
                              encoded_dir=dirs["cache"])
    assert len(live) == len(cached) and list(live.lengths) == list(cached.lengths)
    indices = list(range(0, len(live), 3))
    live_batch = collate([live[(i, 0, 0)] for i in indices])
    cached_batch = collate([cached[(i, 0, 0)] for i in indices])
    assert cached_batch.encoded and not live_batch.encoded
    with torch.no_grad():
        live_loss = model(live_batch, 1.0)["ce_sum"]
        cached_loss = model(cached_batch, 1.0)["ce_sum"]
    torch.testing.assert_close(cached_loss, live_loss, atol=1e-4, rtol=1e-5)
    trainable = build_speech_llm(SpeechLLMConfig(train_encoder=True), dirs["encoder"], dirs["teacher"])[0]
    with pytest.raises(MtbiError, match="cannot train the encoder"):
        trainable(cached_batch, 1.0)


def test_the_cache_is_kept_until_the_encoder_changes(dirs: dict, tmp_path: Path) -> None:
    scp = dirs["cache"] / "feats.scp"
    before = scp.stat().st_mtime_ns
    encode_feats(dirs["encoder"], dirs["feats"], dirs["cache"], dtype="float32")
    assert scp.stat().st_mtime_ns == before  # done with the same encoder, features and dtype: skipped
    other = make_random_encoder(tmp_path / "other", seed=1)
    encode_feats(other, dirs["feats"], tmp_path / "cache")
    first = dict(kaldiio.load_scp(str(tmp_path / "cache" / "feats.scp")))
    make_random_encoder(other, seed=2)  # "retrained": its files changed
    encode_feats(other, dirs["feats"], tmp_path / "cache")
    second = dict(kaldiio.load_scp(str(tmp_path / "cache" / "feats.scp")))
    utt = sorted(first)[0]
    assert not torch.allclose(torch.tensor(first[utt]), torch.tensor(second[utt]))
    with pytest.raises(MtbiError, match="made by stage 2"):
        encode_feats(other, tmp_path / "nowhere", tmp_path / "cache2")


def test_the_cache_holds_only_the_utterances_asked_for(dirs: dict, tmp_path: Path) -> None:
    everything = dict(kaldiio.load_scp(str(dirs["cache"] / "feats.scp")))
    some = sorted(everything)[1::2]
    encode_feats(dirs["encoder"], dirs["feats"], tmp_path / "some", utts=some + ["not-in-the-set"], dtype="float32")
    cached = dict(kaldiio.load_scp(str(tmp_path / "some" / "feats.scp")))
    assert sorted(cached) == some
    for utt in some:
        torch.testing.assert_close(torch.tensor(cached[utt]), torch.tensor(everything[utt]), atol=1e-5, rtol=1e-5)
    assert (tmp_path / "some" / "utt2num_frames").read_text().count("\n") == len(some)
    encode_feats(dirs["encoder"], dirs["feats"], tmp_path / "some", utts=some[:1])  # other utterances: redone
    assert list(kaldiio.load_scp(str(tmp_path / "some" / "feats.scp"))) == some[:1]


def test_trimmed_whisper_cache_equals_the_live_encoder(dirs: dict, tmp_path: Path) -> None:
    """The smol configuration's frozen encoder (Whisper, trimmed) cached like the Conformer."""
    torch.manual_seed(0)
    WhisperModel(WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                               decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128, num_mel_bins=80,
                               vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                               decoder_start_token_id=1)).save_pretrained(tmp_path / "whisper")
    save_encoder(tmp_path / "encoder", WhisperSpeechEncoder.from_model_dir(tmp_path / "whisper", trim=True))
    encode_feats(tmp_path / "encoder", dirs["feats"], tmp_path / "cache", batch_size=3, dtype="float32")
    encoder = load_speech_encoder(tmp_path / "encoder")
    cached = dict(kaldiio.load_scp(str(tmp_path / "cache" / "feats.scp")))
    for utt, mat in kaldiio.load_scp(str(dirs["feats"] / "feats.scp")).items():
        with torch.no_grad():
            out, lens = encoder(torch.tensor(mat)[None], torch.tensor([mat.shape[0]]))
        assert cached[utt].shape == (int(lens[0]), 64)
        torch.testing.assert_close(torch.tensor(cached[utt]), out[0, :int(lens[0])], atol=1e-5, rtol=1e-4)
    before = cache_step(tmp_path / "encoder", dirs["feats"], tmp_path / "cache", dtype="float32").stamp
    WhisperModel.from_pretrained(tmp_path / "whisper").save_pretrained(tmp_path / "whisper")  # weights rewritten
    assert cache_step(tmp_path / "encoder", dirs["feats"], tmp_path / "cache", dtype="float32").stamp != before


def test_float16_cache_halves_the_disk_and_rounds_like_float16(dirs: dict, tmp_path: Path) -> None:
    assert encode_feats(dirs["encoder"], dirs["feats"], tmp_path / "half", batch_size=2)  # float16: the default
    half = dict(kaldiio.load_scp(str(tmp_path / "half" / "feats.scp")))
    full = dict(kaldiio.load_scp(str(dirs["cache"] / "feats.scp")))
    assert sorted(half) == sorted(full)
    for utt, mat in full.items():
        assert half[utt].dtype == np.float16
        np.testing.assert_array_equal(half[utt], mat.astype(np.float16))
    ratio = (tmp_path / "half" / "feats.ark").stat().st_size / (dirs["cache"] / "feats.ark").stat().st_size
    assert 0.45 < ratio < 0.55
    with pytest.raises(MtbiError, match="encoder cache dtype 'int8'"):
        encode_feats(dirs["encoder"], dirs["feats"], tmp_path / "bad", dtype="int8")


def test_a_cache_over_its_budget_is_not_written(dirs: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    encoder = load_speech_encoder(dirs["encoder"])
    frames = {u: int(n) for u, n in read_table(dirs["feats"] / "utt2num_frames").items()}
    size = cache_gb(encoder, frames.values(), "float16")
    assert size == pytest.approx(sum(int(n) for n in read_table(dirs["cache"] / "utt2num_frames").values())
                                 * encoder.output_size * 2 / 1e9)
    out = tmp_path / "cache"
    encode_feats(make_random_encoder(tmp_path / "old", seed=3), dirs["feats"], out)  # an outdated cache
    with caplog.at_level(logging.WARNING):
        assert not encode_feats(dirs["encoder"], dirs["feats"], out, max_gb=size * 0.9)
    assert "over the budget" in caplog.text and "training computes them from the features" in caplog.text
    assert not out.exists()  # nothing left that training could mistake for this encoder's outputs
    assert encode_feats(dirs["encoder"], dirs["feats"], out, max_gb=size * 1.1)
    assert (out / ".done").is_file()
