"""Stage 7, first step: the benchmark's questions about a test set (no model involved).

Reads <data_dir>/text and the task bank (--task_conf); writes <out_dir>/bench.jsonl: per
utterance, every train task with a seen and an unseen prompt and every held-out task once.

With --from_jsonl, the questions of an external test set instead: items {"id", "audio",
"question", "answer"} (+ "choices" for multiple choice; see mtbi/bench/external.py):
  python -m mtbi.bin.build_bench --from_jsonl my_set.jsonl --out_dir exp/bench/my_set
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from mtbi.bench.build import build_bench, write_bench
from mtbi.bench.external import read_external
from mtbi.cli import ConfigOption, run_main
from mtbi.data.datadir import draw_utts, read_table
from mtbi.tasks.bank import TaskConfig, load_task_bank

logger = logging.getLogger(__name__)


CONFIG = ConfigOption("--task_conf", TaskConfig)  # --set and --print_config act on it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data_dir", help="data/<test set>")
    source.add_argument("--from_jsonl", help="an external test set: one {id, audio, question, answer} item a line")
    parser.add_argument("--out_dir", required=True, help="e.g. exp/bench/<test set>")
    parser.add_argument("--task_conf", default=None)
    parser.add_argument("--max_utts", type=int, default=0, help="utterances drawn from the set (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(args: argparse.Namespace) -> None:
    if args.from_jsonl:
        items = read_external(args.from_jsonl)
        if args.max_utts:
            kept = set(draw_utts(sorted({i.utt for i in items}), args.max_utts, args.seed))
            items = [i for i in items if i.utt in kept]
    else:
        bank = load_task_bank(args.task_conf, args.set)
        texts = read_table(Path(args.data_dir) / "text", allow_empty_value=True)
        items = build_bench(texts, bank, args.max_utts, args.seed)
    write_bench(items, Path(args.out_dir) / "bench.jsonl")
    splits = Counter(item.split for item in items)
    logger.info("%s: %d items about %d utterances (%s)", Path(args.out_dir) / "bench.jsonl", len(items),
                len({item.utt for item in items}), ", ".join(f"{n} {s}" for s, n in sorted(splits.items())))


if __name__ == "__main__":
    run_main(build_parser, main, config=CONFIG)
