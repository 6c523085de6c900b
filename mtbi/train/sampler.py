"""Length-bucketing batches, deterministic per epoch, split over DDP ranks.

Each epoch shuffles the examples (seeded by ``seed`` and the epoch), cuts them into pools of
``pool_batches`` global batches, sorts each pool by length and cuts it into global batches of
``global_batch_size``, whose order is shuffled again. Rank ``r`` of ``world_size`` takes the
``r``-th slice of each global batch, so a run on N processes sees the same global batches as a
run on one process with the same global batch size. Batches are numbered across epochs, and
iteration can start at any batch number (exact resume).
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence


class BucketBatchSampler:
    """Yields lists of ``(index, seed)`` for one rank, from batch number ``start`` on, forever."""

    def __init__(self, lengths: Sequence[int], global_batch_size: int, seed: int = 0, world_size: int = 1,
                 rank: int = 0, pool_batches: int = 50, bucketing: bool = True, start: int = 0) -> None:
        if global_batch_size % world_size:
            raise ValueError(f"the global batch size {global_batch_size} is not divisible by {world_size} ranks")
        if len(lengths) < global_batch_size:
            raise ValueError(f"{len(lengths)} examples are fewer than one global batch ({global_batch_size})")
        self.lengths = lengths
        self.global_batch_size = global_batch_size
        self.seed, self.world_size, self.rank = seed, world_size, rank
        self.pool_batches, self.bucketing, self.start = pool_batches, bucketing, start
        self.batches_per_epoch = len(lengths) // global_batch_size  # the remainder is dropped

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of ``epoch`` (lists of example indices)."""
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

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        number = self.start
        per_rank = self.global_batch_size // self.world_size
        while True:
            epoch, k = divmod(number, self.batches_per_epoch)
            batches = self.global_batches(epoch)
            for batch in batches[k:]:
                mine = range(self.rank * per_rank, (self.rank + 1) * per_rank)
                # The seed of an item depends on its batch number and place, not on the rank count.
                yield [(batch[j], hash((self.seed, number, j)) & 0x7FFFFFFF) for j in mine]
                number += 1


def padding_fraction(lengths: Sequence[int], batches: list[list[int]]) -> float:
    """Share of padded frames when each batch is padded to its longest example."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / padded
