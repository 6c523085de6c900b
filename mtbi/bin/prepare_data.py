"""Write a Kaldi data dir (wav.scp, text, utt2spk, spk2utt, skipped.txt) from a corpus.

Each audio header is checked; unusable utterances are skipped, listed in
<out_dir>/skipped.txt with the reason, and counted in the summary. Word timings the corpus
provides (<root>/alignments/<part or split>.ctm) go to <out_dir>/ctm for stage 3.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mtbi.cli import run_main, str2bool
from mtbi.data.commonvoice import read_commonvoice
from mtbi.data.corpus import CorpusListing, check_audio_headers, write_listing
from mtbi.data.librispeech import read_librispeech
from mtbi.errors import MtbiError
from mtbi.stage import Step, marker

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=("librispeech", "commonvoice"), required=True)
    parser.add_argument("--root", required=True,
                        help="LibriSpeech dir holding the parts, or the Common Voice language dir")
    parser.add_argument("--parts", required=True,
                        help="comma-separated LibriSpeech parts (train-clean-100,...) or one Common "
                             "Voice split (train = validated minus dev and test, dev, test, ...)")
    parser.add_argument("--out_dir", required=True, help="data dir to write, e.g. data/train_clean_100")
    parser.add_argument("--allow_upsample", type=str2bool, default=False,
                        help="true: accept audio below 16 kHz and upsample it")
    return parser


def main(args: argparse.Namespace) -> None:
    parts = [p for p in args.parts.split(",") if p]
    params = {"corpus": args.corpus, "root": str(Path(args.root).resolve()), "parts": parts,
              "allow_upsample": args.allow_upsample, "layout": 2}  # layout 2: with the corpus's ctm
    alignments = Path(args.root) / "alignments"
    step = Step(marker(args.out_dir), params, inputs=[args.root, alignments, *alignments.glob("*.ctm")])
    if step.skip(f"{args.out_dir} already prepared from {args.root} {args.parts}"):
        return
    if args.corpus == "librispeech":
        listing: CorpusListing = read_librispeech(args.root, parts)
    else:
        if len(parts) != 1:
            raise MtbiError(f"--parts '{args.parts}': give one Common Voice split")
        listing = read_commonvoice(args.root, parts[0])
    listing = check_audio_headers(listing, allow_upsample=args.allow_upsample)
    write_listing(listing, args.out_dir)
    if not listing.utterances:
        raise MtbiError(f"{args.root}: no usable utterance in {args.parts}; "
                        f"see the reasons in {args.out_dir}/skipped.txt")
    step.mark_done()


if __name__ == "__main__":
    run_main(build_parser, main)
