"""Stage 6, first step: cache the frozen encoder's outputs of a set (used by training when
``model.train_encoder`` is false, so that a step costs only the connector and the LLM).

Reads --feats_dir (stage 2) and --encoder_dir (stage 4); writes --out_dir/{feats.scp,feats.ark,
utt2num_frames} in --dtype, for the utterances of --targets (stage 5) when given, since training
reads no others. Skipped when done with the same encoder, features, utterances and dtype. When the
cache would take more than --max_gb, nothing is written (and an outdated cache there is removed):
training then computes the encoder's outputs from the features.
"""

from __future__ import annotations

import argparse

import torch

from mtbi.cli import run_main, torch_device
from mtbi.models.encoder_cache import CACHE_DTYPES, encode_feats
from mtbi.tasks.targets import target_utts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder_dir", required=True, help="exp/encoder (stage 4)")
    parser.add_argument("--feats_dir", required=True, help="dump/raw/<set> or dump/logmel80/<set> (stage 2)")
    parser.add_argument("--out_dir", required=True, help="e.g. exp/encoder_cache/<set>")
    parser.add_argument("--targets", default=None, help="encode only the utterances of this targets.jsonl")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--dtype", choices=sorted(CACHE_DTYPES), default="float16",
                        help="how the outputs are stored (float16: half of float32's disk)")
    parser.add_argument("--max_gb", type=float, default=0.0,
                        help="disk budget of the cache in GB; over it, no cache (0: no limit)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: default)")
    return parser


def main(args: argparse.Namespace) -> None:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    utts = target_utts(args.targets) if args.targets else None
    encode_feats(args.encoder_dir, args.feats_dir, args.out_dir, args.batch_size, torch_device(args.device), utts,
                 args.dtype, args.max_gb)


if __name__ == "__main__":
    run_main(build_parser, main)
