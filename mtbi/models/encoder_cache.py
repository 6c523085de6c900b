"""Frozen-encoder outputs computed once: ``<out_dir>/{feats.scp,feats.ark,utt2num_frames}``.

When the speech encoder is frozen (``model.train_encoder: false``) its outputs never change, so
stage 6 computes them once per set and training reads them instead of the log-mel features:
a training step then costs only the connector and the LLM. The encoder is padding-invariant
(see :mod:`mtbi.models.encoders`), so outputs computed in batches equal per-utterance ones.

Outputs are stored in float16 by default (half of float32's disk; the frozen encoder runs in
bf16 or float16 at scale anyway), as NumPy arrays inside the ark (kaldiio's ``numpy`` format).
The cache's size is known before encoding: when it would pass ``max_gb``, nothing is written and
training computes the encoder's outputs from the features instead.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Iterable

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from mtbi.config import load_config
from mtbi.data.datadir import read_table
from mtbi.data.speech_features import SpeechFeatures
from mtbi.errors import MtbiError
from mtbi.hub import is_hub_id, resolve_model
from mtbi.models.encoders import CONFIG_FILE, EncoderConfig, SpeechEncoder, load_speech_encoder
from mtbi.stage import Step, atomic_dir, dir_fingerprint, file_id, marker

logger = logging.getLogger(__name__)


def cache_step(encoder_dir: str | Path, feats_dir: str | Path, out_dir: str | Path,
               utts: list[str] | None = None, dtype: str = "float16") -> Step:
    """The cache's bookkeeping: it records the encoder's files (and those of the Whisper dir it
    points to), the features it read, its dtype and, when not all, the utterances it encoded."""
    stamp = {"encoder": dir_fingerprint(encoder_dir), "feats": file_id(Path(feats_dir) / "utt2num_frames"),
             "dtype": dtype}
    config_file = Path(encoder_dir) / CONFIG_FILE
    config = load_config(config_file, EncoderConfig) if config_file.is_file() else None
    # A hub model is pinned by the commit that encoder.yaml records; a local one by its files.
    if config and config.model_dir and not is_hub_id(config.model_dir):
        whisper = resolve_model(config.model_dir, None, encoder_dir, what=f"{config_file}: model_dir")
        stamp["whisper"] = dir_fingerprint(whisper.path)
    if utts is not None:
        stamp["utts"] = hashlib.sha256("\n".join(sorted(utts)).encode()).hexdigest()
    return Step(marker(out_dir), stamp)


CACHE_DTYPES = {"float16": np.float16, "float32": np.float32}


def cache_gb(encoder: SpeechEncoder, num_frames: Iterable[int], dtype: str) -> float:
    """The size in GB of the cached outputs of utterances of ``num_frames`` feature frames."""
    frames = int(encoder.output_lengths(torch.tensor(list(num_frames), dtype=torch.long)).sum())
    return frames * encoder.output_size * np.dtype(CACHE_DTYPES[dtype]).itemsize / 1e9


def _free_gb(path: Path) -> float:
    """Free space in GB on the file system that ``path`` will be on."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    return shutil.disk_usage(existing).free / 1e9


def encode_feats(encoder_dir: str | Path, feats_dir: str | Path, out_dir: str | Path, batch_size: int = 32,
                 device: str = "cpu", utts: Iterable[str] | None = None, dtype: str = "float16",
                 max_gb: float = 0.0) -> bool:
    """Write the encoder outputs of the utterances of ``feats_dir`` (those in ``utts`` when
    given) into ``out_dir`` in ``dtype``; skipped when done with the same encoder, features,
    utterances and dtype, written as a whole or not at all. Returns whether the cache is there:
    when it would take more than ``max_gb`` (0: the free disk) it is not written. An outdated
    cache in ``out_dir`` is removed first."""
    feats_dir, out_dir = Path(feats_dir), Path(out_dir)
    if dtype not in CACHE_DTYPES:
        raise MtbiError(f"encoder cache dtype '{dtype}': use one of {', '.join(CACHE_DTYPES)}")
    features = SpeechFeatures(feats_dir)
    todo = features.utts
    if utts is not None:
        wanted = set(utts)
        todo = [u for u in todo if u in wanted]
    step = cache_step(encoder_dir, feats_dir, out_dir, None if utts is None else todo, dtype)
    if step.skip(f"{out_dir}: encoder outputs already cached"):
        return True
    encoder = load_speech_encoder(encoder_dir).to(device).eval()
    size = cache_gb(encoder, (features.num_frames[u] for u in todo), dtype)
    if out_dir.exists():  # not current (else skipped above): its space is free for the new cache
        shutil.rmtree(out_dir)
    budget, what = (max_gb, "the budget") if max_gb else (_free_gb(out_dir), "the free disk")
    if size > budget:
        logger.warning("%s: the encoder outputs of %d utterances would take %.1f GB in %s, over %s of %.1f GB: "
                       "not cached; training computes them from the features (mtbi.sh --encoder_cache_max_gb "
                       "sets the budget)", out_dir, len(todo), size, dtype, what, budget)
        return False
    logger.info("%s: caching the encoder outputs of %d utterances: %.2f GB in %s", out_dir, len(todo), size, dtype)
    order = sorted(todo, key=lambda u: (-features.num_frames[u], u))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    frames = {}
    with atomic_dir(out_dir) as tmp, torch.inference_mode():
        with kaldiio.WriteHelper(f"ark,scp:{tmp / 'feats.ark'},{tmp / 'unsorted.scp'}", write_function="numpy") \
                as writer, tqdm(total=len(order), desc=f"encoding {feats_dir.name}", unit="utt",
                                mininterval=5.0) as progress:
            for batch, feats, lens in features.batches(batches):
                out, out_lens = encoder(feats.to(device), lens.to(device))
                out = out.to(torch.float16 if dtype == "float16" else torch.float32).cpu().numpy()
                for b, utt in enumerate(batch):
                    writer(utt, out[b, :int(out_lens[b])])
                    frames[utt] = int(out_lens[b])
                progress.update(len(batch))
        # The scp names the ark by its final path, as feats.scp of stage 2 does.
        table = read_table(tmp / "unsorted.scp")
        ark = str(tmp / "feats.ark")
        (tmp / "feats.scp").write_text("".join(f"{u} {table[u].replace(ark, str(out_dir / 'feats.ark'))}\n"
                                               for u in sorted(table)))
        (tmp / "unsorted.scp").unlink()
        (tmp / "utt2num_frames").write_text("".join(f"{u} {frames[u]}\n" for u in sorted(frames)))
        step.mark_done(inside=tmp)
    logger.info("%s: encoder outputs of %d utterances (%d channels, %s): %.2f GB", out_dir, len(frames),
                encoder.output_size, dtype, (out_dir / "feats.ark").stat().st_size / 1e9)
    return True
