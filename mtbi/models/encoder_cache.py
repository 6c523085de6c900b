"""Frozen-encoder outputs computed once: ``<out_dir>/{feats.scp,feats.ark,utt2num_frames}``.

When the speech encoder is frozen (``model.train_encoder: false``) its outputs never change, so
stage 6 computes them once per set and training reads them instead of the log-mel features:
a training step then costs only the connector and the LLM. The encoder is padding-invariant
(see :mod:`mtbi.models.encoders`), so outputs computed in batches equal per-utterance ones.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterable

import kaldiio
import torch
from tqdm import tqdm

from mtbi.config import load_config
from mtbi.data.datadir import read_table
from mtbi.data.feature_dump import load_feature_batch
from mtbi.errors import MtbiError
from mtbi.hub import is_hub_id, resolve_model
from mtbi.models.encoders import CONFIG_FILE, EncoderConfig, load_speech_encoder
from mtbi.stage import Step, atomic_dir, dir_fingerprint, file_id, marker

logger = logging.getLogger(__name__)


def cache_step(encoder_dir: str | Path, feats_dir: str | Path, out_dir: str | Path,
               utts: list[str] | None = None) -> Step:
    """The cache's bookkeeping: it records the encoder's files (and those of the Whisper dir it
    points to), the features it read and, when not all, the utterances it encoded."""
    stamp = {"encoder": dir_fingerprint(encoder_dir), "feats": file_id(Path(feats_dir) / "feats.scp")}
    config_file = Path(encoder_dir) / CONFIG_FILE
    config = load_config(config_file, EncoderConfig) if config_file.is_file() else None
    # A hub model is pinned by the commit that encoder.yaml records; a local one by its files.
    if config and config.model_dir and not is_hub_id(config.model_dir):
        whisper = resolve_model(config.model_dir, None, encoder_dir, what=f"{config_file}: model_dir")
        stamp["whisper"] = dir_fingerprint(whisper.path)
    if utts is not None:
        stamp["utts"] = hashlib.sha256("\n".join(sorted(utts)).encode()).hexdigest()
    return Step(marker(out_dir), stamp)


def encode_feats(encoder_dir: str | Path, feats_dir: str | Path, out_dir: str | Path, batch_size: int = 32,
                 device: str = "cpu", utts: Iterable[str] | None = None) -> None:
    """Write the encoder outputs of the utterances of ``feats_dir`` (those in ``utts`` when
    given) into ``out_dir``; skipped when done with the same encoder, features and utterances,
    written as a whole or not at all."""
    feats_dir, out_dir = Path(feats_dir), Path(out_dir)
    for path in (feats_dir / "feats.scp", feats_dir / "utt2num_frames"):
        if not path.is_file():
            raise MtbiError(f"{path} is missing; it is made by stage 2")
    scp = read_table(feats_dir / "feats.scp")
    if utts is not None:
        wanted = set(utts)
        scp = {u: path for u, path in scp.items() if u in wanted}
    step = cache_step(encoder_dir, feats_dir, out_dir, None if utts is None else list(scp))
    if step.skip(f"{out_dir}: encoder outputs already cached"):
        return
    encoder = load_speech_encoder(encoder_dir).to(device).eval()
    lengths = {u: int(n) for u, n in read_table(feats_dir / "utt2num_frames").items()}
    order = sorted(scp, key=lambda u: (-lengths.get(u, 0), u))
    frames = {}
    with atomic_dir(out_dir) as tmp, torch.inference_mode():
        with kaldiio.WriteHelper(f"ark,scp:{tmp / 'feats.ark'},{tmp / 'unsorted.scp'}") as writer, \
                tqdm(total=len(order), desc=f"encoding {feats_dir.name}", unit="utt", mininterval=5.0) as progress:
            for start in range(0, len(order), batch_size):
                utts = order[start:start + batch_size]
                feats, lens = load_feature_batch(scp, utts)
                out, out_lens = encoder(feats.to(device), lens.to(device))
                for b, utt in enumerate(utts):
                    writer(utt, out[b, :int(out_lens[b])].float().cpu().numpy())
                    frames[utt] = int(out_lens[b])
                progress.update(len(utts))
        # The scp names the ark by its final path, as feats.scp of stage 2 does.
        table = read_table(tmp / "unsorted.scp")
        ark = str(tmp / "feats.ark")
        (tmp / "feats.scp").write_text("".join(f"{u} {table[u].replace(ark, str(out_dir / 'feats.ark'))}\n"
                                               for u in sorted(table)))
        (tmp / "unsorted.scp").unlink()
        (tmp / "utt2num_frames").write_text("".join(f"{u} {frames[u]}\n" for u in sorted(frames)))
        step.mark_done(inside=tmp)
    logger.info("%s: encoder outputs of %d utterances (%d channels)", out_dir, len(frames), encoder.output_size)
