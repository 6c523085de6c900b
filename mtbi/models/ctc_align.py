"""CTC forced alignment: the best (Viterbi) CTC path of a known transcript, and word spans from it.

Targets are characters with a word separator (``|``) between words, as a character CTC model
(``mtbi.models.ctc.CtcModel``) emits them. A word spans from the first frame of its first
character to the end of the last frame of its last character.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mtbi.data.speech_features import SpeechFeatures
from mtbi.data.word_align import AlignmentError, WordSpan
from mtbi.errors import MtbiError
from mtbi.models.ctc import WORD_SEPARATOR, CtcModel


def required_frames(targets: Sequence[int]) -> int:
    """The fewest frames a CTC path of ``targets`` needs: one per token, plus a blank between
    equal neighbours."""
    return len(targets) + sum(a == b for a, b in zip(targets, targets[1:]))


def forced_align(log_probs: torch.Tensor, targets: Sequence[int], blank: int = 0) -> list[tuple[int, int, int]]:
    """The most probable CTC path of ``targets`` through ``log_probs`` (shape ``(T, V)``).

    Returns ``(token index, first frame, last frame)`` for each target token, in order. A
    Viterbi search over the ``2 * len(targets) + 1`` states (tokens with blanks around them),
    O(T * S) time, vectorised over the states.
    """
    num_frames = log_probs.shape[0]
    if not targets:
        raise MtbiError("CTC forced alignment needs at least one target token")
    if blank in targets:
        raise MtbiError(f"CTC targets contain the blank id {blank}")
    if num_frames < required_frames(targets):
        raise MtbiError(f"{len(targets)} CTC targets need at least {required_frames(targets)} frames, "
                        f"got {num_frames}")
    emit = log_probs.detach().cpu()
    states = torch.full((2 * len(targets) + 1,), blank, dtype=torch.long)
    states[1::2] = torch.as_tensor(list(targets), dtype=torch.long)
    emit = emit[:, states]  # (T, S)
    num_states = states.numel()
    # A token state may be entered from two states back unless that is the same token.
    skip_bias = torch.full((num_states,), float("-inf"), dtype=emit.dtype)
    skip_bias[3::2] = torch.where(states[3::2] != states[1:-2:2], 0.0, float("-inf"))

    # score[2:] holds the best path scores; the two -inf in front stand for the missing
    # predecessors of the first states. Buffers are reused: this loop is the cost.
    score = torch.full((num_states + 2,), float("-inf"), dtype=emit.dtype)
    score[2:4] = emit[0, :2]
    candidates = torch.empty((3, num_states), dtype=emit.dtype)
    best = torch.empty(num_states, dtype=emit.dtype)
    back = torch.zeros((num_frames, num_states), dtype=torch.long)  # 0 stay, 1 or 2 states back
    for t in range(1, num_frames):
        candidates[0] = score[2:]
        candidates[1] = score[1:-1]
        torch.add(score[:-2], skip_bias, out=candidates[2])
        torch.max(candidates, dim=0, out=(best, back[t]))
        torch.add(best, emit[t], out=score[2:])

    last = num_states - 1 if score[-1] >= score[-2] else num_states - 2
    if not torch.isfinite(score[2 + last]):
        raise MtbiError("no CTC path of the targets has a finite probability")
    steps = back.numpy()
    path = np.empty(num_frames, dtype=np.int64)
    state = last
    for t in range(num_frames - 1, -1, -1):
        path[t] = state
        state -= int(steps[t, state])
    # The path never goes back, so each token's frames are one run of the token frames.
    frames = np.flatnonzero(path % 2 == 1)
    tokens = path[frames] // 2
    indices = np.arange(len(targets))
    firsts = np.searchsorted(tokens, indices, side="left")
    lasts = np.searchsorted(tokens, indices, side="right") - 1
    return [(int(i), int(frames[a]), int(frames[b])) for i, a, b in zip(indices, firsts, lasts)]


def word_spans(alignment: Sequence[tuple[int, int, int]], targets: Sequence[int], separator: int,
               frame_shift: float) -> list[tuple[float, float]]:
    """Word ``(start, end)`` seconds from a :func:`forced_align` result: words are the runs of
    target tokens between ``separator`` tokens, ``frame_shift`` the seconds per frame."""
    words: list[tuple[float, float]] = []
    first = last = None
    for index, start, end in alignment:
        if targets[index] == separator:
            if first is not None:
                words.append((first * frame_shift, (last + 1) * frame_shift))
            first = None
            continue
        first = start if first is None else first
        last = end
    if first is not None:
        words.append((first * frame_shift, (last + 1) * frame_shift))
    return words


def word_targets(model: CtcModel, text: str) -> list[list[int]]:
    """The model's token ids of each whitespace token of ``text`` (blanks and separators left out)."""
    separator = model.vocabulary.index(WORD_SEPARATOR)
    return [[i for i in model.text_to_ids(token) if i not in (0, separator)] for token in text.split()]


def align_with_ctc(model: CtcModel, feats_dir: str | Path, texts: Mapping[str, str],
                   durations: Mapping[str, float], batch_size: int = 16, device: str = "cpu",
                   num_workers: int | None = None) -> tuple[dict[str, list[WordSpan]], list[AlignmentError]]:
    """Word spans of every utterance of ``texts`` that has features in ``feats_dir``
    (``durations`` from its utt2num_frames), by CTC forced alignment with ``model``; ``num_workers``
    DataLoader workers read (or compute) the features (see :meth:`SpeechFeatures.batches`).

    Returns the spans (words = the transcript's tokens) and the utterances given up on.
    """
    features = SpeechFeatures(feats_dir)
    if WORD_SEPARATOR not in model.vocabulary:
        raise MtbiError(f"the CTC model's vocabulary has no word separator '{WORD_SEPARATOR}'")
    separator = model.vocabulary.index(WORD_SEPARATOR)
    model.to(device).eval()

    spans: dict[str, list[WordSpan]] = {}
    skipped: list[AlignmentError] = []
    todo: dict[str, list[int]] = {}
    for utt, text in texts.items():
        if utt not in durations or utt not in features:
            continue
        per_word = word_targets(model, text)
        empty = [token for token, ids in zip(text.split(), per_word) if not ids]
        if empty or not per_word:
            skipped.append(AlignmentError(utt, "word without characters the CTC model knows",
                                          f"'{empty[0] if empty else text}'"))
            continue
        todo[utt] = [i for k, ids in enumerate(per_word) for i in ([separator] if k else []) + ids]
    # Batches of similar length waste little padding.
    order = sorted(todo, key=lambda u: durations[u], reverse=True)
    with tqdm(total=len(order), desc="CTC alignment", unit="utt", mininterval=2.0) as progress:
        batches = [order[begin:begin + batch_size] for begin in range(0, len(order), batch_size)]
        for batch, padded, lens in features.batches(batches, num_workers):
            with torch.inference_mode():
                log_probs, out_lens = model.log_probs(padded.to(device), lens.to(device))
            log_probs, out_lens = log_probs.float().cpu(), out_lens.cpu()
            for k, utt in enumerate(batch):
                targets = todo[utt]
                frames, needed = int(out_lens[k]), required_frames(targets)
                if frames < needed:
                    skipped.append(AlignmentError(utt, "audio too short for the transcript",
                                                  f"{len(targets)} tokens need {needed} frames, the model "
                                                  f"gives {frames}"))
                    continue
                alignment = forced_align(log_probs[k, :frames], targets, blank=0)
                times = word_spans(alignment, targets, separator, model.frame_shift)
                spans[utt] = [WordSpan(utt, round(start, 3), round(end, 3), token)
                              for (start, end), token in zip(times, texts[utt].split())]
            progress.update(len(batch))
    return spans, skipped
