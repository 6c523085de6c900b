"""CTC model and stage 4 (encoder): vocabulary, decoding, save/load, a short real training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kaldiio
import pytest
import soxr
import torch
import yaml
from test_encoders import TINY_CONFORMER, tiny_whisper_config
from transformers import WhisperModel

from mtbi.bin import prepare_encoder
from mtbi.data.features import log_mel
from mtbi.errors import MtbiError
from mtbi.mini.tts import Synthesizer, Voice
from mtbi.models.ctc import CtcModel, build_vocabulary
from mtbi.models.encoders import ConformerSpeechEncoder, EncoderConfig, WhisperSpeechEncoder, load_speech_encoder, save_encoder
from mtbi.train.ctc_pretrain import CtcTrainConfig, read_feature_set, spec_augment, train_ctc, warp_mel
from mtbi.train.schedule import warmup_cosine

SENTENCES = ["the red cat sat", "a big dog ran home", "six green hats", "the cat ran", "red dogs sat home",
             "big green cat"]


def tiny_ctc_model(vocabulary: list[str] | None = None) -> CtcModel:
    torch.manual_seed(0)
    encoder = ConformerSpeechEncoder(EncoderConfig(kind="conformer", conformer=TINY_CONFORMER))
    return CtcModel(encoder, vocabulary or build_vocabulary(SENTENCES)).eval()


@pytest.fixture(scope="module")
def feature_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage-2 feature dir of the espeak-ng SENTENCES (LibriSpeech-style upper-case text)."""
    path = tmp_path_factory.mktemp("feats")
    synth = Synthesizer()
    frames, texts = [], []
    with kaldiio.WriteHelper(f"ark,scp:{path / 'feats.ark'},{path / 'feats.scp'}") as writer:
        for n, text in enumerate(SENTENCES):
            utt = f"spk-{n:02d}"
            result = synth.synthesize(text, Voice("en-us" if n % 2 else "en-gb-x-rp", rate=220))
            feats = log_mel(soxr.resample(result.samples, result.sample_rate, 16000), 80)
            writer(utt, feats.numpy())
            frames.append(f"{utt} {feats.shape[0]}\n")
            texts.append(f"{utt} {text.upper()}\n")
    (path / "utt2num_frames").write_text("".join(frames))
    (path / "text").write_text("".join(texts))
    return path


def test_vocabulary_and_text_to_ids() -> None:
    assert build_vocabulary(["THE CAT'S hat.", "Zoë, 42"]) == ["<blank>", "|", "'", "a", "c", "e", "h", "o",
                                                             "s", "t", "z", "ë"]
    model = tiny_ctc_model(build_vocabulary(["the cat's hat"]))
    v = model.vocabulary
    assert model.text_to_ids("The  CAT'S") == [v.index(c) for c in "the|cat's"]
    assert model.text_to_ids("hat, 42 cats!") == [v.index(c) for c in "hat|cats"]  # unknown characters dropped
    assert model.text_to_ids("  42 the ") == [v.index(c) for c in "the"]
    assert model.normalize_text("The HAT; the cat.") == "the hat the cat"
    assert model.frame_shift == pytest.approx(0.04)


def test_bad_vocabulary() -> None:
    with pytest.raises(MtbiError, match=re.escape("starts with <blank> and |")):
        tiny_ctc_model(["a", "b"])


def test_log_probs_and_lengths(feature_dir: Path) -> None:
    model = tiny_ctc_model()
    features = read_feature_set(feature_dir)
    feats = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(features.features.load(u)) for u in features.utts[:3]], batch_first=True)
    lens = torch.tensor(features.num_frames[:3])
    with torch.no_grad():
        log_probs, out_lens = model.log_probs(feats, lens)
    assert log_probs.shape == (3, int(out_lens.max()), len(model.vocabulary))
    assert out_lens.tolist() == model.encoder.output_lengths(lens).tolist()
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]))


def test_greedy_decode_collapses_repeats_and_blanks(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_ctc_model(build_vocabulary(["hello world"]))
    v = model.vocabulary
    path = ["<blank>", "h", "h", "e", "l", "<blank>", "l", "o", "o", "|", "|", "w", "<blank>", "o", "|", "x"]
    log_probs = torch.full((1, len(path), len(v)), -10.0)
    for t, token in enumerate(path[:-1]):
        log_probs[0, t, v.index(token)] = 0.0
    monkeypatch.setattr(model, "log_probs", lambda feats, lens: (log_probs, torch.tensor([len(path) - 1])))
    assert model.greedy_decode(torch.zeros(1, 70, 80), torch.tensor([70])) == ["hello wo"]


def test_save_and_from_pretrained(tmp_path: Path, feature_dir: Path) -> None:
    model = tiny_ctc_model()
    torch.nn.init.normal_(model.ctc_head.weight)
    model.save_pretrained(tmp_path / "ctc")
    assert sorted(p.name for p in (tmp_path / "ctc").iterdir()) == ["ctc_vocabulary.txt", "encoder.yaml",
                                                                   "model.safetensors"]
    loaded = CtcModel.from_pretrained(tmp_path / "ctc")
    assert loaded.vocabulary == model.vocabulary and not loaded.training
    features = read_feature_set(feature_dir)
    feats = torch.tensor(features.features.load(features.utts[0]))[None]
    lens = torch.tensor([feats.shape[1]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_probs(feats, lens)[0], model.log_probs(feats, lens)[0], rtol=0, atol=0)
        encoder = load_speech_encoder(tmp_path / "ctc")
        assert isinstance(encoder, ConformerSpeechEncoder)
        assert torch.equal(encoder(feats, lens)[0], model.encoder(feats, lens)[0])
    assert loaded.greedy_decode(feats, lens) == model.greedy_decode(feats, lens)


def test_ctc_head_on_whisper(tmp_path: Path) -> None:
    """A CTC head on a Whisper encoder: the head is saved, Whisper's weights are not."""
    WhisperModel(tiny_whisper_config()).save_pretrained(tmp_path / "whisper")
    model = CtcModel(WhisperSpeechEncoder.from_model_dir(tmp_path / "whisper"), build_vocabulary(SENTENCES))
    model.save_pretrained(tmp_path / "ctc")
    loaded = CtcModel.from_pretrained(tmp_path / "ctc")
    assert torch.equal(loaded.ctc_head.weight, model.ctc_head.weight) and loaded.frame_shift == pytest.approx(0.02)
    assert (tmp_path / "ctc" / "model.safetensors").stat().st_size < 20000


def test_from_pretrained_needs_a_ctc_dir(tmp_path: Path) -> None:
    save_encoder(tmp_path, tiny_ctc_model().encoder)
    with pytest.raises(MtbiError, match="ctc_vocabulary.txt is missing"):
        CtcModel.from_pretrained(tmp_path)


def test_warp_mel() -> None:
    ramp = torch.arange(10.0).repeat(3, 1)  # (T=3, n_mels=10), the value is the bin number
    assert torch.equal(warp_mel(ramp, 1.0), ramp)
    torch.testing.assert_close(warp_mel(ramp, 1.25)[0], torch.arange(10.0) / 1.25)  # formants move up
    torch.testing.assert_close(warp_mel(ramp, 0.8)[1], (torch.arange(10.0) / 0.8).clamp(max=9))


def test_spec_augment_masks_inside_each_utterance() -> None:
    feats = torch.randn(2, 200, 80)
    lens = torch.tensor([200, 120])
    config = CtcTrainConfig(freq_warp=0.1, freq_masks=1, freq_mask_bins=10, time_masks=2, time_mask_frames=20)
    out = spec_augment(feats, lens, [1, 2], config)
    assert torch.equal(out, spec_augment(feats, lens, [1, 2], config))  # the seeds decide
    assert torch.equal(out[1, 120:], feats[1, 120:])  # padding untouched
    unwarped = spec_augment(feats, lens, [1, 2], CtcTrainConfig(freq_warp=0.0, freq_masks=1, freq_mask_bins=10,
                                                                 time_masks=2, time_mask_frames=20))
    masked = (unwarped != feats).float().mean()
    assert 0 < masked < 0.3
    assert not torch.equal(out, unwarped)


def test_short_training_reduces_the_loss(feature_dir: Path) -> None:
    features = read_feature_set(feature_dir)
    encoder = EncoderConfig(kind="conformer", conformer=TINY_CONFORMER)
    model, report = train_ctc(encoder, CtcTrainConfig(steps=40, batch_size=3, learning_rate=3e-3, warmup_steps=5,
                                                      freq_warp=0.0, time_masks=0, freq_masks=0), features)
    torch.manual_seed(0)
    untrained = CtcModel(ConformerSpeechEncoder(encoder), model.vocabulary).eval()
    feats = torch.nn.utils.rnn.pad_sequence([torch.tensor(features.features.load(u)) for u in features.utts],
                                            batch_first=True)
    lens = torch.tensor(features.num_frames)
    targets = [model.text_to_ids(t) for t in features.texts]
    with torch.no_grad():
        before = untrained.loss(feats, lens, targets).item()
        after = model.loss(feats, lens, targets).item()
    assert after < 0.5 * before, (before, after)
    assert report["steps"] == 40 and report["train_utterances"] == len(SENTENCES)


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_stage4_conformer(tmp_path: Path, feature_dir: Path) -> None:
    conf = write_config(tmp_path / "encoder.yaml", {
        "kind": "conformer", "conformer": dict(TINY_CONFORMER.__dict__),
        "ctc_train": {"steps": 3, "batch_size": 2, "warmup_steps": 1}})
    argv = ["--encoder_conf", str(conf), "--train_dir", str(feature_dir), "--valid_dir", str(feature_dir),
            "--test_dir", str(feature_dir), "--out_dir", str(tmp_path / "exp" / "encoder")]
    prepare_encoder.run_main(prepare_encoder.build_parser, prepare_encoder.main, argv, prepare_encoder.CONFIG)
    out = tmp_path / "exp" / "encoder"
    assert {p.name for p in out.iterdir()} == {".done", "encoder.yaml", "model.safetensors", "ctc_vocabulary.txt",
                                               "encoder_report.md"}
    report = (out / "encoder_report.md").read_text()
    assert "| feats0 | 6 |" in report and "3 steps on 6 utterances" in report
    assert json.loads((out / ".done").read_text())["config"]["ctc_train"]["steps"] == 3
    assert CtcModel.from_pretrained(out).vocabulary == build_vocabulary(SENTENCES)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    prepare_encoder.run_main(prepare_encoder.build_parser, prepare_encoder.main, argv, prepare_encoder.CONFIG)  # done: skipped
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    (feature_dir / "text").touch()  # newer inputs: redone
    prepare_encoder.run_main(prepare_encoder.build_parser, prepare_encoder.main, argv, prepare_encoder.CONFIG)
    assert (out / "model.safetensors").stat().st_mtime_ns > stamp


def test_stage4_whisper(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    WhisperModel(tiny_whisper_config()).save_pretrained(tmp_path / "whisper")
    conf = write_config(tmp_path / "encoder.yaml", {"kind": "whisper", "model_dir": str(tmp_path / "whisper")})
    argv = ["--encoder_conf", str(conf), "--train_dir", "nowhere", "--valid_dir", "nowhere",
            "--out_dir", str(tmp_path / "encoder")]
    prepare_encoder.run_main(prepare_encoder.build_parser, prepare_encoder.main, argv, prepare_encoder.CONFIG)
    assert {p.name for p in (tmp_path / "encoder").iterdir()} == {".done", "encoder.yaml"}
    assert isinstance(load_speech_encoder(tmp_path / "encoder"), WhisperSpeechEncoder)
    write_config(conf, {"kind": "whisper", "model_dir": str(tmp_path / "whisper"), "n_mels": 128})
    with pytest.raises(SystemExit):
        prepare_encoder.run_main(prepare_encoder.build_parser, prepare_encoder.main, argv, prepare_encoder.CONFIG)
    assert "takes 80 mel bins, the encoder config says n_mels 128" in capsys.readouterr().err


def test_stage4_missing_features(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    conf = write_config(tmp_path / "encoder.yaml", {"kind": "conformer"})
    argv = ["--encoder_conf", str(conf), "--train_dir", str(tmp_path / "dump" / "train"), "--valid_dir",
            str(tmp_path), "--out_dir", str(tmp_path / "encoder")]
    with pytest.raises(SystemExit):
        prepare_encoder.run_main(prepare_encoder.build_parser, prepare_encoder.main, argv, prepare_encoder.CONFIG)
    assert "dump/train is missing; it is made by stage 2" in capsys.readouterr().err


def test_warmup_cosine() -> None:
    factors = [warmup_cosine(step, 10, 30) for step in range(31)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[10] == pytest.approx(1.0) and factors[20] == pytest.approx(0.5) and factors[30] == 0.0
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert warmup_cosine(0, 20, 30) == pytest.approx(0.05)  # warmup longer than the decay
