"""Stage 2: a data dir's audio checked and measured (``raw``), or its log-mel features dumped as
Kaldi ark/scp with kaldiio (``logmel``); sharded.

Layout of ``<out_dir>`` (e.g. ``dump/raw/train_clean_100`` or ``dump/logmel80/train_clean_100``)::

    shards/utt2num_frames.<n>, shards/skipped.<n>, shards/.<n>.done, and per type
        logmel: shards/feats.<n>.{ark,scp}     raw: shards/utt2num_samples.<n>
    feats.scp (logmel) or utt2num_samples (raw), utt2num_frames, skipped.txt    merged, sorted
    wav.scp, text, utt2spk, spk2utt[, segments, ctm]    the data dir, less the skipped utterances
    feats.yaml                                          feats_type and n_mels
    .done

Audio is read through :class:`mtbi.data.wav_scp.AudioTable` (files, ``cmd |`` pipes, ark offsets,
``segments``). A raw dir takes the lengths of whole-file utterances from the ``utt2num_samples``
stage 1 wrote from the headers it checked, reads the header of other files, and decodes pipes,
arks, segments of them, and MP3 to measure them; :class:`mtbi.data.speech_features.SpeechFeatures`
computes its features when read.

A shard is redone unless its marker is newer than the data dir; the merge refuses to run until
every shard is done (:mod:`mtbi.stage`), so a killed job never leaves a partial ``feats.scp``.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Sequence

import kaldiio
import numpy as np
import torch
import yaml
from tqdm import tqdm

from mtbi.data.audio import FRAME_SHIFT, HOP_LENGTH, AudioError
from mtbi.data.datadir import read_table, subset_data_dir, write_table
from mtbi.data.features import log_mel
from mtbi.data.wav_scp import AudioTable, entry_kind
from mtbi.errors import MtbiError
from mtbi.stage import atomic_write, marker, merge_step, read_stamp, shard_slice, shard_step

logger = logging.getLogger(__name__)

FEATS_TYPES = ("raw", "logmel")
FEATS_INFO = "feats.yaml"  # feats_type and n_mels of a stage-2 dir


def write_feats_info(out_dir: str | Path, feats_type: str, n_mels: int) -> None:
    """Record what kind of stage-2 dir ``out_dir`` is."""
    with atomic_write(Path(out_dir) / FEATS_INFO) as f:
        yaml.safe_dump({"feats_type": feats_type, "n_mels": n_mels}, f)


def load_features(utt: str, rxfile: str) -> np.ndarray:
    """The feature matrix of ``utt`` (its ``feats.scp`` entry ``rxfile``), checked: a missing
    or unreadable ark, or non-finite values, is a one-line error."""
    try:
        mat = kaldiio.load_mat(rxfile)
    except (OSError, ValueError) as err:
        raise MtbiError(f"features of '{utt}' ({rxfile}) cannot be read ({err}); re-run stage 2") from None
    if not np.isfinite(mat).all():
        raise MtbiError(f"features of '{utt}' ({rxfile}) are not finite; re-run stage 2 for its set")
    return mat


def pad_features(mats: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature matrices ``(T_i, F)`` (arrays or tensors) as one float32 batch ``(B, max T_i, F)``, zero-padded, and
    their lengths ``(B,)``."""
    tensors = [m.float() if isinstance(m, torch.Tensor) else torch.tensor(m, dtype=torch.float32) for m in mats]
    lens = torch.tensor([t.shape[0] for t in tensors])
    return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True), lens


def _shard_files(out_dir: Path, shard: int) -> dict[str, Path]:
    shards = out_dir / "shards"
    return {"ark": shards / f"feats.{shard}.ark", "scp": shards / f"feats.{shard}.scp",
            "samples": shards / f"utt2num_samples.{shard}", "frames": shards / f"utt2num_frames.{shard}",
            "skipped": shards / f"skipped.{shard}"}


def _data_inputs(data_dir: Path) -> list[Path]:
    return [data_dir / name for name in ("wav.scp", "text", "segments", "utt2num_samples")
            if name in ("wav.scp", "text") or (data_dir / name).is_file()]


def known_lengths(data_dir: Path, audio: AudioTable) -> dict[str, int]:
    """The 16 kHz lengths stage 1 read from the headers (``utt2num_samples``) of utterances that are
    whole audio files: stage 2 ``raw`` does not open those files again."""
    path = data_dir / "utt2num_samples"
    if audio.segments is not None or not path.is_file():
        return {}
    return {utt: int(n) for utt, n in read_table(path).items()
            if utt in audio.wav_scp and entry_kind(audio.wav_scp[utt]) == "file"}


def extract_shard(data_dir: str | Path, out_dir: str | Path, shard: int, num_shards: int,
                  n_mels: int = 80, allow_upsample: bool = False, feats_type: str = "logmel") -> None:
    """Check (``raw``) or compute the features of (``logmel``) every ``num_shards``-th utterance
    of ``data_dir``, from ``shard`` (1-based), skipping utterances whose audio cannot be used."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if feats_type not in FEATS_TYPES:
        raise MtbiError(f"feats_type '{feats_type}': use raw or logmel")
    params = {"n_mels": n_mels, "allow_upsample": allow_upsample, "feats_type": feats_type}
    step = shard_step(out_dir, shard, num_shards, params, inputs=_data_inputs(data_dir))
    if step.skip(f"shard {shard}/{num_shards} already done in {out_dir}"):
        return
    audio = AudioTable(data_dir, allow_upsample=allow_upsample)
    utts = shard_slice(audio.utts, shard, num_shards)
    known = known_lengths(data_dir, audio) if feats_type == "raw" else {}
    files = _shard_files(out_dir, shard)
    files["frames"].parent.mkdir(parents=True, exist_ok=True)
    samples: dict[str, str] = {}
    frames: dict[str, str] = {}
    skipped: list[str] = []
    progress = tqdm(utts, desc=f"{feats_type} shard {shard}/{num_shards}", unit="utt", mininterval=5.0)
    with (kaldiio.WriteHelper(f"ark,scp:{files['ark']},{files['scp']}") if feats_type == "logmel"
          else contextlib.nullcontext()) as writer:
        for utt in progress:
            try:
                if writer is None:
                    num_samples = known[utt] if utt in known else audio.num_samples(utt)
                    num_frames = num_samples // HOP_LENGTH
                else:
                    feats = log_mel(audio.load(utt), n_mels)
                    num_frames = feats.shape[0]
            except AudioError as err:
                skipped.append(f"{utt}\t{err.reason}\t{err}")
                continue
            if num_frames == 0 or (writer is not None and not torch.isfinite(feats).all()):
                skipped.append(f"{utt}\tbad features\t{audio.describe(utt)}: too short or non-finite features")
                continue
            if writer is None:
                samples[utt] = str(num_samples)
            else:
                writer(utt, feats.numpy())
            frames[utt] = str(num_frames)
    if writer is None:
        write_table(files["samples"], samples)
    write_table(files["frames"], frames)
    with atomic_write(files["skipped"]) as f:
        f.writelines(line + "\n" for line in skipped)
    step.mark_done()
    logger.info("shard %d/%d: %d utterances, %d skipped", shard, num_shards, len(frames), len(skipped))


def merge_shards(data_dir: str | Path, out_dir: str | Path, num_shards: int) -> None:
    """Merge the shards into sorted ``feats.scp`` (logmel) or ``utt2num_samples`` (raw),
    ``utt2num_frames``, ``feats.yaml`` and the data dir less the skipped utterances."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    step = merge_step(out_dir, num_shards, "feature", 2, inputs=_data_inputs(data_dir))
    if step.skip(f"features already merged in {out_dir}"):
        return
    params = read_stamp(marker(out_dir / "shards", "1")) or {}
    feats_type, n_mels = params.get("feats_type", "logmel"), params["n_mels"]
    listing = "feats.scp" if feats_type == "logmel" else "utt2num_samples"
    tables: dict[str, dict[str, str]] = {listing: {}, "utt2num_frames": {}}
    skipped: list[str] = []
    for shard in range(1, num_shards + 1):
        files = _shard_files(out_dir, shard)
        tables[listing].update(read_table(files["scp" if feats_type == "logmel" else "samples"]))
        tables["utt2num_frames"].update(read_table(files["frames"]))
        skipped += files["skipped"].read_text(encoding="utf-8").splitlines()
    with atomic_write(out_dir / "skipped.txt") as f:
        f.writelines(line + "\n" for line in sorted(skipped))
    frames = tables["utt2num_frames"]
    if not frames:
        raise MtbiError(f"{out_dir}: no utterance has usable audio; see {out_dir}/skipped.txt")
    subset_data_dir(data_dir, out_dir, set(frames))
    for name, table in tables.items():
        write_table(out_dir / name, table)
    (out_dir / ("utt2num_samples" if feats_type == "logmel" else "feats.scp")).unlink(missing_ok=True)
    write_feats_info(out_dir, feats_type, n_mels)
    step.mark_done()
    hours = sum(int(n) for n in frames.values()) * FRAME_SHIFT / 3600
    logger.info("%s: %d utterances (%.2f h) with %s, %d skipped (see %s)", out_dir, len(frames), hours,
                "features" if feats_type == "logmel" else "usable audio", len(skipped), out_dir / "skipped.txt")
    if skipped:
        reasons = sorted({line.split("\t")[1] for line in skipped if "\t" in line})
        logger.warning("%s: %d utterance(s) skipped (%s), e.g. %s", out_dir, len(skipped), ", ".join(reasons),
                       skipped[0].split("\t")[-1])
