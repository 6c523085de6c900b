"""Stage 2, after all shards: merge them into <out_dir>/{feats.scp (logmel) or utt2num_samples
(raw), utt2num_frames, skipped.txt, feats.yaml} and copy the data dir (less skipped utterances,
with its segments) beside them."""

from __future__ import annotations

import argparse

from mtbi.cli import run_main
from mtbi.data.feature_dump import merge_shards


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--num_shards", type=int, default=1)
    return parser


def main(args: argparse.Namespace) -> None:
    merge_shards(args.data_dir, args.out_dir, args.num_shards)


if __name__ == "__main__":
    run_main(build_parser, main)
