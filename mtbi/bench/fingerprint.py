"""Content digests of a recipe's outputs, to tell which of them two machines (or two runs) made
bit-identical: the audio and log-mel features of each set, the teacher's and the encoder's
weights, the imitation targets, the encoder cache, and each SLLM's weights and benchmark answers.

A digest covers the content, not the file: decoded samples rather than FLAC bytes, tensors by
name rather than the safetensors header, answers sorted by their key rather than jsonl lines.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import kaldiio
import numpy as np
from safetensors import safe_open

from mtbi.data.datadir import read_table
from mtbi.data.speech_features import SpeechFeatures
from mtbi.data.wav_scp import AudioTable

DIGEST_CHARS = 16  # of the sha256 hex digest: enough to tell outputs apart


def _digest(chunks: Iterable[bytes]) -> str:
    sha = hashlib.sha256()
    for chunk in chunks:
        sha.update(chunk)
    return sha.hexdigest()[:DIGEST_CHARS]


def _array_bytes(name: str, array: np.ndarray) -> Iterable[bytes]:
    yield name.encode()
    yield str(array.dtype).encode() + str(array.shape).encode()
    yield np.ascontiguousarray(array).tobytes()


def tensors_digest(path: Path) -> str:
    """The tensors of a safetensors file, by name."""
    with safe_open(str(path), framework="numpy") as f:
        return _digest(b for name in sorted(f.keys()) for b in _array_bytes(name, f.get_tensor(name)))


def audio_digest(data_dir: Path) -> str:
    """The 16 kHz samples of every utterance of a data dir, in utterance order."""
    audio = AudioTable(data_dir, allow_upsample=True)
    return _digest(b for utt in audio.utts for b in _array_bytes(utt, audio.load(utt)))


def features_digest(feats_dir: Path) -> str:
    """The log-mel features of every utterance of a stage-2 dir (computed when read for raw audio)."""
    features = SpeechFeatures(feats_dir)
    return _digest(b for utt in features.utts for b in _array_bytes(utt, features.load(utt)))


def matrices_digest(feats_scp: Path) -> str:
    """The matrices of a Kaldi feats.scp (the encoder cache), in utterance order."""
    table = read_table(feats_scp)
    return _digest(b for utt in sorted(table) for b in _array_bytes(utt, kaldiio.load_mat(table[utt])))


def records_digest(path: Path, key: tuple[str, ...], value: str) -> str:
    """The ``value`` field of the jsonl records of ``path``, sorted by their ``key`` fields."""
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    pairs = sorted((tuple(str(r.get(k)) for k in key), str(r.get(value))) for r in records)
    return _digest([json.dumps(pairs).encode()])


def recipe_fingerprint(recipe_dir: Path, expdir: str, feats_dir: str) -> dict[str, str]:
    """Digests of every output of a recipe found under ``recipe_dir``: its data dirs (``data/*``),
    its stage-2 dirs (``<feats_dir>/*``) and ``<expdir>``; outputs not made yet are left out."""
    recipe_dir, exp = Path(recipe_dir), Path(recipe_dir) / expdir
    found: dict[str, str] = {}
    for data_dir in sorted(p.parent for p in (recipe_dir / "data").glob("*/wav.scp")):
        found[f"audio {data_dir.name}"] = audio_digest(data_dir)
    for stage2 in sorted(p.parent for p in (recipe_dir / feats_dir).glob("*/feats.yaml")):
        found[f"features {stage2.name}"] = features_digest(stage2)
    for model in ("teacher", "encoder"):
        if (exp / model / "model.safetensors").is_file():
            found[f"{model} weights"] = tensors_digest(exp / model / "model.safetensors")
    for targets in sorted(exp.glob("targets/*/targets.jsonl")):
        found[f"targets {targets.parent.name}"] = records_digest(targets, ("utt", "task", "prompt_id"), "response")
    for cache in sorted(exp.glob("encoder_cache/*/feats.scp")):
        found[f"encoder cache {cache.parent.name}"] = matrices_digest(cache)
    for run in sorted(exp.glob("sllm_*")):
        if (run / "model.safetensors").is_file():
            found[f"{run.name} weights"] = tensors_digest(run / "model.safetensors")
    for hyp in sorted(exp.glob("*/bench_*/hyp.jsonl")):
        found[f"{hyp.parent.parent.name} {hyp.parent.name}"] = records_digest(hyp, ("utt", "prompt_id"), "hyp")
    return found


def differences(mine: dict[str, str], theirs: dict[str, str]) -> dict[str, str]:
    """For each output of either fingerprint: ``same``, ``differs``, or where only one has it."""
    return {name: ("only here" if name not in theirs else "only there" if name not in mine
                   else "same" if mine[name] == theirs[name] else "differs")
            for name in sorted({*mine, *theirs})}
