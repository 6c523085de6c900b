"""Stage 4 (encoder): CTC-pretrain the tiny Conformer, or check a local HF Whisper dir.

Reads --encoder_conf (conf/encoder_*.yaml) and, for kind conformer, the stage-2 feature dirs
(feats.scp, utt2num_frames, text) of --train_dir (training) and --valid_dir / --test_dir
(greedy-CTC WER); writes --out_dir as an encoder dir: encoder.yaml, and for kind conformer
model.safetensors, ctc_vocabulary.txt and encoder_report.md.
"""

from __future__ import annotations

import argparse

from mtbi.cli import ConfigOption, run_main
from mtbi.prepare.encoder import EncoderPrepConfig, encoder_step, prepare_encoder

CONFIG = ConfigOption("--encoder_conf", EncoderPrepConfig)  # --set and --print_config act on it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder_conf", required=True, help="conf/encoder_*.yaml")
    parser.add_argument("--train_dir", required=True, help="feature dir that trains the CTC encoder")
    parser.add_argument("--valid_dir", required=True, help="feature dir scored by greedy-CTC WER")
    parser.add_argument("--test_dir", action="append", default=[],
                        help="feature dir scored by greedy-CTC WER (repeat for several)")
    parser.add_argument("--out_dir", required=True, help="encoder dir to write (exp/encoder)")
    return parser


def main(args: argparse.Namespace) -> None:
    config = CONFIG.load(args)
    step = encoder_step(config, args.out_dir, [args.train_dir, args.valid_dir, *args.test_dir])
    if step.skip(f"encoder already prepared in {args.out_dir}"):
        return
    step.forget()
    prepare_encoder(config, args.out_dir, args.train_dir, [args.valid_dir, *args.test_dir])
    step.mark_done()


if __name__ == "__main__":
    run_main(build_parser, main, config=CONFIG)
