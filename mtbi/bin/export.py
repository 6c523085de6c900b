"""Export a trained SLLM as a self-contained dir to share, with a model card (README.md).

  python -m mtbi.bin.export --model_dir exp/sllm_mtbi --out_dir my_sllm
  python -m mtbi.bin.export --model_dir exp/sllm_mtbi --out_dir my_sllm --push_to_hub me/my_sllm

The dir holds the trainable weights, the resolved config, the encoder, the chat template and the
card; the encoder's Whisper and the LLM are referenced by hub id + commit when they came from the
hub (--copy_models true copies them too) and copied when they are local (a recipe-trained
teacher). Load it anywhere with SpeechLLM.from_pretrained("my_sllm"). --push_to_hub needs a
network and a hub login (hf auth login, or HF_TOKEN).
"""

from __future__ import annotations

import argparse
import logging

from mtbi.cli import run_main, str2bool
from mtbi.export import export_sllm, push_to_hub

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="the trained dir of stage 6 (exp/sllm_<tag>)")
    parser.add_argument("--out_dir", required=True, help="the dir to write (an earlier export there is replaced)")
    parser.add_argument("--checkpoint", default=None, help="checkpoints/<name> instead of the final weights")
    parser.add_argument("--copy_models", type=str2bool, default=False,
                        help="true: copy hub models (Whisper, the LLM) into the dir too, for machines without the hub")
    parser.add_argument("--name", default=None,
                        help="the model's name in the card (default: the --push_to_hub repo, else the out dir's name)")
    parser.add_argument("--push_to_hub", default=None, metavar="REPO", help="upload the dir to this hub repo")
    parser.add_argument("--private", type=str2bool, default=False, help="with --push_to_hub: a private repo")
    return parser


def main(args: argparse.Namespace) -> None:
    out_dir = export_sllm(args.model_dir, args.out_dir, args.checkpoint, args.copy_models,
                          args.name or args.push_to_hub)
    logger.info("exported %s to %s (model card: %s)", args.model_dir, out_dir, out_dir / "README.md")
    if args.push_to_hub:
        logger.info("pushed to %s", push_to_hub(out_dir, args.push_to_hub, args.private))


if __name__ == "__main__":
    run_main(build_parser, main)
