"""Stage 4 (encoder): CTC-pretrain the tiny Conformer, or check a local HF Whisper dir.

Reads --encoder_conf (conf/encoder_*.yaml) and, for kind conformer, the stage-2 feature dirs
(feats.scp, utt2num_frames, text) of --train_dir (training) and --valid_dir / --test_dir
(greedy-CTC WER); writes --out_dir as an encoder dir: encoder.yaml, and for kind conformer
model.safetensors, ctc_vocabulary.txt and encoder_report.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from mtbi.cli import run_main
from mtbi.config import load_config
from mtbi.io import is_done_with, is_up_to_date, touch_done
from mtbi.packaged import packaged_files
from mtbi.train.ctc_pretrain import EncoderPrepConfig, prepare_encoder

logger = logging.getLogger(__name__)


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
    config = load_config(args.encoder_conf, EncoderPrepConfig)
    out_dir = Path(args.out_dir)
    if config.kind == "whisper":
        feature_dirs: list[str] = []
        inputs = [Path(config.model_dir) / "config.json"] if config.model_dir else \
            [path for name in config.ct2_packages for path in packaged_files(name)]
    else:
        feature_dirs = [args.train_dir, args.valid_dir, *args.test_dir]
        inputs = [Path(d) / name for d in feature_dirs for name in ("feats.scp", "text")]
    stamp = {"config": dataclasses.asdict(config), "feature_dirs": [str(Path(d).resolve()) for d in feature_dirs]}
    if is_done_with(out_dir / ".done", stamp) and is_up_to_date(out_dir / ".done", inputs):
        logger.info("encoder already prepared in %s", out_dir)
        return
    (out_dir / ".done").unlink(missing_ok=True)
    prepare_encoder(config, out_dir, args.train_dir, [args.valid_dir, *args.test_dir])
    touch_done(out_dir / ".done", stamp)


if __name__ == "__main__":
    run_main(build_parser, main)
