"""Append the environment of a stage run (mtbi commit, Python and package versions, CUDA and GPUs,
host, time) as one block to an env.txt; mtbi.sh records every stage in <expdir>/log/env.txt."""

from __future__ import annotations

import argparse

from mtbi.cli import run_main
from mtbi.env import record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="the env.txt to append to, e.g. exp/log/env.txt")
    parser.add_argument("--stage", type=int, required=True, help="the stage being run")
    parser.add_argument("--torch_threads", default=None,
                        help="the torch CPU threads of the job recorded, e.g. 1 or 'default (2 cores)'")
    return parser


def main(args: argparse.Namespace) -> None:
    record(args.out, args.stage, args.torch_threads)


if __name__ == "__main__":
    run_main(build_parser, main)
