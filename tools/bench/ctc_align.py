#!/usr/bin/env python3
"""Benchmark: stage 3's CTC forced alignment (the Viterbi search) of a batch of utterances at
once (``forced_align_batch``) against one utterance at a time with the search mtbi had before it
(the baseline, copied below), measured in the same run on the same log-probabilities; the
per-utterance ``forced_align`` (a batch of one) is shown between them.

    tools/venv/bin/python tools/bench/ctc_align.py [--utts 32] [--batch_size 16] [--repeats 3]

Random log-probabilities stand in for a CTC model's: --utts utterances of 500-1500 frames, a
fifth as many targets (100-300) drawn from a vocabulary of --vocab characters (so with repeats),
in batches of --batch_size in length order as ``align_with_ctc`` makes them. Prints the
utterances aligned a second by each (best of --repeats) with its ratio to the baseline, after
checking that all three give the same alignments.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import numpy as np
import torch

from mtbi.bench.stamp import table_stamp
from mtbi.models.ctc_align import forced_align, forced_align_batch


def make_utterances(count: int, vocab: int, generator: torch.Generator) -> list[tuple[torch.Tensor, list[int]]]:
    """``count`` (log_probs ``(T, vocab)``, targets) pairs, longest first."""
    utterances = []
    for _ in range(count):
        frames = int(torch.randint(500, 1501, (1,), generator=generator))
        targets = torch.randint(1, vocab, (frames // 5,), generator=generator).tolist()
        log_probs = (3 * torch.randn(frames, vocab, generator=generator)).log_softmax(-1)
        utterances.append((log_probs, targets))
    return sorted(utterances, key=lambda u: -u[0].shape[0])


def previous_forced_align(log_probs: torch.Tensor, targets: list[int]) -> list[tuple[int, int, int]]:
    """The baseline: mtbi's Viterbi search of one utterance before the batched one (commit
    e493971, checks left out), vectorised over the states only, with back pointers."""
    num_frames = log_probs.shape[0]
    states = torch.zeros(2 * len(targets) + 1, dtype=torch.long)
    states[1::2] = torch.as_tensor(targets, dtype=torch.long)
    emit = log_probs[:, states]
    num_states = states.numel()
    skip_bias = torch.full((num_states,), float("-inf"), dtype=emit.dtype)
    skip_bias[3::2] = torch.where(states[3::2] != states[1:-2:2], 0.0, float("-inf"))
    score = torch.full((num_states + 2,), float("-inf"), dtype=emit.dtype)
    score[2:4] = emit[0, :2]
    candidates = torch.empty((3, num_states), dtype=emit.dtype)
    best = torch.empty(num_states, dtype=emit.dtype)
    back = torch.zeros((num_frames, num_states), dtype=torch.long)
    for t in range(1, num_frames):
        candidates[0] = score[2:]
        candidates[1] = score[1:-1]
        torch.add(score[:-2], skip_bias, out=candidates[2])
        torch.max(candidates, dim=0, out=(best, back[t]))
        torch.add(best, emit[t], out=score[2:])
    state = num_states - 1 if score[-1] >= score[-2] else num_states - 2
    steps = back.numpy()
    path = np.empty(num_frames, dtype=np.int64)
    for t in range(num_frames - 1, -1, -1):
        path[t] = state
        state -= int(steps[t, state])
    frames = np.flatnonzero(path % 2 == 1)
    tokens = path[frames] // 2
    indices = np.arange(len(targets))
    firsts = np.searchsorted(tokens, indices, side="left")
    lasts = np.searchsorted(tokens, indices, side="right") - 1
    return [(int(i), int(frames[a]), int(frames[b])) for i, a, b in zip(indices, firsts, lasts)]


def previous(batch: list[tuple[torch.Tensor, list[int]]]) -> list:
    return [previous_forced_align(log_probs, targets) for log_probs, targets in batch]


def per_utterance(batch: list[tuple[torch.Tensor, list[int]]]) -> list:
    return [forced_align(log_probs, targets) for log_probs, targets in batch]


def batched(batch: list[tuple[torch.Tensor, list[int]]]) -> list:
    """One Viterbi search over the padded batch."""
    padded = torch.nn.utils.rnn.pad_sequence([lp for lp, _ in batch], batch_first=True)
    return forced_align_batch(padded, [lp.shape[0] for lp, _ in batch], [t for _, t in batch])


def best_seconds(align: Callable[[list], list], batches: list[list], repeats: int) -> tuple[float, list]:
    """The fastest of ``repeats`` runs of ``align`` over ``batches``, and its alignments."""
    times, results = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        results = [a for batch in batches for a in align(batch)]
        times.append(time.perf_counter() - start)
    return min(times), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utts", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one a job, as stage 3 runs --nj jobs)")
    args = parser.parse_args()
    print(table_stamp(" ".join(sys.argv), []), flush=True)  # what made the figures below
    torch.set_num_threads(args.threads)
    utterances = make_utterances(args.utts, args.vocab, torch.Generator().manual_seed(0))
    batches = [utterances[i:i + args.batch_size] for i in range(0, len(utterances), args.batch_size)]
    ways = {"previous per utterance (baseline)": previous, "forced_align per utterance": per_utterance,
            "forced_align_batch": batched}
    seconds, results = {}, {}
    for name, align in ways.items():
        seconds[name], results[name] = best_seconds(align, batches, args.repeats)
    if any(r != results["forced_align_batch"] for r in results.values()):
        raise SystemExit("the alignments differ between the ways of aligning")
    frames = sum(lp.shape[0] for lp, _ in utterances)
    print(f"{args.utts} utterances ({frames} frames, {sum(len(t) for _, t in utterances)} targets, "
          f"vocabulary {args.vocab}), batches of {args.batch_size}, {args.threads} thread(s), best of {args.repeats}")
    baseline = seconds["previous per utterance (baseline)"]
    for name, took in seconds.items():
        print(f"{name + ':':36s} {args.utts / took:7.1f} utterances/s  {baseline / took:5.2f}x")
    print("same alignments from all three")

if __name__ == "__main__":
    main()
