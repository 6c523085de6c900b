"""Content digests of a recipe's outputs (mtbi.bench.fingerprint), to find which of them another
machine made bit-identical. Run it from the recipe dir on each machine, then compare:

  python -m mtbi.bin.fingerprint --out exp/fingerprint.json
  python -m mtbi.bin.fingerprint --out exp/fingerprint.json --compare other_machine_fingerprint.json

Prints one line per output (with --compare: same / differs / only here / only there).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mtbi.bench.fingerprint import differences, recipe_fingerprint
from mtbi.cli import run_main
from mtbi.errors import MtbiError
from mtbi.stage import atomic_write


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe_dir", default=".", help="the recipe dir (data/, dump/, exp/ under it)")
    parser.add_argument("--expdir", default="exp", help="the experiment dir, relative to --recipe_dir")
    parser.add_argument("--feats_dir", default="dump/raw", help="the stage-2 dirs: dump/raw or dump/logmel80")
    parser.add_argument("--out", required=True, help="where to write the digests (JSON)")
    parser.add_argument("--compare", default=None, help="another machine's --out file")
    return parser


def main(args: argparse.Namespace) -> None:
    theirs = None
    if args.compare:
        try:
            theirs = json.loads(Path(args.compare).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise MtbiError(f"--compare {args.compare}: not a fingerprint file ({err}); write one with --out") from None
    mine = recipe_fingerprint(Path(args.recipe_dir), args.expdir, args.feats_dir)
    if not mine:
        raise MtbiError(f"{args.recipe_dir}: no outputs found (data/*/wav.scp, {args.feats_dir}/*, {args.expdir}/*); "
                        "run it from the recipe dir after run.sh")
    with atomic_write(Path(args.out)) as f:
        json.dump(mine, f, indent=1)
    verdicts = differences(mine, theirs) if theirs is not None else mine
    width = max(map(len, verdicts))
    sys.stdout.write("".join(f"{name:<{width}}  {verdict}\n" for name, verdict in verdicts.items()))


if __name__ == "__main__":
    run_main(build_parser, main)
