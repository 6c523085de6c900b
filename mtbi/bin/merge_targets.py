"""Stage 5, after all shards: merge them into <out_dir>/targets.jsonl and log samples."""

from __future__ import annotations

import argparse

from mtbi.cli import run_main
from mtbi.tasks.targets import merge_targets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--samples_per_task", type=int, default=1, help="samples to print per task")
    return parser


def main(args: argparse.Namespace) -> None:
    merge_targets(args.out_dir, args.num_shards, args.samples_per_task)


if __name__ == "__main__":
    run_main(build_parser, main)
