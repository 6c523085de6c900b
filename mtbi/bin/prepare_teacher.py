"""Stage 4 (teacher): train the tiny teacher, convert a packaged GGUF teacher, or check an HF dir.

Reads --teacher_conf (conf/teacher_*.yaml), --task_conf and the transcripts of --train_dir
(and --eval_dir for the tiny teacher's per-task accuracy); writes --out_dir as an HF model dir
with mtbi_teacher.json (and teacher_report.md for the tiny teacher).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mtbi.cli import ConfigOption, run_main
from mtbi.data.datadir import read_table
from mtbi.prepare.teacher import TeacherConfig, prepare_teacher, teacher_report_markdown, teacher_step
from mtbi.stage import atomic_write
from mtbi.tasks.bank import load_task_bank

logger = logging.getLogger(__name__)


CONFIG = ConfigOption("--teacher_conf", TeacherConfig)  # --set and --print_config act on it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher_conf", required=True, help="conf/teacher_*.yaml")
    parser.add_argument("--task_conf", default=None, help="conf/tasks.yaml (default: mtbi's bank)")
    parser.add_argument("--train_dir", required=True, help="data dir whose text trains the tiny teacher")
    parser.add_argument("--eval_dir", required=True, help="data dir whose text scores the tiny teacher")
    parser.add_argument("--out_dir", required=True, help="teacher model dir to write (exp/teacher)")
    return parser


def main(args: argparse.Namespace) -> None:
    config = CONFIG.load(args)
    bank = load_task_bank(args.task_conf)
    train_text = read_table(Path(args.train_dir) / "text", allow_empty_value=True)
    eval_text = read_table(Path(args.eval_dir) / "text", allow_empty_value=True)
    out_dir = Path(args.out_dir)
    step = teacher_step(config, out_dir, bank, list(train_text.values()))
    if step.skip(f"teacher already prepared in {out_dir}"):
        return
    info = prepare_teacher(config, out_dir, bank, list(train_text.values()), list(eval_text.values()))
    if config.kind == "tiny":
        table = teacher_report_markdown(info, bank)
        with atomic_write(out_dir / "teacher_report.md") as f:
            f.write(table)
        logger.info("tiny teacher accuracy on %s:\n%s", args.eval_dir, table)
    step.mark_done()


if __name__ == "__main__":
    run_main(build_parser, main, config=CONFIG)
