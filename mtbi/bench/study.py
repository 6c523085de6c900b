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
from mtbi.errors import MtbiError
from mtbi.run_names import PRIOR_METHODS, REFERENCE, RUN_PREFIX, TEACHER_TEXT, RunName

ALPHA = 0.05
CLAIM_SPLITS = {"unseen": "unseen prompts", "heldout": "held-out tasks"}
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
    for run in sorted(Path(exp_dir).glob(f"{RUN_PREFIX}*")):
        name = RunName.parse(run.name)
        if name is None:
            continue
        bench = run / f"bench_{test_set}"
        if not (bench / "hyp.jsonl").is_file():
            continue
        records = read_hyps(bench / "hyp.jsonl")
        final.setdefault(name.tag, {}).setdefault(name.share, []).append(records)
        answered = {int(STEP.match(h.parent.name)["step"]): h for h in (bench / "checkpoints").glob("step_*/hyp.jsonl")}
        if answered:
            curve = curves.setdefault(name.tag, {})
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


def compare_at(teacher: list[dict], systems: dict[str, list[list[dict]]], metric: str,
               num: int) -> dict[str, dict[str, SplitFidelity]]:
    """compare_fidelity of ``systems`` (tag -> runs) against MTBI with the teacher's text-input records."""
    return compare_fidelity({TEACHER_TEXT: [teacher], **systems}, REFERENCE, metric, num)


def steps_to_reach(curve: dict[int, SplitFidelity], target: float) -> int | None:
    """The first checkpoint step whose mean over items (seeds pooled) reaches ``target``."""
    return next((step for step, f in sorted(curve.items()) if f.items.mean >= target), None)


def generalization(runs: Runs, teacher: list[dict], metric: str, num: int) -> list[ClaimRow]:
    """Claim a: MTBI against ASR-only SFT and BLSP, all trained on the full data."""
    systems = {tag: runs.final[tag][1.0] for tag in (REFERENCE, *PRIOR_METHODS) if 1.0 in runs.final.get(tag, {})}
    if REFERENCE not in systems or len(systems) < 2:
        raise MtbiError(f"claim a needs {REFERENCE} and a baseline trained on all the data "
                        f"({RUN_PREFIX}<tag>); run stages 6-7")
    return claim_rows(compare_at(teacher, systems, metric, num), [t for t in PRIOR_METHODS if t in systems])


@dataclass(frozen=True)
class ShareResults:
    """Claim b: each system's fidelity per training share (``points``: tag -> share -> split ->
    fidelity) and its number of seeds (``seeds``: tag -> share -> runs), MTBI against the others
    at each share (``rows``), and per prior method and split the first share at which MTBI
    reaches that method's score on all the data (``reach``: None where it reaches it at no share
    measured)."""

    points: dict[str, dict[float, dict[str, SplitFidelity | None]]]
    seeds: dict[str, dict[float, int]]
    rows: list[tuple[float, ClaimRow]]
    reach: list[tuple[str, str, float | None]]


def by_share(runs: Runs, teacher: list[dict], metric: str, num: int) -> ShareResults:
    """Claim b from the runs of every training share."""
    tags = [t for t in (REFERENCE, *PRIOR_METHODS) if t in runs.final]
    shares = sorted({s for t in tags for s in runs.final[t]})
    points: dict[str, dict[float, dict[str, SplitFidelity | None]]] = {}
    seeds: dict[str, dict[float, int]] = {}
    rows = []
    for share in shares:
        systems = {t: runs.final[t][share] for t in tags if share in runs.final[t]}
        fidelity = compare_at(teacher, systems, metric, num)
        for tag in systems:
            points.setdefault(tag, {})[share] = {s: fidelity[tag].get(s) for s in CLAIM_SPLITS}
            seeds.setdefault(tag, {})[share] = len(systems[tag])
        if REFERENCE in systems:
            rows += [(share, r) for r in claim_rows(fidelity, [t for t in PRIOR_METHODS if t in systems])]
    reach = []
    for base in PRIOR_METHODS:
        for split in CLAIM_SPLITS:
            full = points.get(base, {}).get(1.0, {}).get(split)
            if full is None or REFERENCE not in points:
                continue
            enough = [s for s, p in sorted(points[REFERENCE].items()) if p[split] and p[split].items.mean >= full.items.mean]
            reach.append((base, split, enough[0] if enough else None))
    return ShareResults(points, seeds, rows, reach)


@dataclass(frozen=True)
class CurveResults:
    """Claim c: per curve system, its fidelity at each checkpoint step common to all of them
    (``curves``: tag -> step -> split -> fidelity), each against MTBI at equal steps
    (``verdicts``), and the first step reaching ``reach`` of MTBI's score at the last step
    (``reached``: tag -> split -> step or None)."""

    steps: list[int]
    curves: dict[str, dict[int, dict[str, SplitFidelity]]]
    verdicts: list[tuple[int, ClaimRow]]
    reached: dict[str, dict[str, int | None]]
    reach: float


def by_step(runs: Runs, teacher: list[dict], tags: list[str], metric: str, reach: float, num: int) -> CurveResults:
    """Claim c from the checkpoint answers of the curve systems ``tags``."""
    tags = [t for t in tags if t in runs.curves]
    if REFERENCE not in tags:
        raise MtbiError(f"claim c needs the checkpoint answers of {REFERENCE} (<run>/bench_<set>/checkpoints/); run "
                        "the study's stage 3")
    steps = sorted(set.intersection(*(set(runs.curves[t]) for t in tags)))
    curves: dict[str, dict[int, dict[str, SplitFidelity]]] = {t: {} for t in tags}
    verdicts = []
    for step in steps:
        fidelity = compare_at(teacher, {t: runs.curves[t][step] for t in tags}, metric, num)
        for tag in tags:
            curves[tag][step] = fidelity[tag]
        verdicts += [(step, r) for r in claim_rows(fidelity, [t for t in tags if t != REFERENCE],
                                                   claimed_positive=False)]
    reached: dict[str, dict[str, int | None]] = {}
    for tag in tags:
        for split in CLAIM_SPLITS:
            target = curves[REFERENCE][steps[-1]][split].items.mean * reach
            reached.setdefault(tag, {})[split] = steps_to_reach(
                {s: curves[tag][s][split] for s in steps if split in curves[tag][s]}, target)
    return CurveResults(steps, curves, verdicts, reached, reach)
