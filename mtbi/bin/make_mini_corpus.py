"""Synthesize the mini corpus with espeak-ng in a real corpus layout (stage 1, no corpus set).

Writes the corpus under --out_dir and prints the corpus root (the value for db.sh) on stdout.
"""

from __future__ import annotations

import argparse

from mtbi.cli import run_main
from mtbi.mini.corpus import make_mini_corpus


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", required=True, help="directory to create the corpus in")
    parser.add_argument("--layout", choices=("librispeech", "commonvoice"), default="librispeech")
    parser.add_argument("--num_train", type=int, default=2000, help="train utterances")
    parser.add_argument("--num_dev", type=int, default=200, help="dev utterances")
    parser.add_argument("--num_test", type=int, default=200, help="test utterances")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nj", type=int, default=1, help="parallel synthesis processes")
    return parser


def main(args: argparse.Namespace) -> None:
    sizes = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test}
    root = make_mini_corpus(args.out_dir, args.layout, sizes, seed=args.seed, nj=args.nj)
    print(root.resolve())


if __name__ == "__main__":
    run_main(build_parser, main)
