"""Stage 2, one shard: every --num_shards-th utterance's audio checked and measured (--feats_type
raw) or its Whisper log-mel features dumped (logmel).

Reads <data_dir>/wav.scp (paths, "cmd |" pipes, ark offsets) and segments; writes under
<out_dir>/shards/ utt2num_frames.<shard>, skipped.<shard>, .<shard>.done and
utt2num_samples.<shard> (raw) or feats.<shard>.{ark,scp} (logmel). Run mtbi.bin.merge_feats
after all shards.
"""

from __future__ import annotations

import argparse

import torch

from mtbi.cli import run_main, str2bool
from mtbi.data.feature_dump import FEATS_TYPES, extract_shard


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--shard", type=int, default=1, help="1-based shard index (JOB)")
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--n_mels", type=int, choices=(80, 128), default=80,
                        help="80 (Whisper up to large-v2) or 128 (large-v3) mel bins")
    parser.add_argument("--allow_upsample", type=str2bool, default=False)
    parser.add_argument("--feats_type", choices=FEATS_TYPES, default="logmel",
                        help="raw: keep the audio, features computed when read; logmel: dump them")
    return parser


def main(args: argparse.Namespace) -> None:
    # One thread a job: stage 2's parallelism is its --nj jobs, and more threads than cores in
    # all of them together slow every job many times over.
    torch.set_num_threads(1)
    extract_shard(args.data_dir, args.out_dir, args.shard, args.num_shards, args.n_mels,
                  args.allow_upsample, args.feats_type)


if __name__ == "__main__":
    run_main(build_parser, main)
