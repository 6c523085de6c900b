"""The study's report (local/run_study.sh, last stage): the paper's three claims with verdicts.

Reads the runs of --exp_dir (mtbi.bench.study: the baselines, the training-share runs
``sllm_<tag>_frac<percent>[_seed<k>]`` and the checkpoint answers
``<run>/bench_<set>/checkpoints/``) and the teacher's text-input answers, and writes <out>.md,
<out>.json, <out>_data.png and <out>_curves.png; with --markdown the report, stamped like the
comparison table, goes into that file (the recipe's RESULTS.md) between
``<!-- <key>:begin -->`` and ``<!-- <key>:end -->``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mtbi.bench.intervals import METRICS
from mtbi.bench.report import replace_marked_section
from mtbi.bench.scoring import read_hyps
from mtbi.bench.stamp import run_environments, table_stamp
from mtbi.bench.study import ALPHA, by_share, by_step, collect_runs, generalization
from mtbi.bench.study_report import curve_section, generalization_section, plot_study, share_section
from mtbi.cli import run_main
from mtbi.run_names import REFERENCE, RUN_PREFIX
from mtbi.stage import atomic_write

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", required=True, help="the recipe's experiment dir, e.g. exp")
    parser.add_argument("--test_set", required=True)
    parser.add_argument("--teacher_hyp", required=True, help="the teacher's answers to the test set (text input)")
    parser.add_argument("--metric", choices=list(METRICS), default="rouge_l", help="the fidelity metric")
    parser.add_argument("--curve_systems", nargs="+", default=[REFERENCE, "mtbi_interleave"],
                        help="system tags of the learning curves (the ablations after these two)")
    parser.add_argument("--reach", type=float, default=0.9,
                        help="steps to reach this share of MTBI's final curve score")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", required=True, help="output path without extension, e.g. exp/study/study")
    parser.add_argument("--markdown", default=None, help="a markdown file (the recipe's RESULTS.md) to put the report into")
    parser.add_argument("--markdown_key", default=None, help="the file's markers' key (default: study:<test set>)")
    parser.add_argument("--made_by", default=None, help="the command that made the runs, for the report's stamp")
    return parser


def main(args: argparse.Namespace) -> None:
    runs = collect_runs(args.exp_dir, args.test_set)
    teacher = read_hyps(args.teacher_hyp)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data: dict = {"metric": args.metric, "alpha": ALPHA}
    text_a, data["generalization"] = generalization_section(
        generalization(runs, teacher, args.metric, args.resamples), args.metric, args.resamples)
    shares = by_share(runs, teacher, args.metric, args.resamples)
    text_b, data["data"] = share_section(shares, args.metric, args.resamples)
    sections, curves = [text_a, text_b], {}
    if runs.curves:
        steps = by_step(runs, teacher, args.curve_systems, args.metric, args.reach, args.resamples)
        text_c, data["curves"] = curve_section(steps, args.metric, args.resamples)
        sections.append(text_c)
        curves = steps.curves
    made_by = args.made_by or " ".join(["python -m mtbi.bin.study", *sys.argv[1:]])
    stamp = table_stamp(made_by, run_environments(sorted(Path(args.exp_dir).glob(f"{RUN_PREFIX}*"))))
    markdown = stamp + "\n\n" + "\n".join(sections)
    with atomic_write(out.with_suffix(".md")) as f:
        f.write(markdown)
    with atomic_write(out.with_suffix(".json")) as f:
        json.dump(data, f, indent=1)
    plot_study(shares.points, curves, args.metric, out)
    if args.markdown:
        replace_marked_section(Path(args.markdown), args.markdown_key or f"study:{args.test_set}", markdown)
    sys.stdout.write(markdown)
    logger.info("study report %s", out.with_suffix(".md"))


if __name__ == "__main__":
    run_main(build_parser, main)
