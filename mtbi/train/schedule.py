"""The learning-rate schedule of every trainer here: linear warmup, then cosine decay to 0."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, steps: int, decay_start: int | None = None) -> float:
    """Learning-rate factor at ``step``: linear warmup over ``warmup_steps``, and a cosine decay
    that reaches 0 at ``steps``; the decay starts after the warmup, or at ``decay_start``
    (0: from the first step on, the warmup then cuts into its beginning)."""
    start = warmup_steps if decay_start is None else decay_start
    decay = min(1.0, max(0.0, (step - start) / max(1, steps - start)))
    return min((step + 1) / max(1, warmup_steps), 0.5 * (1 + math.cos(math.pi * decay)))
