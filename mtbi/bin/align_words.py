"""Stage 3, one data dir: word alignment -> <data_dir>/word_align (``utt start end word``).

Methods: ctm (<data_dir>/ctm, which stage 1 writes when the corpus ships word timings, or the
CTM files given with --align_files), textgrid (MFA TextGrids given with --align_files), ctc
(forced alignment with a character CTC model on the features of --feats_dir), auto (ctm when
<data_dir>/ctm exists, else ctc; --print_method prints which). Words are checked against
<data_dir>/text and the audio length (<feats_dir>/utt2num_frames); unusable utterances are
listed with the reason in <data_dir>/word_align.skipped.

The ctc method may be sharded over jobs: --shard JOB --num_shards N aligns every N-th
utterance into <data_dir>/align/shards/{word_align,word_align.skipped}.JOB (a finished shard
is skipped until its inputs change), then --merge --num_shards N writes word_align and
word_align.skipped as one process (no --shard) does. ctm and textgrid run in one process.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Mapping

from mtbi.cli import run_main
from mtbi.data.datadir import read_table
from mtbi.data.word_align import (
    AlignmentError,
    WordSpan,
    align_shard,
    find_alignment_files,
    finish_alignment,
    import_alignments,
    merge_alignment_shards,
    read_durations,
)
from mtbi.errors import MtbiError
from mtbi.stage import Step, marker

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="data dir of stage 1, e.g. data/dev_clean")
    parser.add_argument("--feats_dir", help="its stage-2 dir (e.g. dump/raw/dev_clean): "
                                            "audio lengths, and the input of --method ctc")
    parser.add_argument("--method", choices=("auto", "ctm", "textgrid", "ctc"), default="auto")
    parser.add_argument("--print_method", action="store_true",
                        help="print the method that --method resolves to (auto: ctm or ctc) and exit")
    parser.add_argument("--align_files", nargs="+", default=[],
                        help="CTM files or TextGrids, or directories holding them (*.ctm, *.TextGrid)")
    parser.add_argument("--textgrid_tier", default="words", help="the TextGrid tier holding the words")
    parser.add_argument("--ctc_model", help="dir of a character CTC model (mtbi.models.ctc.CtcModel)")
    parser.add_argument("--batch_size", type=int, default=16, help="utterances per CTC model call")
    parser.add_argument("--device", default="cpu", help="torch device of the CTC model")
    parser.add_argument("--num_threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default, one per core; give cores / jobs when several "
                             "shards run at once)")
    parser.add_argument("--shard", type=int, help="ctc only: align shard JOB (1-based) of --num_shards")
    parser.add_argument("--num_shards", type=int, default=1, help="ctc only: shards of --shard and --merge")
    parser.add_argument("--merge", action="store_true", help="ctc only: merge the --num_shards shards")
    return parser


def resolve_method(method: str, data_dir: Path) -> str:
    """The method ``auto`` stands for: ctm when ``<data_dir>/ctm`` exists, else ctc."""
    if method != "auto":
        return method
    method = "ctm" if (data_dir / "ctm").is_file() else "ctc"
    logger.info("%s: --method auto uses %s", data_dir, method)
    return method


def check_options(args: argparse.Namespace, method: str) -> None:
    """One-line errors for options that do not go together."""
    if args.align_files and method not in ("ctm", "textgrid"):
        raise MtbiError(f"--align_files needs --method ctm or textgrid, not {method}")
    if method == "textgrid" and not args.align_files:
        raise MtbiError("--method textgrid needs --align_files (TextGrid files or directories)")
    if method == "ctc" and not (args.ctc_model and args.feats_dir):
        raise MtbiError(f"{args.data_dir}: --method ctc needs --ctc_model (a CTC model dir, made by stage 4) "
                        "and --feats_dir (made by stage 2)")
    if args.batch_size < 1:
        raise MtbiError(f"--batch_size must be at least 1, got {args.batch_size}")
    if (args.shard is not None or args.merge) and method != "ctc":
        raise MtbiError(f"{args.data_dir}: --shard and --merge are for --method ctc; {method} runs in one "
                        "process, without them")
    if args.num_shards < 1:
        raise MtbiError(f"--num_shards must be at least 1, got {args.num_shards}")
    if args.shard is not None and args.merge:
        raise MtbiError("give --shard JOB (align one shard) or --merge (after all shards), not both")


def main(args: argparse.Namespace) -> None:
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    data_dir = Path(args.data_dir)
    method = resolve_method(args.method, data_dir)
    if args.print_method:
        print(method)
        return
    check_options(args, method)

    suffix = ".TextGrid" if method == "textgrid" else ".ctm"
    files = find_alignment_files(args.align_files, suffix) if args.align_files else []
    if method == "ctm" and not files:
        if not (data_dir / "ctm").is_file():
            raise MtbiError(f"{data_dir / 'ctm'}: file not found; stage 1 writes it when the corpus has "
                            "alignments/<part>.ctm; give --align_files or use --method ctc")
        files = [data_dir / "ctm"]
    feats_dir = Path(args.feats_dir) if args.feats_dir else None
    model_dir = Path(args.ctc_model) if method == "ctc" else None

    params = {"method": method, "align_files": [str(Path(f).resolve()) for f in args.align_files or files],
              "tier": args.textgrid_tier, "feats_dir": str(feats_dir.resolve()) if feats_dir else None,
              "ctc_model": str(model_dir.resolve()) if model_dir else None}
    inputs = [data_dir / "text", data_dir / "wav.scp", *files]
    if feats_dir:
        inputs += [feats_dir / "utt2num_frames"]
    if model_dir:
        inputs += [model_dir, *model_dir.glob("*")]
    durations = read_durations(feats_dir) if feats_dir else None

    def align(texts: Mapping[str, str]) -> tuple[dict[str, list[WordSpan]], list[AlignmentError]]:
        return _align_with_ctc(model_dir, feats_dir, texts, durations, args.batch_size, args.device)

    if args.shard is not None:
        align_shard(data_dir, args.shard, args.num_shards, params, inputs, align)
        return
    if args.merge:
        merge_alignment_shards(data_dir, args.num_shards, params, inputs, durations)
        return
    step = Step(marker(data_dir, "word_align"), params, inputs, outputs=[data_dir / "word_align"])
    if step.skip(f"{data_dir} already aligned ({method})"):
        return
    if method == "ctc":
        spans, skipped = align(read_table(data_dir / "text", allow_empty_value=True))
    else:
        spans, skipped = import_alignments(files, data_dir, method, args.textgrid_tier), []
    finish_alignment(data_dir, spans, durations, skipped)
    step.mark_done()


def _align_with_ctc(model_dir: Path, feats_dir: Path, texts: Mapping[str, str], durations: dict[str, float],
                    batch_size: int, device: str) -> tuple[dict[str, list[WordSpan]], list[AlignmentError]]:
    # Imported here: the other methods need neither the model code nor torch.
    from mtbi.models.ctc import CtcModel
    from mtbi.models.ctc_align import align_with_ctc

    if not model_dir.is_dir():
        raise MtbiError(f"{model_dir}: CTC model dir not found; it is made by stage 4 (a conformer "
                        "encoder), or give --ctc_model")
    model = CtcModel.from_pretrained(model_dir)
    return align_with_ctc(model, feats_dir, texts, durations, batch_size=batch_size, device=device)


if __name__ == "__main__":
    run_main(build_parser, main)
