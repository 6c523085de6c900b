"""Stage 2, one shard: Whisper log-mel features of every --num_shards-th utterance.

Reads <data_dir>/wav.scp; writes <out_dir>/shards/feats.<shard>.{ark,scp},
utt2num_frames.<shard>, skipped.<shard> and .<shard>.done. Run mtbi.bin.merge_feats after
all shards.
"""

from __future__ import annotations

import argparse

from mtbi.cli import run_main, str2bool
from mtbi.data.feature_dump import extract_shard


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--shard", type=int, default=1, help="1-based shard index (JOB)")
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--n_mels", type=int, choices=(80, 128), default=80,
                        help="80 (Whisper up to large-v2) or 128 (large-v3) mel bins")
    parser.add_argument("--allow_upsample", type=str2bool, default=False)
    return parser


def main(args: argparse.Namespace) -> None:
    extract_shard(args.data_dir, args.out_dir, args.shard, args.num_shards, args.n_mels,
                  args.allow_upsample)


if __name__ == "__main__":
    run_main(build_parser, main)
