"""Stage 8, last step: the comparison table of systems on one test set.

A system is one or more runs: ``exp/sllm_mtbi`` and ``exp/sllm_mtbi_seed<k>`` (mtbi.sh --seeds)
are seeds of the system ``mtbi``. Reads each run's bench_<set>/scores.json and hyp.jsonl (and,
for SLLMs, the training steps and time of its last checkpoint). Reports per system and split the
fidelity to the teacher (--metric as the headline, and exact match, ROUGE-L and chrF in tables)
as mean ± std over seeds with a 95% bootstrap interval over test items (seeds pooled), and
--reference minus each system on the same items by a paired bootstrap test; held-out accuracy,
task following and WER as mean ± std over seeds; --samples answers per split below the tables.
Writes <out>.md, <out>.json and <out>.png (error bars: the intervals), prints the table, and
with --markdown puts it into that file (the recipe's RESULTS.md) between
``<!-- results:<key>:begin -->`` and ``<!-- results:<key>:end -->`` (key: --markdown_key, by
default the test set). The table starts with its stamp: the date, --made_by, and the commit,
machine and torch the runs were trained with (their env.txt).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mtbi.bench.intervals import METRICS, compare_fidelity
from mtbi.bench.report import (
    SystemRuns,
    comparison_json,
    comparison_markdown,
    fidelity_markdown,
    plot_comparison,
    read_scores,
    replace_marked_section,
    samples_markdown,
)
from mtbi.bench.scoring import read_hyps
from mtbi.bench.stamp import run_environments, table_stamp
from mtbi.cli import run_main
from mtbi.errors import MtbiError
from mtbi.run_names import REFERENCE, TEACHER_TEXT, system_of
from mtbi.stage import atomic_write
from mtbi.train.sllm_dir import training_summary

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test_set", required=True)
    parser.add_argument("--systems", nargs="+", required=True,
                        help=f"run dirs, e.g. exp/{TEACHER_TEXT} exp/sllm_mtbi exp/sllm_mtbi_seed1 (scores in "
                             "<dir>/bench_<set>; <dir>_seed<k>: another seed of the same system)")
    parser.add_argument("--out", required=True, help="output path without extension, e.g. exp/results_<set>")
    parser.add_argument("--samples", type=int, default=2,
                        help="questions per split whose answers go below the table (0: none)")
    parser.add_argument("--reference", default=REFERENCE,
                        help="the system the others are compared with item by item (paired bootstrap)")
    parser.add_argument("--metric", choices=list(METRICS), default="rouge_l",
                        help="the headline fidelity metric of the table and chart: exact_match for teachers of "
                             "short exact answers (the tiny set), rouge_l or chrf for real LLMs' free-form answers")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the intervals and tests")
    parser.add_argument("--markdown", default=None, help="a markdown file (the recipe's RESULTS.md) to put the table into")
    parser.add_argument("--markdown_key", default=None,
                        help="the file's results markers to replace (default: the test set), e.g. smol:test_clean")
    parser.add_argument("--made_by", default=None,
                        help="the command that made the runs, for the table's stamp (mtbi.sh passes the recipe "
                             "command the user ran; default: this command)")
    return parser


def main(args: argparse.Namespace) -> None:
    run_dirs: dict[str, list[Path]] = {}
    for run in args.systems:
        run_dirs.setdefault(system_of(run), []).append(Path(run))
    systems, hyps = [], {}
    for name, dirs in run_dirs.items():
        summaries = [training_summary(d) for d in dirs]
        seconds = [sec for _, sec in summaries if sec is not None]
        systems.append(SystemRuns(name, [read_scores(d / f"bench_{args.test_set}" / "scores.json") for d in dirs],
                                  summaries[0][0], sum(seconds) / len(seconds) if seconds else None))
        hyps[name] = [read_hyps(d / f"bench_{args.test_set}" / "hyp.jsonl") for d in dirs]
    text_input = [name for name, runs in hyps.items() if runs[0][0]["input"] == "text"]
    if len(text_input) != 1:
        raise MtbiError("--systems needs the teacher's answers to the transcripts (one text-input system, e.g. "
                        f"exp/teacher_text) to measure fidelity; got {len(text_input)}")
    fidelity = {metric: compare_fidelity(hyps, args.reference, metric, args.resamples)
                for metric in [args.metric] + [m for m in METRICS if m != args.metric]}
    speech = [name for name in hyps if name not in text_input]
    made_by = args.made_by or " ".join(["python -m mtbi.bin.compare", *sys.argv[1:]])
    table = table_stamp(made_by, run_environments(args.systems)) + "\n\n"
    table += comparison_markdown(systems, fidelity[args.metric], args.metric, args.test_set)
    for metric, by_system in fidelity.items():
        table += "\n" + fidelity_markdown({name: by_system[name] for name in speech}, metric, args.reference,
                                           args.resamples)
    if args.samples:
        table += "\nSample answers (the prompt, with the transcript in brackets; SLLMs hear it; the first seed):\n\n"
        table += samples_markdown({name: runs[0] for name, runs in hyps.items()}, args.samples)
    out = Path(args.out)
    with atomic_write(out.with_suffix(".md")) as f:
        f.write(table)
    with atomic_write(out.with_suffix(".json")) as f:
        json.dump(comparison_json(systems, fidelity, args.metric, args.reference, args.test_set, args.resamples),
                  f, indent=1)
    plot_comparison(fidelity[args.metric], args.metric, out.with_suffix(".png"))
    if args.markdown:
        replace_marked_section(Path(args.markdown), f"results:{args.markdown_key or args.test_set}", table)
        logger.info("results table of %s written into %s", args.test_set, args.markdown)
    sys.stdout.write(table)
    logger.info("table %s, data %s, chart %s", out.with_suffix(".md"), out.with_suffix(".json"), out.with_suffix(".png"))


if __name__ == "__main__":
    run_main(build_parser, main)
