"""CTC forced alignment: the best (Viterbi) CTC path of a known transcript, and word spans from it.

Targets are characters with a word separator (``|``) between words, as a character CTC model
(``mtbi.models.ctc.CtcModel``) emits them. A word spans from the first frame of its first
character to the end of the last frame of its last character.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mtbi.data.speech_features import SpeechFeatures
from mtbi.data.word_align import AlignmentError, WordSpan
from mtbi.errors import MtbiError
from mtbi.models.ctc import WORD_SEPARATOR, CtcModel

logger = logging.getLogger(__name__)


def required_frames(targets: Sequence[int]) -> int:
    """The fewest frames a CTC path of ``targets`` needs: one per token, plus a blank between
    equal neighbours."""
    return len(targets) + sum(a == b for a, b in zip(targets, targets[1:]))


def forced_align(log_probs: torch.Tensor, targets: Sequence[int], blank: int = 0) -> list[tuple[int, int, int]]:
    """The most probable CTC path of ``targets`` through ``log_probs`` (shape ``(T, V)``): a
    batch of one of :func:`forced_align_batch`.

    Returns ``(token index, first frame, last frame)`` for each target token, in order.
    """
    return forced_align_batch(log_probs[None], [log_probs.shape[0]], [targets], blank)[0]


def forced_align_batch(log_probs: torch.Tensor, num_frames: Sequence[int], targets: Sequence[Sequence[int]],
                       blank: int = 0) -> list[list[tuple[int, int, int]]]:
    """The most probable CTC path of each ``targets[b]`` through ``log_probs[b, :num_frames[b]]``
    (``log_probs`` of shape ``(B, T, V)``, padded after each utterance's frames).

    Returns, for each utterance, ``(token index, first frame, last frame)`` of each target token,
    in order. A Viterbi search over the ``2 * len(targets[b]) + 1`` states of each utterance
    (tokens with blanks around them), vectorised over the batch and the states: O(T * B * S) for
    the longest T and S of the batch. Each result equals that of the utterance alone: a state is
    reached only from itself and the two states before it, so the padding states (after the last
    real one) never reach a real state, and each utterance's path ends at its own last frame.
    """
    if not len(targets) == len(num_frames) == log_probs.shape[0] or max(num_frames, default=0) > log_probs.shape[1]:
        raise MtbiError(f"CTC forced alignment of {len(targets)} utterances ({len(num_frames)} frame counts, up "
                        f"to {max(num_frames, default=0)}) got log-probs of shape {tuple(log_probs.shape)}")
    if not targets:
        return []
    for tokens, frames in zip(targets, num_frames):
        _check_targets(tokens, frames, blank)
    log_probs = log_probs.detach().cpu()[:, :max(num_frames)]
    log_probs = log_probs.to(torch.float64 if log_probs.dtype == torch.float64 else torch.float32)
    states = torch.full((len(targets), 2 * max(map(len, targets)) + 1), blank, dtype=torch.long)
    for b, tokens in enumerate(targets):
        states[b, 1:2 * len(tokens):2] = torch.as_tensor(list(tokens), dtype=torch.long)
    # A token state may be entered from two states back unless that is the same token.
    skip_bias = torch.full(states.shape, float("-inf"), dtype=log_probs.dtype)
    skip_bias[:, 3::2] = torch.where(states[:, 3::2] != states[:, 1:-2:2], 0.0, float("-inf"))
    scores = _state_log_probs(log_probs, states)
    _viterbi(scores, skip_bias)
    table = scores.numpy()
    last = np.empty(len(targets), dtype=np.int64)
    for b, (tokens, frames) in enumerate(zip(targets, num_frames)):
        end = 2 * len(tokens)  # the final blank; the last token is the state before it (column + 2)
        final = table[frames - 1, b]
        last[b] = end if final[end + 2] >= final[end + 1] else end - 1
        if not np.isfinite(final[last[b] + 2]):
            raise MtbiError("no CTC path of the targets has a finite probability")
    paths = _backtrack(table, skip_bias.numpy(), last, np.asarray(num_frames))
    return [_token_frames(path[:frames], len(tokens)) for path, frames, tokens in zip(paths, num_frames, targets)]


def _check_targets(targets: Sequence[int], num_frames: int, blank: int) -> None:
    if not targets:
        raise MtbiError("CTC forced alignment needs at least one target token")
    if blank in targets:
        raise MtbiError(f"CTC targets contain the blank id {blank}")
    if num_frames < required_frames(targets):
        raise MtbiError(f"{len(targets)} CTC targets need at least {required_frames(targets)} frames, "
                        f"got {num_frames}")


def _state_log_probs(log_probs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """The log-probabilities ``(T, B, 2 + S)`` of the ``states`` ``(B, S)`` of each utterance at
    each frame of ``log_probs`` ``(B, T, V)``, after two columns of -inf (the missing
    predecessors of the first states)."""
    batch, length, vocab = log_probs.shape
    # Index ``vocab`` picks the -inf appended to every frame.
    frames = torch.cat([log_probs, log_probs.new_full((batch, length, 1), float("-inf"))], dim=2)
    index = torch.cat([torch.full((batch, 2), vocab, dtype=torch.long), states], dim=1)
    columns = (index + torch.arange(batch)[:, None] * (vocab + 1)).reshape(-1).numpy()
    # numpy's take: about twice as fast as torch's gather here, and this table is as big as the search
    table = np.take(frames.transpose(0, 1).reshape(length, -1).numpy(), columns, axis=1)
    return torch.from_numpy(table.reshape(length, batch, -1))


def _viterbi(scores: torch.Tensor, skip_bias: torch.Tensor) -> None:
    """Turn the state log-probabilities ``scores`` ``(T, B, 2 + S)`` into the best path score
    of each state at each frame, in place; ``skip_bias`` ``(B, S)`` is 0 where a state may be
    entered from two states back, else -inf."""
    scores[0, :, 4:] = float("-inf")  # a path starts in the first blank or the first token
    num_states = skip_bias.shape[1]
    # Each frame's scores of each state, of the state before it and of the state two back.
    stay, one_back, two_back = (scores[:, :, k:k + num_states].unbind(0) for k in (2, 1, 0))
    best = torch.empty(skip_bias.shape, dtype=scores.dtype)
    skip = torch.empty(skip_bias.shape, dtype=scores.dtype)
    for t in range(1, scores.shape[0]):  # this loop is the cost: four operations a frame
        torch.maximum(stay[t - 1], one_back[t - 1], out=best)
        torch.add(two_back[t - 1], skip_bias, out=skip)
        torch.maximum(best, skip, out=best)
        stay[t].add_(best)


def _backtrack(scores: np.ndarray, skip_bias: np.ndarray, last: np.ndarray, num_frames: np.ndarray) -> np.ndarray:
    """The state of each frame ``(B, T)`` on each utterance's best path through ``scores``
    (of :func:`_viterbi`), from its ``last`` state at its last frame back. The predecessor is
    the best of staying, one and two states back (in that order on ties); a frame after an
    utterance's last holds its last state."""
    length, batch, width = scores.shape
    frames = scores.reshape(length, -1)
    columns = np.arange(batch) * width  # of each utterance's first column in a frame's row
    biases = skip_bias.reshape(-1)
    bias_columns = np.arange(batch) * skip_bias.shape[1]
    moves = np.array([2, 1, 0])  # the columns of staying, one and two states back, less the state's
    active = num_frames[None, :] > np.arange(length)[:, None]  # (T, B)
    paths = np.empty((batch, length), dtype=np.int64)
    state = last.copy()
    for t in range(length - 1, 0, -1):  # vectorised over the batch: the indexing is the cost
        paths[:, t] = state
        candidates = frames[t - 1][(columns + state)[:, None] + moves]
        candidates[:, 2] += biases[bias_columns + state]
        state -= candidates.argmax(axis=1) * active[t]
    paths[:, 0] = state
    return paths


def _token_frames(path: np.ndarray, num_tokens: int) -> list[tuple[int, int, int]]:
    """``(token index, first frame, last frame)`` of each token from the state of each frame."""
    # The path never goes back, so each token's frames are one run of the token frames.
    frames = np.flatnonzero(path % 2 == 1)
    tokens = path[frames] // 2
    indices = np.arange(num_tokens)
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
    (``durations`` from its utt2num_frames), by CTC forced alignment with ``model``, ``batch_size``
    utterances at a time; ``num_workers`` DataLoader workers read (or compute) the features (see
    :meth:`SpeechFeatures.batches`).

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
    # Batches of similar length waste little padding, in the model and in the Viterbi search.
    order = sorted(todo, key=lambda u: durations[u], reverse=True)
    batches = [order[begin:begin + batch_size] for begin in range(0, len(order), batch_size)]
    begin = time.perf_counter()
    with tqdm(total=len(order), desc="CTC alignment", unit="utt", mininterval=2.0) as progress:
        for batch, padded, lens in features.batches(batches, num_workers):
            with torch.inference_mode():
                log_probs, out_lens = model.log_probs(padded.to(device), lens.to(device))
            targets = {utt: todo[utt] for utt in batch}
            times, short = _align_batch(targets, log_probs.float().cpu(), out_lens.tolist(), separator,
                                        model.frame_shift)
            for utt, words in times.items():
                spans[utt] = [WordSpan(utt, round(start, 3), round(end, 3), token)
                              for (start, end), token in zip(words, texts[utt].split())]
            skipped += short
            progress.update(len(batch))
    seconds = time.perf_counter() - begin
    logger.info("CTC alignment: %d utterances in %.1f s (%.1f utterances/s)", len(order), seconds,
                len(order) / seconds if seconds else 0.0)
    return spans, skipped


def _align_batch(targets: Mapping[str, list[int]], log_probs: torch.Tensor, num_frames: Sequence[int],
                 separator: int, frame_shift: float) -> tuple[dict[str, list[tuple[float, float]]], list[AlignmentError]]:
    """Word ``(start, end)`` seconds of each utterance of ``targets`` (in batch order, with
    ``log_probs`` ``(B, T, V)`` and ``num_frames``), and those too short for their targets."""
    short: list[AlignmentError] = []
    keep: list[int] = []
    for k, (utt, tokens) in enumerate(targets.items()):
        needed = required_frames(tokens)
        if num_frames[k] < needed:
            short.append(AlignmentError(utt, "audio too short for the transcript",
                                        f"{len(tokens)} tokens need {needed} frames, the model "
                                        f"gives {num_frames[k]}"))
        else:
            keep.append(k)
    if not keep:
        return {}, short
    utts = list(targets)
    alignments = forced_align_batch(log_probs[keep], [num_frames[k] for k in keep],
                                    [targets[utts[k]] for k in keep])
    return {utts[k]: word_spans(alignment, targets[utts[k]], separator, frame_shift)
            for k, alignment in zip(keep, alignments)}, short
