"""Import a data dir made elsewhere as data/<set>: a Kaldi or ESPnet data dir (--src), or a lhotse
manifest (--lhotse_cuts, or --lhotse_recordings with --lhotse_supervisions) through lhotse's own
Kaldi export.

Writes <out_dir>/{wav.scp,text,utt2spk,spk2utt[,segments]}, sorted (LC_ALL=C). Utterance ids not
prefixed by their speaker id are renamed <spk>-<utt> in every file, and <out_dir>/utt_map lists
'new old' for each. Utterances missing from text, utt2spk or wav.scp/segments, or with an empty
transcript, are left out and counted; other files (utt2dur, feats.scp, ...) are ignored. A lhotse
supervision without a speaker takes its recording id as speaker; one without text is left out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtbi.cli import run_main
from mtbi.data.importers import SOURCE_FILES, import_kaldi_dir, import_lhotse
from mtbi.errors import MtbiError
from mtbi.stage import Step, marker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--src", help="Kaldi or ESPnet data dir to import")
    source.add_argument("--lhotse_cuts", help="lhotse CutSet manifest, e.g. cuts.jsonl.gz")
    source.add_argument("--lhotse_recordings", help="lhotse RecordingSet manifest (with --lhotse_supervisions)")
    parser.add_argument("--lhotse_supervisions", help="lhotse SupervisionSet manifest (with --lhotse_recordings)")
    parser.add_argument("--out_dir", required=True, help="data dir to write, e.g. data/train")
    return parser


def sources(args: argparse.Namespace) -> dict[str, str]:
    """The inputs the options name, as resolved paths by option."""
    if bool(args.lhotse_recordings) != bool(args.lhotse_supervisions):
        raise MtbiError("--lhotse_recordings and --lhotse_supervisions go together")
    names = ("src", "lhotse_cuts", "lhotse_recordings", "lhotse_supervisions")
    return {name: str(Path(getattr(args, name)).resolve()) for name in names if getattr(args, name)}


def main(args: argparse.Namespace) -> None:
    given = sources(args)
    inputs = [*given.values(), *((Path(args.src) / name for name in SOURCE_FILES) if args.src else ())]
    step = Step(marker(args.out_dir), {"import": given}, inputs=inputs)
    if step.skip(f"{args.out_dir} already imported from {' '.join(given.values())}"):
        return
    if args.src:
        import_kaldi_dir(args.src, args.out_dir)
    else:
        import_lhotse(args.out_dir, args.lhotse_cuts, args.lhotse_recordings, args.lhotse_supervisions)
    step.mark_done()


if __name__ == "__main__":
    run_main(build_parser, main)
