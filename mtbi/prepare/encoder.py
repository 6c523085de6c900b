"""Stage 4, encoder part: CTC-pretrain the tiny Conformer, or check (or convert) a Whisper dir.

``conf/encoder_*.yaml`` is an :class:`EncoderPrepConfig`: the :class:`EncoderConfig` keys
(``kind``, ``n_mels``, ``conformer``, ``model_dir``, ...) plus ``ctc_train`` for kind conformer.

- ``conformer``: CTC-train the Conformer (:mod:`mtbi.train.ctc_pretrain`), save it as the
  encoder dir and score greedy-CTC WER on the evaluation sets (``encoder_report.md``);
- ``whisper``: check that ``model_dir`` (a local dir, or a hub id downloaded into the hub cache
  and pinned to the commit it resolves to) is an HF Whisper model with ``n_mels`` mel bins (or
  first convert the CTranslate2 Whisper of ``ct2_packages`` into ``<encoder dir>/whisper``) and
  write the encoder dir that points to it (hub id + commit, or a path relative to the dir).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from mtbi.config import save_config
from mtbi.errors import MtbiError
from mtbi.hub import ResolvedModel, resolve_model
from mtbi.models.ctc import VOCABULARY_FILE
from mtbi.models.encoders import CONFIG_FILE, WEIGHTS_FILE, EncoderConfig, check_whisper_dir
from mtbi.models.whisper_ct2 import convert_packaged_whisper
from mtbi.packaged import packaged_files
from mtbi.stage import Step, atomic_write, marker
from mtbi.train.ctc_pretrain import CtcTrainConfig, evaluate_wer, read_feature_set, report_markdown, train_ctc

logger = logging.getLogger(__name__)

REPORT_FILE = "encoder_report.md"
CONVERTED_WHISPER_DIR = "whisper"  # ct2_packages: the HF Whisper dir made in the encoder dir


@dataclass(frozen=True)
class EncoderPrepConfig(EncoderConfig):
    """A stage-4 encoder config file: the encoder and how to pre-train it (kind conformer)."""

    ctc_train: CtcTrainConfig = field(default_factory=CtcTrainConfig)

    def encoder_config(self) -> EncoderConfig:
        """The encoder part alone (what ``encoder.yaml`` records)."""
        return EncoderConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EncoderConfig)})


def prepare_encoder(config: EncoderPrepConfig, out_dir: str | Path, train_dir: str | Path,
                    eval_dirs: list[str | Path]) -> dict:
    """Make the encoder dir ``out_dir`` of ``config``; return its report (for a Conformer: the
    training summary and a WER per evaluation set, also written to ``encoder_report.md``)."""
    out_dir = Path(out_dir)
    if config.kind == "whisper":
        source = resolve_model(config.model_dir, config.revision, what="encoder model_dir") if config.model_dir \
            else ResolvedModel(convert_packaged_whisper(config.ct2_packages, out_dir / CONVERTED_WHISPER_DIR))
        whisper = check_whisper_dir(source.path)
        if whisper.num_mel_bins != config.n_mels:
            raise MtbiError(f"{config.model_dir or source.path}: this Whisper model takes {whisper.num_mel_bins} "
                            f"mel bins, the encoder config says n_mels {config.n_mels}; make them equal "
                            f"(and extract features with mtbi.sh --n_mels {whisper.num_mel_bins})")
        reference = source.reference(out_dir)
        encoder_config = dataclasses.replace(config.encoder_config(), model_dir=reference["model"],
                                             revision=reference["revision"], ct2_packages=None)
        # Files of a Conformer made here before would be read as belonging to this encoder.
        for name in (WEIGHTS_FILE, VOCABULARY_FILE, REPORT_FILE):
            (out_dir / name).unlink(missing_ok=True)
        save_config(encoder_config, out_dir / CONFIG_FILE)
        logger.info("Whisper encoder (%d layers x %d) of %s%s recorded in %s", whisper.encoder_layers,
                    whisper.d_model, encoder_config.model_dir,
                    f" at commit {encoder_config.revision}" if encoder_config.revision else "", out_dir)
        return {"model_dir": encoder_config.model_dir, "revision": encoder_config.revision}
    train = read_feature_set(train_dir)
    eval_sets = [read_feature_set(d) for d in eval_dirs]
    model, report = train_ctc(config.encoder_config(), config.ctc_train, train)
    model.save_pretrained(out_dir)
    scores = {}
    for features in eval_sets:
        scores[features.name] = evaluate_wer(model, features, config.ctc_train.eval_batch_size)
        logger.info("%s: WER %.2f%%, CER %.2f%% (greedy CTC, %d utterances); e.g. ref '%s' hyp '%s'",
                    features.name, 100 * scores[features.name]["wer"], 100 * scores[features.name]["cer"],
                    scores[features.name]["utterances"], *scores[features.name]["example"])
    markdown = report_markdown(report, scores, config.conformer)
    with atomic_write(out_dir / REPORT_FILE) as f:
        f.write(markdown)
    logger.info("CTC encoder in %s:\n%s", out_dir, markdown)
    return {**report, "scores": {name: {k: v for k, v in s.items() if k != "example"} for name, s in scores.items()}}


def encoder_step(config: EncoderPrepConfig, out_dir: str | Path, feature_dirs: list[str | Path]) -> Step:
    """Stage 4's bookkeeping of the encoder dir ``out_dir``: made from ``config`` and, for a
    Conformer, the stage-2 sets it is trained and scored on; a Whisper is redone when its files
    change."""
    if config.kind == "whisper":
        feature_dirs = []
        if config.ct2_packages:
            inputs = [path for name in config.ct2_packages for path in packaged_files(name)]
        else:  # a hub model is pinned by stage 4: a new revision comes only with a new config
            inputs = [Path(config.model_dir) / "config.json"] if Path(config.model_dir).is_dir() else []
    else:
        inputs = [Path(d) / name for d in feature_dirs for name in ("utt2num_frames", "text")]
    stamp = {"config": dataclasses.asdict(config), "feature_dirs": [str(Path(d).resolve()) for d in feature_dirs]}
    return Step(marker(out_dir), stamp, inputs)
