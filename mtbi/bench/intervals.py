"""Uncertainty of benchmark comparisons: per-item fidelity to the teacher (exact match, ROUGE-L F1
by rouge-score, chrF by sacrebleu); per system and split, the spread over training seeds (each
run's mean) and a 95% bootstrap interval over test items (each item's score averaged over the
seeds); and a paired bootstrap test of one system against another on the same items, seeds pooled.

The paired test resamples items with replacement; its interval is the percentile interval of the
mean difference, its p-value the two-sided share of resampled differences on the far side of 0
(doubled, at most 1), as in Koehn (2004) for MT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtbi.bench.metrics import chrf, normalize_answer, rouge_l_f1
from mtbi.tasks.records import record_key

SPLITS = {"seen": "seen prompts", "unseen": "unseen prompts", "heldout": "held-out tasks"}
METRICS = {"exact_match": "exact match", "rouge_l": "ROUGE-L F1", "chrf": "chrF"}


def item_fidelity(hyp: str, teacher: str, metric: str) -> float:
    """One answer's agreement with the teacher's answer, 0-1: ``exact_match`` (after
    normalization), ``rouge_l`` (F1) or ``chrf``."""
    if metric == "exact_match":
        return float(normalize_answer(hyp) == normalize_answer(teacher))
    return {"rouge_l": rouge_l_f1, "chrf": chrf}[metric](hyp, teacher)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


def _resampled_means(values: np.ndarray, num: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return values[rng.integers(0, len(values), size=(num, len(values)))].mean(axis=1)


def _percentile_interval(mean: float, means: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    return Interval(mean, float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


def bootstrap_interval(values: np.ndarray, num: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """The mean of ``values`` and its percentile bootstrap interval over items."""
    values = np.asarray(values, dtype=np.float64)
    return _percentile_interval(float(values.mean()), _resampled_means(values, num, seed), level)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, num: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[Interval, float]:
    """The mean of ``a - b`` over paired items with its bootstrap interval, and the two-sided
    p-value of "no difference"."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    means = _resampled_means(diff, num, seed)
    p = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return _percentile_interval(float(diff.mean()), means, level), p


def seed_spread(values: list[float | None]) -> tuple[float, float | None] | None:
    """Mean and standard deviation (None for one value) over seeds; None if any value is."""
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


@dataclass(frozen=True)
class SplitFidelity:
    """One system's fidelity on one split: each run's (seed's) mean over the items, the mean
    over items of the seed-averaged item scores with its bootstrap interval, and the reference
    system minus this one on the same items (interval, p; None for the reference itself)."""

    per_seed: tuple[float, ...]
    items: Interval
    num_items: int
    vs_reference: tuple[Interval, float] | None = None

    @property
    def spread(self) -> tuple[float, float | None]:
        """Mean and standard deviation (None for one seed) over the seeds' means."""
        return seed_spread(list(self.per_seed))

    @property
    def std(self) -> float | None:
        """The standard deviation over seeds (None for one seed)."""
        return self.spread[1]

    def to_json(self) -> dict:
        out = {"mean": self.items.mean, "std": self.std, "per_seed": list(self.per_seed),
               "interval": [self.items.low, self.items.high], "num_items": self.num_items}
        if self.vs_reference is not None:
            diff, p = self.vs_reference
            out["vs_reference"] = {"diff": diff.mean, "interval": [diff.low, diff.high], "p": p}
        return out


def _item_scores(runs: list[list[dict]], teacher: dict[tuple, str], split: str,
                 metric: str) -> tuple[list[float], dict[tuple, float]]:
    """Each run's mean on ``split``, and per item (answered in every run) the mean over runs."""
    per_run = [{record_key(r): item_fidelity(r["hyp"], teacher[record_key(r)], metric)
                for r in run if r["split"] == split and record_key(r) in teacher} for run in runs]
    shared = set.intersection(*(set(scores) for scores in per_run))
    pooled = {key: float(np.mean([scores[key] for scores in per_run])) for key in shared}
    return [float(np.mean(list(scores.values()))) for scores in per_run if scores], pooled


def compare_fidelity(runs: dict[str, list[list[dict]]], reference: str, metric: str,
                     num: int = 2000) -> dict[str, dict[str, SplitFidelity]]:
    """Per system and split: its :class:`SplitFidelity` in ``metric`` against the teacher.
    ``runs``: system name -> its hyp.jsonl records, one list per training seed; the teacher's
    (input text, one run) among them. Splits a system has no items of are left out."""
    teacher_name = next(name for name, system_runs in runs.items() if system_runs[0][0]["input"] == "text")
    teacher = {record_key(r): r["hyp"] for r in runs[teacher_name][0]}
    scores = {name: {split: _item_scores(system_runs, teacher, split, metric) for split in SPLITS}
              for name, system_runs in runs.items()}
    out: dict[str, dict[str, SplitFidelity]] = {}
    for name in runs:
        out[name] = {}
        for split, (per_seed, items) in scores[name].items():
            if not items:
                continue
            keys = sorted(items)
            mine = np.array([items[k] for k in keys])
            ref = scores.get(reference, {}).get(split, ([], {}))[1]
            test = None
            if name not in (reference, teacher_name) and all(k in ref for k in keys):
                test = paired_bootstrap(np.array([ref[k] for k in keys]), mine, num)
            out[name][split] = SplitFidelity(tuple(per_seed), bootstrap_interval(mine, num), len(keys), test)
    return out
