"""Stage 6, first step: cache the frozen encoder's outputs of a set (used by training when
``model.train_encoder`` is false, so that a step costs only the connector and the LLM).

Reads --feats_dir (stage 2) and --encoder_dir (stage 4); writes --out_dir/{feats.scp,feats.ark,
utt2num_frames}, for the utterances of --targets (stage 5) when given, since training reads no
others. Skipped when done with the same encoder, features and utterances.
"""

from __future__ import annotations

import argparse

import torch

from mtbi.cli import run_main, torch_device
from mtbi.models.encoder_cache import encode_feats
from mtbi.tasks.targets import target_utts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder_dir", required=True, help="exp/encoder (stage 4)")
    parser.add_argument("--feats_dir", required=True, help="dump/logmel80/<set> (stage 2)")
    parser.add_argument("--out_dir", required=True, help="e.g. exp/encoder_cache/<set>")
    parser.add_argument("--targets", default=None, help="encode only the utterances of this targets.jsonl")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: default)")
    return parser


def main(args: argparse.Namespace) -> None:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    utts = target_utts(args.targets) if args.targets else None
    encode_feats(args.encoder_dir, args.feats_dir, args.out_dir, args.batch_size, torch_device(args.device), utts)


if __name__ == "__main__":
    run_main(build_parser, main)
