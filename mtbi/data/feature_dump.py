"""Stage 2: log-mel features of a data dir, sharded, written as Kaldi ark/scp with kaldiio.

Layout of ``<out_dir>`` (e.g. ``dump/logmel80/train_clean_100``)::

    shards/feats.<n>.{ark,scp}, shards/utt2num_frames.<n>, shards/skipped.<n>, shards/.<n>.done
    feats.scp, utt2num_frames, skipped.txt    merged, sorted
    wav.scp, text, utt2spk, spk2utt[, ctm]    the data dir, less the skipped utterances
    .done

A shard is redone unless its marker is newer than the data dir; the merge refuses to run until
every shard is done (:mod:`mtbi.stage`), so a killed job never leaves a partial ``feats.scp``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from mtbi.data.audio import FRAME_SHIFT, AudioError, load_audio
from mtbi.data.datadir import read_table, subset_data_dir, write_table
from mtbi.data.features import log_mel
from mtbi.errors import MtbiError
from mtbi.stage import atomic_write, merge_step, shard_slice, shard_step

logger = logging.getLogger(__name__)


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


def pad_features(mats: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature matrices ``(T_i, F)`` as one float32 batch ``(B, max T_i, F)``, zero-padded, and
    their lengths ``(B,)``."""
    tensors = [torch.tensor(m, dtype=torch.float32) for m in mats]
    lens = torch.tensor([t.shape[0] for t in tensors])
    return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True), lens


def load_feature_batch(feats_scp: Mapping[str, str], utts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The checked features of ``utts`` (entries of ``feats_scp``) as a padded batch and lengths."""
    return pad_features([load_features(utt, feats_scp[utt]) for utt in utts])


def _shard_files(out_dir: Path, shard: int) -> dict[str, Path]:
    shards = out_dir / "shards"
    return {"ark": shards / f"feats.{shard}.ark", "scp": shards / f"feats.{shard}.scp",
            "frames": shards / f"utt2num_frames.{shard}", "skipped": shards / f"skipped.{shard}"}


def _data_inputs(data_dir: Path) -> list[Path]:
    return [data_dir / "wav.scp", data_dir / "text"]


def extract_shard(data_dir: str | Path, out_dir: str | Path, shard: int, num_shards: int,
                  n_mels: int = 80, allow_upsample: bool = False) -> None:
    """Compute features for every ``num_shards``-th utterance of ``data_dir``, from ``shard``
    (1-based), skipping utterances whose audio cannot be used."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    step = shard_step(out_dir, shard, num_shards, {"n_mels": n_mels, "allow_upsample": allow_upsample},
                      inputs=_data_inputs(data_dir))
    if step.skip(f"shard {shard}/{num_shards} already done in {out_dir}"):
        return
    wav_scp = read_table(data_dir / "wav.scp")
    utts = shard_slice(sorted(wav_scp), shard, num_shards)
    files = _shard_files(out_dir, shard)
    files["ark"].parent.mkdir(parents=True, exist_ok=True)
    frames: dict[str, str] = {}
    skipped: list[str] = []
    with kaldiio.WriteHelper(f"ark,scp:{files['ark']},{files['scp']}") as writer:
        for utt in tqdm(utts, desc=f"features shard {shard}/{num_shards}", unit="utt", mininterval=5.0):
            try:
                feats = log_mel(load_audio(wav_scp[utt], allow_upsample=allow_upsample), n_mels)
            except AudioError as err:
                skipped.append(f"{utt}\t{err.reason}\t{err}")
                continue
            if feats.shape[0] == 0 or not torch.isfinite(feats).all():
                skipped.append(f"{utt}\tbad features\t{wav_scp[utt]}: too short or non-finite features")
                continue
            writer(utt, feats.numpy())
            frames[utt] = str(feats.shape[0])
    write_table(files["frames"], frames)
    with atomic_write(files["skipped"]) as f:
        f.writelines(line + "\n" for line in skipped)
    step.mark_done()
    logger.info("shard %d/%d: %d utterances, %d skipped", shard, num_shards, len(frames), len(skipped))


def merge_shards(data_dir: str | Path, out_dir: str | Path, num_shards: int) -> None:
    """Merge the shards into sorted ``feats.scp``/``utt2num_frames`` and a filtered data dir."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    step = merge_step(out_dir, num_shards, "feature", 2, inputs=_data_inputs(data_dir))
    if step.skip(f"features already merged in {out_dir}"):
        return
    feats: dict[str, str] = {}
    frames: dict[str, str] = {}
    skipped: list[str] = []
    for shard in range(1, num_shards + 1):
        files = _shard_files(out_dir, shard)
        feats.update(read_table(files["scp"]))
        frames.update(read_table(files["frames"]))
        skipped += files["skipped"].read_text(encoding="utf-8").splitlines()
    with atomic_write(out_dir / "skipped.txt") as f:
        f.writelines(line + "\n" for line in sorted(skipped))
    if not feats:
        raise MtbiError(f"{out_dir}: no utterance has features; see {out_dir}/skipped.txt")
    subset_data_dir(data_dir, out_dir, set(feats))
    write_table(out_dir / "feats.scp", feats)
    write_table(out_dir / "utt2num_frames", frames)
    step.mark_done()
    hours = sum(int(n) for n in frames.values()) * FRAME_SHIFT / 3600
    logger.info("%s: %d utterances (%.2f h) with features, %d skipped (see %s)", out_dir, len(feats),
                hours, len(skipped), out_dir / "skipped.txt")
