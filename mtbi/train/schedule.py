"""The learning-rate schedule shared by the trainers: linear warmup, then cosine decay to 0."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, steps: int) -> float:
    """Learning-rate factor: linear warmup over ``warmup_steps``, then cosine decay to 0 at ``steps``."""
    decay = min(1.0, max(0.0, (step - warmup_steps) / max(1, steps - warmup_steps)))
    return min((step + 1) / max(1, warmup_steps), 0.5 * (1 + math.cos(math.pi * decay)))
