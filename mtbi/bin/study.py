"""The study's report (local/run_study.sh, last stage): the paper's three claims with verdicts.

Reads the runs of --exp_dir (mtbi.bench.study: the baselines, the training-share runs
``sllm_<tag>_frac<percent>[_seed<k>]`` and the checkpoint answers
``<run>/bench_<set>/checkpoints/``) and the teacher's text-input answers, and writes <out>.md,
<out>.json, <out>_data.png and <out>_curves.png; with --readme the markdown goes into that README
between ``<!-- <key>:begin -->`` and ``<!-- <key>:end -->``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mtbi.bench.intervals import METRICS, SplitFidelity
from mtbi.bench.report import difference_cell, metric_format, replace_marked_section, spread_cell
from mtbi.bench.scoring import read_hyps
from mtbi.bench.study import CLAIM_SPLITS, ClaimRow, Runs, claim_rows, collect_runs, compare_at, steps_to_reach
from mtbi.cli import run_main
from mtbi.errors import MtbiError
from mtbi.stage import atomic_write

logger = logging.getLogger(__name__)

BASELINES = ("asr_sft", "blsp")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", required=True, help="the recipe's experiment dir, e.g. exp")
    parser.add_argument("--test_set", required=True)
    parser.add_argument("--teacher_hyp", required=True, help="the teacher's answers to the test set (text input)")
    parser.add_argument("--metric", choices=list(METRICS), default="rouge_l", help="the fidelity metric")
    parser.add_argument("--curve_systems", nargs="+", default=["mtbi", "mtbi_interleave"],
                        help="system tags of the learning curves (the ablations after these two)")
    parser.add_argument("--reach", type=float, default=0.9,
                        help="steps to reach this share of MTBI's final curve score")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", required=True, help="output path without extension, e.g. exp/study/study")
    parser.add_argument("--readme", default=None)
    parser.add_argument("--readme_key", default=None, help="the README markers' key (default: study:<test set>)")
    return parser


def _row(metric: str, row: ClaimRow, num: int, reference: str = "mtbi") -> str:
    return (f"| {reference} - {row.system} | {CLAIM_SPLITS[row.split]} | "
            f"{difference_cell(row.fidelity.vs_reference, num, *metric_format(metric))} | {row.verdict} |")


def _cell(metric: str, f: SplitFidelity | None) -> str:
    return "-" if f is None else spread_cell(f.spread, *metric_format(metric))


def generalization_section(runs: Runs, teacher: list[dict], metric: str, num: int) -> tuple[str, dict]:
    """Claim a: MTBI against ASR-only SFT and BLSP, all at the full training data."""
    systems = {tag: runs.final[tag][1.0] for tag in ("mtbi", *BASELINES) if 1.0 in runs.final.get(tag, {})}
    if "mtbi" not in systems or len(systems) < 2:
        raise MtbiError("claim a needs mtbi and a baseline trained on all the data (exp/sllm_<tag>); run stages 6-7")
    fidelity = compare_at(teacher, systems, "mtbi", metric, num)
    rows = claim_rows(fidelity, [t for t in BASELINES if t in systems])
    lines = ["### a. MTBI generalizes better than ASR-only SFT and BLSP", "",
             f"Fidelity ({METRICS[metric]}) of MTBI minus each baseline on the same items, seeds pooled: "
             "[95% bootstrap interval], paired bootstrap p.", "",
             "| comparison | split | difference [interval], p | verdict |", "|---|---|---|---|"]
    lines += [_row(metric, r, num) for r in rows]
    return "\n".join(lines) + "\n", {"rows": [_row_json(r) for r in rows]}


def _row_json(row: ClaimRow) -> dict:
    diff, p = row.fidelity.vs_reference
    return {"system": row.system, "split": row.split, "diff": diff.mean, "interval": [diff.low, diff.high],
            "p": p, "verdict": row.verdict, "seeds": len(row.fidelity.per_seed)}


def data_section(runs: Runs, teacher: list[dict], metric: str, num: int) -> tuple[str, dict]:
    """Claim b: fidelity against the share of training utterances, and MTBI against the others
    at each share."""
    tags = [t for t in ("mtbi", *BASELINES) if t in runs.final]
    shares = sorted({s for t in tags for s in runs.final[t]})
    table = ["### b. MTBI needs less supervised speech data", "",
             f"Fidelity ({METRICS[metric]}, mean ± std over seeds) by the share of the training utterances "
             "each system was trained on (the same utterances for every system and seed), and MTBI minus the "
             "others at the same share.", "",
             "| system | share | seeds | " + " | ".join(CLAIM_SPLITS.values()) + " |", "|---|---|---|---|---|"]
    rows, points = [], {}
    for share in shares:
        systems = {t: runs.final[t][share] for t in tags if share in runs.final[t]}
        fidelity = compare_at(teacher, systems, "mtbi", metric, num)
        for tag in systems:
            points.setdefault(tag, {})[share] = {s: fidelity[tag].get(s) for s in CLAIM_SPLITS}
            table.append(f"| {tag} | {share:.0%} | {len(systems[tag])} | "
                         + " | ".join(_cell(metric, fidelity[tag].get(s)) for s in CLAIM_SPLITS) + " |")
        if "mtbi" in systems:
            rows += [(share, r) for r in claim_rows(fidelity, [t for t in BASELINES if t in systems])]
    table += ["", "| share | comparison | split | difference [interval], p | verdict |", "|---|---|---|---|---|"]
    table += [f"| {share:.0%} " + _row(metric, r, num) for share, r in rows]
    reach = []
    for base in BASELINES:
        for split in CLAIM_SPLITS:
            full = points.get(base, {}).get(1.0, {}).get(split)
            if full is None or "mtbi" not in points:
                continue
            enough = [s for s, p in sorted(points["mtbi"].items()) if p[split] and p[split].items.mean >= full.items.mean]
            reach.append(f"- {CLAIM_SPLITS[split]}: MTBI reaches {base}'s score with all the data "
                         + (f"from {enough[0]:.0%} of the utterances" if enough else "at no share measured"))
    text = "\n".join(table + [""] + reach) + "\n"
    data = {"points": {t: {str(s): {k: (None if f is None else f.to_json()) for k, f in v.items()}
                           for s, v in by_share.items()} for t, by_share in points.items()},
            "rows": [{"share": s, **_row_json(r)} for s, r in rows]}
    return text, {**data, "_points": points}


def curve_section(runs: Runs, teacher: list[dict], tags: list[str], metric: str, reach: float,
                  num: int) -> tuple[str, dict]:
    """Claim c: each curve system against MTBI at every checkpoint step, and the steps each
    takes to reach ``reach`` of MTBI's final score."""
    tags = [t for t in tags if t in runs.curves]
    if "mtbi" not in tags:
        raise MtbiError("claim c needs the checkpoint answers of mtbi (<run>/bench_<set>/checkpoints/); run the "
                        "study's stage 3")
    steps = sorted(set.intersection(*(set(runs.curves[t]) for t in tags)))
    curves: dict[str, dict[int, dict[str, SplitFidelity]]] = {t: {} for t in tags}
    table = ["### c. Interleaving makes alignment more efficient", "",
             f"Fidelity ({METRICS[metric]}, mean ± std over seeds) at each checkpoint, and "
             "MTBI minus each system at the same step (negative: the system is ahead).", "",
             "| system | step | " + " | ".join(CLAIM_SPLITS.values()) + " | " +
             " | ".join(f"mtbi - system, {t}" for t in CLAIM_SPLITS.values()) + " |", "|---|---|---|---|---|---|"]
    verdicts = []
    for step in steps:
        fidelity = compare_at(teacher, {t: runs.curves[t][step] for t in tags}, "mtbi", metric, num)
        for tag in tags:
            curves[tag][step] = fidelity[tag]
            diffs = []
            for split in CLAIM_SPLITS:
                f = fidelity[tag].get(split)
                diffs.append("-" if f is None or f.vs_reference is None
                             else difference_cell(f.vs_reference, num, *metric_format(metric)))
            table.append(f"| {tag} | {step} | " + " | ".join(_cell(metric, fidelity[tag].get(s)) for s in CLAIM_SPLITS)
                         + " | " + " | ".join(diffs) + " |")
        verdicts += [(step, r) for r in claim_rows(fidelity, [t for t in tags if t != "mtbi"], claimed_positive=False)]
    final = steps[-1]
    lines = table + ["", f"Steps to reach {reach:.0%} of MTBI's score at step {final} (the first checkpoint whose mean "
                         "reaches it; - : none):", "", "| system | " + " | ".join(CLAIM_SPLITS.values()) + " |",
                     "|---|---|---|"]
    reached = {}
    for tag in tags:
        cells = []
        for split in CLAIM_SPLITS:
            target = curves["mtbi"][final][split].items.mean * reach
            step = steps_to_reach({s: curves[tag][s][split] for s in steps if split in curves[tag][s]}, target)
            reached.setdefault(tag, {})[split] = step
            cells.append("-" if step is None else str(step))
        lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    lines += ["", "Verdicts of each system against MTBI at equal steps (the claim: interleaving is ahead):", "",
              "| system | step | " + " | ".join(CLAIM_SPLITS.values()) + " |", "|---|---|---|---|"]
    by_row = {(s, r.system, r.split): r.verdict for s, r in verdicts}
    lines += [f"| {tag} | {step} | " + " | ".join(by_row.get((step, tag, split), "-") for split in CLAIM_SPLITS) + " |"
              for tag in tags if tag != "mtbi" for step in steps]
    series = {t: {str(s): {k: f.to_json() for k, f in by_split.items()} for s, by_split in c.items()}
              for t, c in curves.items()}
    return "\n".join(lines) + "\n", {"steps_to_reach": reached, "points": series, "_curves": curves,
                                     "rows": [{"step": s, **_row_json(r)} for s, r in verdicts]}


def plot_study(data_points: dict, curves: dict, metric: str, out: Path) -> None:
    """``<out>_data.png``: fidelity by training share; ``<out>_curves.png``: by checkpoint step;
    one panel per claim split, error bars: the standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, _ = metric_format(metric)
    for suffix, series, xlabel in (("_data", data_points, "share of the training utterances"),
                                   ("_curves", curves, "training step")):
        fig, axes = plt.subplots(1, len(CLAIM_SPLITS), figsize=(10, 3.5), squeeze=False)
        for ax, (split, title) in zip(axes[0], CLAIM_SPLITS.items()):
            for tag, by_x in series.items():
                xs = [x for x in sorted(by_x) if by_x[x].get(split) is not None]
                means = [by_x[x][split].items.mean * scale for x in xs]
                stds = [(by_x[x][split].std or 0.0) * scale for x in xs]
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=2, label=tag)
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"fidelity, {METRICS[metric]}")
        axes[0][-1].legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out.parent / f"{out.name}{suffix}.png", dpi=100)
        plt.close(fig)


def main(args: argparse.Namespace) -> None:
    runs = collect_runs(args.exp_dir, args.test_set)
    teacher = read_hyps(args.teacher_hyp)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sections, data = [], {"metric": args.metric, "alpha": 0.05}
    text, data["generalization"] = generalization_section(runs, teacher, args.metric, args.resamples)
    sections.append(text)
    text, data["data"] = data_section(runs, teacher, args.metric, args.resamples)
    sections.append(text)
    points = data["data"].pop("_points")
    curves = {}
    if runs.curves:
        text, data["curves"] = curve_section(runs, teacher, args.curve_systems, args.metric, args.reach, args.resamples)
        sections.append(text)
        curves = data["curves"].pop("_curves")
    markdown = "\n".join(sections)
    with atomic_write(out.with_suffix(".md")) as f:
        f.write(markdown)
    with atomic_write(out.with_suffix(".json")) as f:
        json.dump(data, f, indent=1)
    plot_study(points, curves, args.metric, out)
    if args.readme:
        replace_marked_section(Path(args.readme), args.readme_key or f"study:{args.test_set}", markdown)
    sys.stdout.write(markdown)
    logger.info("study report %s", out.with_suffix(".md"))


if __name__ == "__main__":
    run_main(build_parser, main)
