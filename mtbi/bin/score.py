"""Stage 8: score one system's benchmark answers.

Reads --hyp (<system dir>/bench_<set>/hyp.jsonl) and the teacher's text-input answers
--teacher_hyp (exp/teacher_text/bench_<set>/hyp.jsonl, the imitation reference); writes
scores.json, RESULTS.md and scores.png beside --hyp.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mtbi.bench.report import plot_system, system_markdown
from mtbi.bench.scoring import read_hyps, score_system
from mtbi.cli import ConfigOption, run_main
from mtbi.stage import atomic_write
from mtbi.tasks.bank import TaskConfig, load_task_bank

logger = logging.getLogger(__name__)


CONFIG = ConfigOption("--task_conf", TaskConfig)  # --set and --print_config act on it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hyp", required=True, help="<system dir>/bench_<set>/hyp.jsonl")
    parser.add_argument("--teacher_hyp", default=None, help="the teacher's text-input hyp.jsonl (for fidelity)")
    parser.add_argument("--task_conf", default=None)
    parser.add_argument("--name", default=None, help="the system's name in the report (default: its dir)")
    return parser


def main(args: argparse.Namespace) -> None:
    hyp = Path(args.hyp)
    name = args.name or hyp.parent.parent.name
    records = read_hyps(hyp)
    teacher = read_hyps(args.teacher_hyp) if args.teacher_hyp else None
    scores = score_system(records, teacher, load_task_bank(args.task_conf, args.set))
    with atomic_write(hyp.with_name("scores.json")) as f:
        json.dump(scores, f, indent=1)
    with atomic_write(hyp.with_name("RESULTS.md")) as f:
        f.write(system_markdown(name, scores))
    plot_system(name, scores, hyp.with_name("scores.png"))
    summary = []
    for group in (*scores["prompt_generalization"].items(), *scores["task_generalization"].items()):
        split, g = group
        if "fidelity" in g:
            summary.append(f"{split} EM {100 * g['fidelity']['exact_match']:.1f}%")
    logger.info("%s: %s%s; %s", name, ", ".join(summary),
                "" if scores["wer"] is None else f", WER {100 * scores['wer']:.1f}%", hyp.with_name("RESULTS.md"))


if __name__ == "__main__":
    run_main(build_parser, main, config=CONFIG)
