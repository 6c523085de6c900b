"""Check a Kaldi data dir: files present, sorted, unique ids, every utterance in every file.

Prints one ``file:line: problem`` line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import sys

from mtbi.cli import run_main
from mtbi.data.datadir import validate_data_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir")
    return parser


def main(args: argparse.Namespace) -> None:
    problems = validate_data_dir(args.data_dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.data_dir}: {len(problems)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print(f"{args.data_dir}: OK")


if __name__ == "__main__":
    run_main(build_parser, main)
