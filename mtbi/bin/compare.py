"""Stage 8, last step: the comparison table of systems on one test set.

Reads each system's bench_<set>/scores.json (and, for SLLMs, the training steps and time of
its last checkpoint) and hyp.jsonl (per-item fidelity to the teacher with bootstrap intervals,
and --reference against each system by a paired bootstrap test, in ROUGE-L and chrF; --samples
answers per split below the tables); writes
<out>.md and <out>.png, prints the table, and with --readme puts
it into that README between ``<!-- results:<key>:begin -->`` and ``<!-- results:<key>:end -->``
(key: --readme_key, by default the test set).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mtbi.bench.intervals import METRICS, fidelity_table
from mtbi.bench.report import SystemResult, comparison_markdown, plot_comparison, read_scores, replace_marked_section, samples_markdown
from mtbi.bench.scoring import read_hyps
from mtbi.cli import run_main
from mtbi.stage import atomic_write
from mtbi.train.sllm_dir import training_summary

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test_set", required=True)
    parser.add_argument("--systems", nargs="+", required=True,
                        help="system dirs, e.g. exp/teacher_text exp/sllm_mtbi (scores in <dir>/bench_<set>)")
    parser.add_argument("--out", required=True, help="output path without extension, e.g. exp/results_<set>")
    parser.add_argument("--samples", type=int, default=2,
                        help="questions per split whose answers go below the table (0: none)")
    parser.add_argument("--reference", default="mtbi",
                        help="the system the others are compared with item by item (paired bootstrap)")
    parser.add_argument("--readme", default=None, help="a README.md to put the table into")
    parser.add_argument("--readme_key", default=None,
                        help="the README's results markers to replace (default: the test set), e.g. smol:test_clean")
    return parser


def main(args: argparse.Namespace) -> None:
    results = []
    for system in args.systems:
        system_dir = Path(system)
        name = system_dir.name.removeprefix("sllm_")
        steps, seconds = training_summary(system_dir)
        results.append(SystemResult(name, read_scores(system_dir / f"bench_{args.test_set}" / "scores.json"),
                                    steps, seconds))
    table = comparison_markdown(results, args.test_set)
    hyps = {result.name: read_hyps(Path(system) / f"bench_{args.test_set}" / "hyp.jsonl")
            for result, system in zip(results, args.systems)}
    if any(records[0]["input"] == "text" for records in hyps.values()):
        for metric in METRICS:
            table += "\n" + fidelity_table(hyps, args.reference, metric)
    if args.samples:
        table += "\nSample answers (the prompt, with the transcript in brackets; SLLMs hear it):\n\n"
        table += samples_markdown(hyps, args.samples)
    out = Path(args.out)
    with atomic_write(out.with_suffix(".md")) as f:
        f.write(table)
    plot_comparison(results, out.with_suffix(".png"))
    if args.readme:
        replace_marked_section(Path(args.readme), f"results:{args.readme_key or args.test_set}", table)
        logger.info("results table of %s written into %s", args.test_set, args.readme)
    sys.stdout.write(table)
    logger.info("table %s, chart %s", out.with_suffix(".md"), out.with_suffix(".png"))


if __name__ == "__main__":
    run_main(build_parser, main)
