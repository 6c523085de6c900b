"""Stage 8: score one system's benchmark answers.

Reads --hyp (<system dir>/bench_<set>/hyp.jsonl) and the teacher's text-input answers
--teacher_hyp (exp/teacher_text/bench_<set>/hyp.jsonl, the imitation reference); writes
scores.json, RESULTS.md and scores.png beside --hyp. Answers to an external test set
(mtbi.bin.build_bench --from_jsonl) are scored against the set's answers instead: accuracy of
multiple-choice items, exact match, chrF, ROUGE-L and BLEU of free-form ones (no teacher, no plot).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mtbi.bench import external
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
    if all(r["split"] == external.SPLIT for r in records):
        score_external_set(name, records, hyp)
        return
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


def score_external_set(name: str, records: list[dict], hyp: Path) -> None:
    """scores.json and RESULTS.md of the answers to an external test set."""
    scores = external.score_external(records)
    with atomic_write(hyp.with_name("scores.json")) as f:
        json.dump(scores, f, indent=1)
    with atomic_write(hyp.with_name("RESULTS.md")) as f:
        f.write(external.external_markdown(name, scores))
    summary = [f"{task} {100 * (g.get('accuracy') or g['chrf'])['mean']:.1f}% "
               f"{'accuracy' if 'accuracy' in g else 'chrF'}" for task, g in scores["external"].items()]
    logger.info("%s: %s; %s", name, ", ".join(summary), hyp.with_name("RESULTS.md"))


if __name__ == "__main__":
    run_main(build_parser, main, config=CONFIG)
