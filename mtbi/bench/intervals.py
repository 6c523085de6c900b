"""Uncertainty of benchmark comparisons over test items: per-item fidelity to the teacher
(ROUGE-L F1 by rouge-score, chrF by sacrebleu), 95% bootstrap intervals of a system's mean, and
paired bootstrap tests of one system against another on the same items.

The paired test resamples items with replacement; its interval is the percentile interval of the
mean difference, its p-value the two-sided share of resampled differences on the far side of 0
(doubled, at most 1), as in Koehn (2004) for MT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtbi.bench.metrics import chrf, rouge_l_f1
from mtbi.tasks.targets import record_key

SPLITS = {"seen": "seen prompts", "unseen": "unseen prompts", "heldout": "held-out tasks"}
METRICS = ("rouge_l", "chrf")


def item_fidelity(hyp: str, teacher: str, metric: str) -> float:
    """One answer's agreement with the teacher's answer, 0-1: ``rouge_l`` (F1) or ``chrf``."""
    return {"rouge_l": rouge_l_f1, "chrf": chrf}[metric](hyp, teacher)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


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


def fidelity_table(hyps: dict[str, list[dict]], reference: str, metric: str, num: int = 2000) -> str:
    """Markdown: per split, each speech system's mean per-item fidelity (``metric``) to the
    teacher with its 95% bootstrap interval, and ``reference`` minus that system on the same
    items (interval, p). ``hyps``: system name -> hyp.jsonl records, the teacher's (input text)
    among them."""
    teacher_name = next(name for name, records in hyps.items() if records[0]["input"] == "text")
    teacher = {record_key(r): r["hyp"] for r in hyps[teacher_name]}
    systems = [name for name in hyps if name != teacher_name]
    title = {"rouge_l": "ROUGE-L F1", "chrf": "chrF"}[metric]
    lines = [f"Fidelity to the teacher per item ({title}, 0-1): mean [95% bootstrap interval over items]; "
             f"{reference} minus the system on the same items [interval], paired bootstrap p ({num} resamples)", "",
             "| system | " + " | ".join(f"{title_} | {reference} - system" for title_ in SPLITS.values()) + " |",
             "|---|" + "---|---|" * len(SPLITS)]
    scores = {name: {split: {record_key(r): item_fidelity(r["hyp"], teacher[record_key(r)], metric)
                             for r in hyps[name] if r["split"] == split and record_key(r) in teacher}
                     for split in SPLITS} for name in systems}
    for name in systems:
        cells = []
        for split in SPLITS:
            mine = scores[name][split]
            if not mine:
                cells += ["-", "-"]
                continue
            keys = sorted(mine)
            cells.append(f"{bootstrap_interval(np.array([mine[k] for k in keys]), num)} (n={len(keys)})")
            ref = scores.get(reference, {}).get(split, {})
            if name == reference or not all(k in ref for k in keys):
                cells.append("-")
            else:
                diff, p = paired_bootstrap(np.array([ref[k] for k in keys]), np.array([mine[k] for k in keys]), num)
                p_text = f"p<{1 / num:.2g}" if p == 0 else f"p={p:.3g}"  # no resample on the other side
                cells.append(f"{diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}], {p_text}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
