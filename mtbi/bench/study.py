"""The paper's three claims as verdicts from a study's runs (local/run_study.sh), each system's
runs (training seeds) pooled item by item as in mtbi.bin.compare:

a. generalization: MTBI against ASR-only SFT and BLSP on unseen prompts and held-out tasks
   (the baselines' runs ``sllm_<tag>[_seed<k>]``);
b. supervised speech data: the same comparison, and each system's fidelity, at each share of
   the training utterances (runs ``sllm_<tag>_frac<percent>[_seed<k>]``; 100%: the baselines');
c. alignment efficiency: at each checkpoint of MTBI, MTBI + interleaving and the interleaving
   ablations (``<run>/bench_<set>/checkpoints/step_<N>/hyp.jsonl``, and the final weights'
   answers at the run's last step), each system against MTBI at equal steps, and the first
   checkpoint whose mean reaches a share of MTBI's final score.

A claim holds on a split when the paired difference has the claimed sign with p below
``ALPHA``; it does not hold when it has the other sign with p below ``ALPHA``; else undecided.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mtbi.bench.intervals import SplitFidelity, compare_fidelity
from mtbi.bench.scoring import read_hyps

ALPHA = 0.05
CLAIM_SPLITS = {"unseen": "unseen prompts", "heldout": "held-out tasks"}
RUN_NAME = re.compile(r"^sllm_(?P<tag>.+?)(_frac(?P<percent>\d+))?(_seed(?P<seed>\d+))?$")
STEP = re.compile(r"^step_0*(?P<step>\d+)$")


def verdict(diff: float, p: float, claimed_positive: bool = True) -> str:
    """``holds``, ``does not hold`` or ``undecided`` for a paired difference ``diff`` with
    p-value ``p``, the claim being that ``diff`` is positive (or negative)."""
    if p < ALPHA:
        return "holds" if (diff > 0) == claimed_positive else "does not hold"
    return "undecided"


@dataclass(frozen=True)
class Runs:
    """The hyp.jsonl records of each run of a study, by system tag and training share, and
    per checkpoint step for the learning curves."""

    final: dict[str, dict[float, list[list[dict]]]]        # tag -> share -> one list per seed
    curves: dict[str, dict[int, list[list[dict]]]]         # tag -> step -> one list per seed


def collect_runs(exp_dir: str | Path, test_set: str) -> Runs:
    """Every SLLM run of ``exp_dir`` with answers to ``test_set``: of its final weights
    (``bench_<set>/hyp.jsonl``) and of its checkpoints (``bench_<set>/checkpoints/step_<N>/``);
    runs with checkpoint answers also give their final answers a point on the curve, at the step
    of their last checkpoint."""
    final: dict[str, dict[float, list[list[dict]]]] = {}
    curves: dict[str, dict[int, list[list[dict]]]] = {}
    for run in sorted(Path(exp_dir).glob("sllm_*")):
        name = RUN_NAME.match(run.name)
        if name is None:
            continue
        share = int(name["percent"]) / 100 if name["percent"] else 1.0
        bench = run / f"bench_{test_set}"
        if not (bench / "hyp.jsonl").is_file():
            continue
        records = read_hyps(bench / "hyp.jsonl")
        final.setdefault(name["tag"], {}).setdefault(share, []).append(records)
        answered = {int(STEP.match(h.parent.name)["step"]): h for h in (bench / "checkpoints").glob("step_*/hyp.jsonl")}
        if answered:
            curve = curves.setdefault(name["tag"], {})
            for step, hyp in answered.items():
                curve.setdefault(step, []).append(read_hyps(hyp))
            last = max(int(STEP.match(c.name)["step"]) for c in (run / "checkpoints").glob("step_*"))
            if last not in answered:
                curve.setdefault(last, []).append(records)
    return Runs(final, curves)


@dataclass(frozen=True)
class ClaimRow:
    """``system`` against the reference on ``split``: its fidelity and the verdict."""

    system: str
    split: str
    fidelity: SplitFidelity
    verdict: str


def claim_rows(fidelity: dict[str, dict[str, SplitFidelity]], others: list[str],
               claimed_positive: bool = True) -> list[ClaimRow]:
    """Rows of the claim "the reference beats each of ``others``" (``claimed_positive``: the
    reference minus the other is positive) on unseen prompts and held-out tasks."""
    rows = []
    for other in others:
        for split in CLAIM_SPLITS:
            f = fidelity.get(other, {}).get(split)
            if f is not None and f.vs_reference is not None:
                diff, p = f.vs_reference
                rows.append(ClaimRow(other, split, f, verdict(diff.mean, p, claimed_positive)))
    return rows


def compare_at(teacher: list[dict], systems: dict[str, list[list[dict]]], reference: str, metric: str,
               num: int) -> dict[str, dict[str, SplitFidelity]]:
    """compare_fidelity of ``systems`` (tag -> runs) against ``reference`` with the teacher's
    text-input records."""
    return compare_fidelity({"teacher_text": [teacher], **systems}, reference, metric, num)


def steps_to_reach(curve: dict[int, SplitFidelity], target: float) -> int | None:
    """The first checkpoint step whose mean over items (seeds pooled) reaches ``target``."""
    return next((step for step, f in sorted(curve.items()) if f.items.mean >= target), None)
