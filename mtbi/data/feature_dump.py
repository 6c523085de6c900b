"""Stage 2: log-mel features of a data dir, sharded, written as Kaldi ark/scp with kaldiio.

Layout of ``<out_dir>`` (e.g. ``dump/logmel80/train_clean_100``)::

    shards/feats.<n>.{ark,scp}, shards/utt2num_frames.<n>, shards/skipped.<n>, shards/.done.<n>
    feats.scp, utt2num_frames, skipped.txt    merged, sorted
    wav.scp, text, utt2spk, spk2utt[, ctm]    the data dir, less the skipped utterances
    .done

A shard is redone unless its ``.done.<n>`` is newer than the data dir; the merge refuses to
run until every shard is done, so a killed job never leaves a partial ``feats.scp``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from mtbi.data.audio import AudioError, load_audio
from mtbi.data.datadir import read_table, subset_data_dir, write_table
from mtbi.data.features import log_mel
from mtbi.errors import MtbiError
from mtbi.io import atomic_write, is_done_with, is_up_to_date, touch_done

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


def _shard_files(out_dir: Path, shard: int) -> dict[str, Path]:
    shards = out_dir / "shards"
    return {"ark": shards / f"feats.{shard}.ark", "scp": shards / f"feats.{shard}.scp",
            "frames": shards / f"utt2num_frames.{shard}", "skipped": shards / f"skipped.{shard}",
            "done": shards / f".done.{shard}"}


def _data_inputs(data_dir: Path) -> list[Path]:
    return [data_dir / "wav.scp", data_dir / "text"]


def extract_shard(data_dir: str | Path, out_dir: str | Path, shard: int, num_shards: int,
                  n_mels: int = 80, allow_upsample: bool = False) -> None:
    """Compute features for every ``num_shards``-th utterance of ``data_dir``, from ``shard``
    (1-based), skipping utterances whose audio cannot be used."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not 1 <= shard <= num_shards:
        raise MtbiError(f"shard {shard} is outside 1..{num_shards}")
    files = _shard_files(out_dir, shard)
    params = {"shard": shard, "num_shards": num_shards, "n_mels": n_mels, "allow_upsample": allow_upsample}
    if is_done_with(files["done"], params) and is_up_to_date(files["done"], _data_inputs(data_dir)):
        logger.info("shard %d/%d already done in %s", shard, num_shards, out_dir)
        return
    wav_scp = read_table(data_dir / "wav.scp")
    utts = sorted(wav_scp)[shard - 1::num_shards]
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
    touch_done(files["done"], params)
    logger.info("shard %d/%d: %d utterances, %d skipped", shard, num_shards, len(frames), len(skipped))


def merge_shards(data_dir: str | Path, out_dir: str | Path, num_shards: int) -> None:
    """Merge the shards into sorted ``feats.scp``/``utt2num_frames`` and a filtered data dir."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    markers = [_shard_files(out_dir, k)["done"] for k in range(1, num_shards + 1)]
    shard_params = [json.loads(m.read_text()) if m.exists() else None for m in markers]
    if (is_done_with(out_dir / ".done", {"shards": shard_params})
            and is_up_to_date(out_dir / ".done", _data_inputs(data_dir))):
        logger.info("features already merged in %s", out_dir)
        return
    feats: dict[str, str] = {}
    frames: dict[str, str] = {}
    skipped: list[str] = []
    for shard in range(1, num_shards + 1):
        files = _shard_files(out_dir, shard)
        params = shard_params[shard - 1]
        if params is None or params.get("num_shards") != num_shards or not is_up_to_date(
                files["done"], _data_inputs(data_dir)):
            raise MtbiError(f"{files['done']}: feature shard {shard}/{num_shards} is missing or "
                            "older than the data dir; re-run stage 2")
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
    touch_done(out_dir / ".done", {"shards": shard_params})
    hours = sum(int(n) for n in frames.values()) / 100 / 3600
    logger.info("%s: %d utterances (%.2f h) with features, %d skipped (see %s)", out_dir, len(feats),
                hours, len(skipped), out_dir / "skipped.txt")
