"""Speech encoders: shapes, lengths, masks, Whisper padding, encoder dirs, config errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soxr
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperModel

from mtbi.config import load_config, save_config
from mtbi.data.features import log_mel
from mtbi.errors import MtbiError
from mtbi.mini.tts import Synthesizer, Voice
from mtbi.models.encoders import (
    ConformerConfig,
    ConformerSpeechEncoder,
    EncoderConfig,
    WhisperSpeechEncoder,
    load_speech_encoder,
    save_encoder,
)
from mtbi.prepare.encoder import EncoderPrepConfig

TINY_CONFORMER = ConformerConfig(output_size=32, attention_heads=2, linear_units=64, num_blocks=2, dropout=0.0,
                                 conv_channels=8, cnn_module_kernel=7)


def tiny_conformer(num_blocks: int = 2) -> ConformerSpeechEncoder:
    torch.manual_seed(0)
    config = EncoderConfig(kind="conformer", conformer=ConformerConfig(**{**TINY_CONFORMER.__dict__,
                                                                           "num_blocks": num_blocks}))
    return ConformerSpeechEncoder(config).eval()


def tiny_whisper_config(**overrides) -> WhisperConfig:
    return WhisperConfig(**{"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 128,
                            "decoder_layers": 1, "decoder_attention_heads": 4, "decoder_ffn_dim": 128,
                            "num_mel_bins": 80, "vocab_size": 100, "max_target_positions": 32, "pad_token_id": 0,
                            "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1, **overrides})


@pytest.fixture(scope="module")
def speech_feats() -> torch.Tensor:
    """80-bin log-mel features of about 3.5 s of espeak-ng speech, (T, 80)."""
    result = Synthesizer().synthesize("the quick brown fox jumps over the lazy dog near the river bank",
                                      Voice("en-us"))
    return log_mel(soxr.resample(result.samples, result.sample_rate, 16000), 80)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random HF Whisper model dir (WhisperModel: encoder keys ``encoder.*``)."""
    path = tmp_path_factory.mktemp("whisper")
    torch.manual_seed(0)
    WhisperModel(tiny_whisper_config()).save_pretrained(path)
    return path


def batch(*mats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.nn.utils.rnn.pad_sequence(list(mats), batch_first=True), torch.tensor([m.shape[0] for m in mats])


def test_conformer_shapes_and_lengths(speech_feats: torch.Tensor) -> None:
    encoder = tiny_conformer()
    feats, lens = batch(speech_feats, speech_feats[:57], speech_feats[:7])
    with torch.no_grad():
        out, out_lens = encoder(feats, lens)
    # conv2d: two 3x3 convolutions of stride 2 without padding
    expected = [((int(n) - 3) // 2 + 1 - 3) // 2 + 1 for n in lens]
    assert out_lens.tolist() == expected == encoder.output_lengths(lens).tolist()
    assert expected[1:] == [13, 1]
    assert out.shape == (3, expected[0], 32) and encoder.output_size == 32
    assert encoder.frame_shift == pytest.approx(0.04)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("input_layer, factor", [("conv2d6", 6), ("conv2d8", 8)])
def test_conformer_other_subsampling(speech_feats: torch.Tensor, input_layer: str, factor: int) -> None:
    config = EncoderConfig(kind="conformer", conformer=ConformerConfig(**{**TINY_CONFORMER.__dict__,
                                                                           "input_layer": input_layer}))
    encoder = ConformerSpeechEncoder(config).eval()
    feats, lens = batch(speech_feats, speech_feats[:100])
    with torch.no_grad():
        out, out_lens = encoder(feats, lens)
    assert encoder.frame_shift == pytest.approx(0.01 * factor)
    assert out.shape[1] == out_lens[0] and out_lens.tolist() == encoder.output_lengths(lens).tolist()
    assert abs(out_lens[1] - 100 / factor) < 2


def test_conformer_output_does_not_depend_on_the_batch_padding(speech_feats: torch.Tensor) -> None:
    """Padding reaches no output frame: not through the attention (the mask has exactly the
    output length) nor through the depthwise convolutions (padded frames are zeroed first)."""
    encoder = tiny_conformer(num_blocks=2)
    short = speech_feats[:90]
    with torch.no_grad():
        alone, alone_lens = encoder(*batch(short))
        padded = torch.cat([short, torch.randn(60, 80) * 3])  # loud noise after the utterance
        in_batch, batch_lens = encoder(padded[None], torch.tensor([90]))
    n = int(alone_lens[0])
    assert batch_lens.tolist() == [n] and in_batch.shape[1] > n
    torch.testing.assert_close(in_batch[0, :n], alone[0, :n], rtol=1e-5, atol=1e-6)


def test_conformer_too_short_input() -> None:
    with pytest.raises(MtbiError, match="too few"):
        tiny_conformer()(torch.zeros(1, 6, 80), torch.tensor([6]))


def test_wrong_mel_bins(speech_feats: torch.Tensor) -> None:
    with pytest.raises(MtbiError, match="n_mels 80"):
        tiny_conformer()(torch.zeros(1, 50, 128), torch.tensor([50]))


def test_conformer_save_load_round_trip(tmp_path: Path, speech_feats: torch.Tensor) -> None:
    encoder = tiny_conformer()
    save_encoder(tmp_path / "encoder", encoder)
    assert sorted(p.name for p in (tmp_path / "encoder").iterdir()) == ["encoder.yaml", "model.safetensors"]
    assert load_config(tmp_path / "encoder" / "encoder.yaml", EncoderConfig) == encoder.config
    loaded = load_speech_encoder(tmp_path / "encoder")
    assert isinstance(loaded, ConformerSpeechEncoder) and not loaded.training
    feats, lens = batch(speech_feats, speech_feats[:80])
    with torch.no_grad():
        expected, expected_lens = encoder(feats, lens)
        got, got_lens = loaded(feats, lens)
    assert torch.equal(got, expected) and torch.equal(got_lens, expected_lens)


def test_missing_encoder_dir(tmp_path: Path) -> None:
    with pytest.raises(MtbiError, match="encoder.yaml is missing; run stage 4"):
        load_speech_encoder(tmp_path)
    save_config(EncoderConfig(kind="conformer"), tmp_path / "encoder.yaml")
    with pytest.raises(MtbiError, match="model.safetensors is missing; run stage 4"):
        load_speech_encoder(tmp_path)


def test_whisper_pads_to_30s(whisper_dir: Path, speech_feats: torch.Tensor) -> None:
    encoder = WhisperSpeechEncoder.from_model_dir(whisper_dir)
    assert encoder.output_size == 64 and encoder.frame_shift == pytest.approx(0.02)
    assert encoder.max_frames == 3000
    feats = speech_feats[:301]
    with torch.no_grad():
        out, lens = encoder(*batch(feats))
        # what Whisper's feature extractor gives the same audio zero-padded to 30 s
        manual = torch.full((3000, 80), float(feats.max()) - 2.0)
        manual[:301] = feats
        reference = encoder.whisper(manual.T[None]).last_hidden_state
    assert lens.tolist() == [151] == encoder.output_lengths(torch.tensor([301])).tolist()
    assert out.shape == (1, 151, 64)
    torch.testing.assert_close(out, reference[:, :151])


def test_whisper_batch_equals_each_alone(whisper_dir: Path, speech_feats: torch.Tensor) -> None:
    encoder = WhisperSpeechEncoder.from_model_dir(whisper_dir)
    short = speech_feats[:100] - 0.5  # another utterance: another padding value
    with torch.no_grad():
        both, lens = encoder(*batch(speech_feats, short))
        first, _ = encoder(*batch(speech_feats))
        second, _ = encoder(*batch(short))
    assert lens.tolist() == [(speech_feats.shape[0] + 1) // 2, 50]
    torch.testing.assert_close(both[0], first[0])
    torch.testing.assert_close(both[1, :50], second[0])


def test_trimmed_whisper_batch_equals_each_alone(whisper_dir: Path, speech_feats: torch.Tensor) -> None:
    """The trimmed variant masks the batch's padding: each utterance's outputs are those of the
    utterance alone, which is WhisperEncoder's own forward on its frames only."""
    encoder = WhisperSpeechEncoder.from_model_dir(whisper_dir, trim=True)
    short = speech_feats[:100] - 0.5
    with torch.no_grad():
        both, lens = encoder(*batch(speech_feats, short))
        second, _ = encoder(*batch(short))
        w = encoder.whisper
        hidden = torch.nn.functional.gelu(w.conv2(torch.nn.functional.gelu(w.conv1(short.T[None])))).transpose(1, 2)
        hidden = hidden + w.embed_positions.weight[:50]
        for layer in w.layers:
            hidden = layer(hidden, attention_mask=None)
        reference = w.layer_norm(hidden)
        windowed, _ = WhisperSpeechEncoder.from_model_dir(whisper_dir)(*batch(short))
    assert lens.tolist() == [(speech_feats.shape[0] + 1) // 2, 50]
    torch.testing.assert_close(both[1, :50], second[0])
    torch.testing.assert_close(second, reference)
    assert not torch.allclose(second, windowed, atol=1e-3)  # the 30 s window gives other outputs


def test_whisper_rejects_inputs_over_30s(whisper_dir: Path) -> None:
    encoder = WhisperSpeechEncoder.from_model_dir(whisper_dir)
    with pytest.raises(MtbiError, match=r"30.01 s is longer than Whisper's 30 s input window \(3000 frames\)"):
        encoder(torch.zeros(1, 3001, 80), torch.tensor([3001]))


def test_whisper_encoder_dir(tmp_path: Path, whisper_dir: Path, speech_feats: torch.Tensor) -> None:
    shutil.copytree(whisper_dir, tmp_path / "site" / "models" / "whisper")
    encoder = WhisperSpeechEncoder.from_model_dir(tmp_path / "site" / "models" / "whisper")
    save_encoder(tmp_path / "site" / "exp" / "encoder", encoder)
    assert [p.name for p in (tmp_path / "site" / "exp" / "encoder").iterdir()] == ["encoder.yaml"]  # no weights
    config = load_config(tmp_path / "site" / "exp" / "encoder" / "encoder.yaml", EncoderConfig)
    # Recorded relative to the encoder dir, so that the two dirs can move together.
    assert config == EncoderConfig(kind="whisper", n_mels=80, model_dir="../../models/whisper")
    (tmp_path / "site").rename(tmp_path / "moved")
    save_encoder(tmp_path / "trimmed", WhisperSpeechEncoder.from_model_dir(whisper_dir, trim=True))
    assert load_speech_encoder(tmp_path / "trimmed").trim
    loaded = load_speech_encoder(tmp_path / "moved" / "exp" / "encoder")
    assert isinstance(loaded, WhisperSpeechEncoder)
    assert loaded.source.path == (tmp_path / "moved" / "models" / "whisper").resolve()
    with torch.no_grad():
        torch.testing.assert_close(loaded(*batch(speech_feats))[0], encoder(*batch(speech_feats))[0])


def test_whisper_loads_in_bfloat16(tmp_path: Path, whisper_dir: Path, speech_feats: torch.Tensor) -> None:
    full = WhisperSpeechEncoder.from_model_dir(whisper_dir)
    half = WhisperSpeechEncoder.from_model_dir(whisper_dir, dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    for name, tensor in half.whisper.state_dict().items():
        assert torch.equal(tensor, full.whisper.state_dict()[name].to(torch.bfloat16)), name
    save_encoder(tmp_path / "encoder", half)
    assert load_config(tmp_path / "encoder" / "encoder.yaml", EncoderConfig).dtype == "bfloat16"
    loaded = load_speech_encoder(tmp_path / "encoder")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        out_full, out_half = full(*batch(speech_feats))[0], loaded(*batch(speech_feats))[0]
    assert out_half.dtype == torch.bfloat16
    error = (out_half.float() - out_full).abs().mean() / out_full.abs().mean()
    assert 0 < error < 0.02  # rounded weights and activations, the same function


def test_whisper_from_a_full_model_dir(tmp_path: Path, whisper_dir: Path) -> None:
    """A WhisperForConditionalGeneration dir stores the encoder under ``model.encoder.``."""
    torch.manual_seed(1)
    full = WhisperForConditionalGeneration(tiny_whisper_config())
    full.save_pretrained(tmp_path)
    encoder = WhisperSpeechEncoder.from_model_dir(tmp_path)
    for name, tensor in encoder.whisper.state_dict().items():
        assert torch.equal(tensor, full.model.encoder.state_dict()[name]), name


def test_whisper_built_from_a_config_has_no_encoder_dir(tmp_path: Path) -> None:
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    encoder = WhisperSpeechEncoder(WhisperEncoder(tiny_whisper_config()))
    out, lens = encoder(torch.zeros(2, 40, 80), torch.tensor([40, 21]))
    assert out.shape == (2, 20, 64) and lens.tolist() == [20, 11]
    with pytest.raises(MtbiError, match="save it as an HF Whisper dir first"):
        save_encoder(tmp_path, encoder)


def test_not_a_whisper_dir(tmp_path: Path, whisper_dir: Path) -> None:
    with pytest.raises(MtbiError, match="model_dir '/.*/none': no such local dir .*, and not a hub id"):
        load_speech_encoder_of(tmp_path, EncoderConfig(kind="whisper", model_dir=str(tmp_path / "none")))
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(MtbiError, match="model_type is 'llama', not 'whisper'"):
        load_speech_encoder_of(tmp_path, EncoderConfig(kind="whisper", model_dir=str(tmp_path / "llama")))
    with pytest.raises(MtbiError, match="takes 80 mel bins, the encoder config says n_mels 128"):
        load_speech_encoder_of(tmp_path, EncoderConfig(kind="whisper", n_mels=128, model_dir=str(whisper_dir)))


def load_speech_encoder_of(tmp_path: Path, config: EncoderConfig) -> None:
    save_config(config, tmp_path / "encoder.yaml")
    load_speech_encoder(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("kind: conformer\nconformer:\n  outptu_size: 64\n",
     "unknown key 'outptu_size'; valid keys: output_size, attention_heads, linear_units"),
    ("kind: conformer\nctc_train:\n  step: 10\n", "unknown key 'step'; valid keys: steps, batch_size"),
    ("kind: conformer\nn_mel: 80\n",
     "unknown key 'n_mel'; valid keys: kind, n_mels, conformer, model_dir, revision, dtype, ct2_packages, trim, ctc_train"),
    ("kind: whisper\nmodel_dir: /w\ndtype: half\n", "encoder dtype 'half': use one of float32, bfloat16, float16"),
    ("kind: conformer\ndtype: bfloat16\n", "dtype applies to a frozen Whisper"),
    ("kind: lstm\n", "encoder kind 'lstm': use one of conformer, whisper"),
    ("kind: whisper\n", "needs either 'model_dir'"),
    ("kind: whisper\nmodel_dir: /w\nct2_packages: [a]\n", "not both"),
    ("kind: whisper\nct2_packages: a\n", "expected a list"),
    ("kind: conformer\nconformer:\n  input_layer: conv2d4\n", "use one of conv2d, conv2d6, conv2d8"),
    ("kind: conformer\nconformer:\n  output_size: 100\n  attention_heads: 3\n", "not a multiple"),
])
def test_config_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "encoder.yaml").write_text(text)
    with pytest.raises(MtbiError, match=message):
        load_config(tmp_path / "encoder.yaml", EncoderPrepConfig)


def test_shipped_configs() -> None:
    egs = Path(__file__).resolve().parents[1] / "egs"
    conf = egs / "TEMPLATE" / "conf"
    tiny = load_config(conf / "encoder_tiny.yaml", EncoderPrepConfig)
    assert tiny.kind == "conformer" and tiny.encoder_config().conformer == tiny.conformer
    whisper = load_config(conf / "real" / "encoder.yaml", EncoderPrepConfig)
    assert whisper.kind == "whisper" and whisper.n_mels == 128 and not whisper.trim
    assert (whisper.model_dir, whisper.dtype) == ("openai/whisper-large-v3", "bfloat16")
    smol = load_config(conf / "smol" / "encoder.yaml", EncoderPrepConfig)
    assert smol.kind == "whisper" and smol.ct2_packages and smol.trim and not smol.model_dir
    for recipe in ("librispeech_mtbi", "commonvoice_mtbi"):  # the recipes' own copies
        for name in ("encoder_tiny.yaml", "smol/encoder.yaml"):
            assert load_config(egs / recipe / "conf" / name, EncoderPrepConfig) == load_config(conf / name, EncoderPrepConfig)
