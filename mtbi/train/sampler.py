"""Length-bucketing batches, deterministic per epoch, split over DDP ranks.

Both samplers number their global batches across epochs, and iteration can start at any batch
number (exact resume). Rank ``r`` of ``world_size`` takes its slice of each global batch, so a
run on N processes sees the same global batches as a run on one process. Items are
``(index, seed, batch number)``; the seed of an item depends on its batch number and place in
the global batch, not on the rank count.

- :class:`BucketBatchSampler`: global batches of ``global_batch_size`` examples. Each epoch
  shuffles the examples (seeded by ``seed`` and the epoch), cuts them into pools of
  ``pool_batches`` global batches, sorts each pool by length and cuts it into global batches,
  whose order is shuffled again. Ranks take equal slices.
- :class:`TokenBatchSampler`: global batches of at most ``batch_tokens`` padded positions (the
  longest example's size times the example count), built the same way from pools of about
  ``pool_batches`` batches, with one example per utterance where the pool allows it. Ranks take
  slices of about equal padded positions, at least one example each (the budget must hold
  ``world_size`` of the longest example).
"""

from __future__ import annotations

import abc
import itertools
import random
from typing import Iterator, Sequence

import numpy as np

from mtbi.errors import MtbiError


class _GlobalBatches(abc.ABC):
    """Epochs of global batches, numbered across epochs, and each rank's share of them."""

    batches_per_epoch: int

    def __init__(self, seed: int, world_size: int, rank: int, start: int) -> None:
        self.seed, self.world_size, self.rank, self.start = seed, world_size, rank, start
        self._recent: dict[int, list[list[int]]] = {}

    @abc.abstractmethod
    def _build(self, epoch: int) -> list[list[int]]:
        """The ``batches_per_epoch`` global batches of ``epoch``."""

    @abc.abstractmethod
    def rank_slice(self, batch: list[int]) -> range:
        """The places in ``batch`` that this rank takes."""

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of ``epoch`` (lists of example indices); those of the last two epochs
        asked for are kept."""
        if epoch not in self._recent:
            self._recent[epoch] = self._build(epoch)
            if len(self._recent) > 2:
                del self._recent[next(iter(self._recent))]
        return self._recent[epoch]

    def global_batch(self, number: int) -> list[int]:
        """Global batch number ``number``, counted across epochs."""
        epoch, k = divmod(number, self.batches_per_epoch)
        return self.global_batches(epoch)[k]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        number = self.start
        while True:
            batch = self.global_batch(number)
            # The seed of an item depends on its batch number and place, not on the rank count.
            yield [(batch[j], hash((self.seed, number, j)) & 0x7FFFFFFF, number) for j in self.rank_slice(batch)]
            number += 1


class BucketBatchSampler(_GlobalBatches):
    """Yields lists of ``(index, seed, batch number)`` for one rank, from batch number ``start``
    on, forever."""

    def __init__(self, lengths: Sequence[int], global_batch_size: int, seed: int = 0, world_size: int = 1,
                 rank: int = 0, pool_batches: int = 50, bucketing: bool = True, start: int = 0) -> None:
        if global_batch_size % world_size:
            raise ValueError(f"the global batch size {global_batch_size} is not divisible by {world_size} ranks")
        if len(lengths) < global_batch_size:
            raise ValueError(f"{len(lengths)} examples are fewer than one global batch ({global_batch_size})")
        super().__init__(seed, world_size, rank, start)
        self.lengths = lengths
        self.global_batch_size = global_batch_size
        self.pool_batches, self.bucketing = pool_batches, bucketing
        self.batches_per_epoch = len(lengths) // global_batch_size  # the remainder is dropped

    def _build(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{epoch}")
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        order = order[:self.batches_per_epoch * self.global_batch_size]
        size = self.global_batch_size
        batches = []
        pool = size * self.pool_batches
        for p in range(0, len(order), pool):
            chunk = order[p:p + pool]
            if self.bucketing:
                chunk.sort(key=lambda i: self.lengths[i])
            batches += [chunk[b:b + size] for b in range(0, len(chunk), size)]
        rng.shuffle(batches)
        return batches

    def rank_slice(self, batch: list[int]) -> range:
        per_rank = self.global_batch_size // self.world_size
        return range(self.rank * per_rank, (self.rank + 1) * per_rank)


class TokenBatchSampler(_GlobalBatches):
    """Yields lists of ``(index, seed, batch number)`` for one rank, from batch number ``start``
    on, forever.

    ``sizes``: each example's LLM sequence length; ``utts``: each example's utterance number
    (None: every example its own). A global batch exceeds ``batch_tokens`` only when it is a
    single example over it; the batches do not depend on ``world_size``, whose ranks need
    ``batch_tokens`` to hold ``world_size`` of the longest example. Each epoch has as many
    batches as epoch 0 (known without iterating): one that packs into more leaves the extra
    batches out, one that packs into fewer repeats its first ones. The examples of a pool's
    unfinished last batch join the next pool; in the epoch's last pool, utterances may repeat
    in a batch, and an unfinished last batch of fewer examples than a full one has at least
    (``batch_tokens`` // the longest size, so no fewer than the ranks) is left out.
    """

    def __init__(self, sizes: Sequence[int], batch_tokens: int, utts: Sequence[int] | None = None, seed: int = 0,
                 world_size: int = 1, rank: int = 0, pool_batches: int = 50, bucketing: bool = True,
                 start: int = 0) -> None:
        if batch_tokens < 1:
            raise MtbiError(f"batch_tokens must be positive, got {batch_tokens}")
        if len(sizes) < world_size:
            raise MtbiError(f"{len(sizes)} examples are fewer than the {world_size} ranks")
        if world_size > 1 and batch_tokens < world_size * max(sizes):
            raise MtbiError(f"batch_tokens {batch_tokens} holds fewer than {world_size} (the ranks) of the longest "
                            f"example ({max(sizes)} positions): raise it to {world_size * max(sizes)} or more, or "
                            "leave out long utterances (data.max_frames)")
        super().__init__(seed, world_size, rank, start)
        self.sizes, self.utts = sizes, range(len(sizes)) if utts is None else utts
        self.batch_tokens, self.bucketing = batch_tokens, bucketing
        self.pool_size = max(1, round(pool_batches * batch_tokens * len(sizes) / sum(sizes)))
        self.least = max(1, batch_tokens // max(sizes))  # examples a full batch has at least
        first = self._pack_epoch(0)
        self.batches_per_epoch = len(first)
        self._recent[0] = first

    def _build(self, epoch: int) -> list[list[int]]:
        batches = self._pack_epoch(epoch)
        return list(itertools.islice(itertools.cycle(batches), self.batches_per_epoch))

    def _pack_epoch(self, epoch: int) -> list[list[int]]:
        """Epoch ``epoch`` packed into batches, in shuffled order, each sorted longest first."""
        rng = np.random.default_rng(random.Random(f"{self.seed}:{epoch}").getrandbits(64))
        order = rng.permutation(len(self.sizes))
        batches: list[list[int]] = []
        waiting: list[int] = []
        for start in range(0, len(order), self.pool_size):
            pool = waiting + order[start:start + self.pool_size].tolist()
            if self.bucketing:
                pool.sort(key=self.sizes.__getitem__)
            packed, waiting = self._pack_pool(pool, last=start + self.pool_size >= len(order))
            batches += packed
        if len(waiting) >= self.least or not batches:
            batches.append(waiting)
        rng.shuffle(batches)
        return [sorted(b, key=self.sizes.__getitem__, reverse=True) for b in batches]

    def _pack_pool(self, pool: list[int], last: bool) -> tuple[list[list[int]], list[int]]:
        """Cut ``pool`` into full batches; returns them and the examples of the unfinished last
        batch, which wait for the next pool unless this is the ``last`` one."""
        batches = []
        while pool:
            batch, pool, full = self._fill([], pool, distinct=True)
            if not full and pool and last:  # only utterances the batch has are left
                batch, pool, full = self._fill(batch, pool, distinct=False)
            if not full:
                return batches, batch + pool
            batches.append(batch)
        return batches, []

    def _fill(self, batch: list[int], waiting: list[int], distinct: bool) -> tuple[list[int], list[int], bool]:
        """Add the examples of ``waiting``, in order, to ``batch`` until the next one would take it
        over the budget; when ``distinct``, skip those of utterances it has. Returns the batch, the
        examples not taken and whether the budget stopped it."""
        sizes, utts = self.sizes, self.utts
        longest = max((sizes[i] for i in batch), default=0)
        taken = {utts[i] for i in batch}
        skipped = []
        for k, i in enumerate(waiting):
            padded_to = max(longest, sizes[i])
            if padded_to * (len(batch) + 1) > self.batch_tokens and batch:
                return batch, skipped + waiting[k:], True
            if distinct and utts[i] in taken:
                skipped.append(i)
                continue
            batch.append(i)
            taken.add(utts[i])
            longest = padded_to
        return batch, skipped, False

    def rank_slice(self, batch: list[int]) -> range:
        bounds = split_evenly([self.sizes[i] for i in batch], self.world_size)
        return range(bounds[self.rank], bounds[self.rank + 1])


def split_evenly(sizes: Sequence[int], parts: int) -> list[int]:
    """Bounds of ``parts`` contiguous non-empty slices of ``sizes`` (longest first, at least
    ``parts`` of them) whose largest padded size (first size x count) is the least possible."""
    low, high = sizes[0], sizes[0] * len(sizes)
    while low < high:
        middle = (low + high) // 2
        if len(_cuts(sizes, middle)) - 1 <= parts:
            high = middle
        else:
            low = middle + 1
    bounds = _cuts(sizes, low)
    while len(bounds) - 1 < parts:  # fewer slices than parts: halve the one of most examples
        k = max(range(len(bounds) - 1), key=lambda s: bounds[s + 1] - bounds[s])
        bounds.insert(k + 1, (bounds[k] + bounds[k + 1]) // 2)
    return bounds


def _cuts(sizes: Sequence[int], limit: int) -> list[int]:
    """Bounds of the slices made by filling each up to ``limit`` padded positions (at least one example)."""
    bounds = [0]
    while bounds[-1] < len(sizes):
        bounds.append(min(len(sizes), bounds[-1] + max(1, limit // sizes[bounds[-1]])))
    return bounds


def budget_batches(sizes: Sequence[int], indices: Sequence[int], budget: int) -> list[list[int]]:
    """``indices`` sorted by size and cut into batches of at most ``budget`` padded positions
    (or of one example)."""
    batches: list[list[int]] = []
    for i in sorted(indices, key=sizes.__getitem__):
        if not batches or sizes[i] * (len(batches[-1]) + 1) > budget:
            batches.append([])
        batches[-1].append(i)
    return batches


def padding_fraction(lengths: Sequence[int], batches: list[list[int]]) -> float:
    """Share of padding (frames, or positions) when each batch is padded to its longest example."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / padded


def utterances_per_batch(utts: Sequence[int], batches: list[list[int]]) -> float:
    """Mean number of distinct utterances in a batch."""
    return sum(len({utts[i] for i in b}) for b in batches) / len(batches)
