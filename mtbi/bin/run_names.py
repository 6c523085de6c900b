"""The run dirs of training configs, the baselines and the study's training-share configs, for
the recipe shell (mtbi.sh, local/run_study.sh), named by mtbi.run_names:

  python -m mtbi.bin.run_names runs --expdir exp --seeds 2 conf/train_mtbi.yaml ...
      one line "<config> <seed> <run dir>" per config and seed (exp/sllm_mtbi, exp/sllm_mtbi_seed1)
  python -m mtbi.bin.run_names baselines --conf_dir conf
      the baselines' configs (conf/train_asr_sft.yaml ... conf/train_mtbi_interleave.yaml)
  python -m mtbi.bin.run_names teacher --expdir exp
      the dir of the teacher's answers to the transcripts (exp/teacher_text)
  python -m mtbi.bin.run_names share_configs --conf_dir conf --out_dir exp/study/conf \\
          --fractions 0.1 0.5 --tags asr_sft mtbi
      writes train_<tag>_frac<percent>.yaml (base: the recipe's config, data.utt_fraction) and
      prints their paths

A config whose name would give another system's run dir, or a share run without its share, is a
one-line error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from mtbi.cli import run_main
from mtbi.config import read_mapping
from mtbi.errors import MtbiError
from mtbi.run_names import BASELINES, CONFIG_PREFIX, TEACHER_TEXT, run_of, share_config_name
from mtbi.stage import atomic_write


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    runs = modes.add_parser("runs", help="the run dirs of training configs")
    runs.add_argument("--expdir", required=True)
    runs.add_argument("--seeds", type=int, default=1, help="runs of each config: seeds 0..N-1")
    runs.add_argument("configs", nargs="+", help="training configs train_<tag>.yaml")
    baselines = modes.add_parser("baselines", help="the baselines' training configs")
    baselines.add_argument("--conf_dir", required=True, help="the config set's dir: conf, conf/smol, conf/real")
    teacher = modes.add_parser("teacher", help="the dir of the teacher's text-input answers")
    teacher.add_argument("--expdir", required=True)
    shares = modes.add_parser("share_configs", help="write the study's training-share configs")
    shares.add_argument("--conf_dir", required=True, help="where the tags' train_<tag>.yaml are")
    shares.add_argument("--out_dir", required=True)
    shares.add_argument("--fractions", nargs="+", required=True, help="shares of the training utterances, each in (0, 1)")
    shares.add_argument("--tags", nargs="+", required=True)
    return parser


def _check_share(conf: str, percent: int | None) -> None:
    """A ``_frac<percent>`` config must train on that share of the utterances."""
    if percent is None:
        return
    fraction = read_mapping(conf).get("data", {}).get("utt_fraction")
    if not isinstance(fraction, (int, float)) or round(fraction * 100) != percent:
        raise MtbiError(f"{conf}: a tag ending in _frac{percent} names a run on {percent}% of the training "
                        f"utterances, but data.utt_fraction is {fraction}; set it to {percent / 100} or rename the file")


def list_runs(configs: list[str], seeds: int, expdir: str) -> list[tuple[str, int, str]]:
    """``(config, seed, run dir)`` of each config and seed; two configs of one run dir are an error."""
    if seeds < 1:
        raise MtbiError(f"--seeds {seeds}: train at least one seed")
    runs, owners = [], {}
    for conf in configs:
        first = run_of(conf, 0)
        _check_share(conf, first.percent)
        if first.system in owners:
            raise MtbiError(f"{owners[first.system]} and {conf} both train the system '{first.system}' "
                            f"({first.dir_name}); rename one of them")
        owners[first.system] = conf
        runs += [(conf, seed, os.path.join(expdir, run_of(conf, seed).dir_name)) for seed in range(seeds)]
    return runs


def _fraction(text: str) -> float:
    try:
        fraction = float(text)
    except ValueError:
        fraction = -1.0
    if not 0 < fraction < 1:
        raise MtbiError(f"--fractions: each must be a number between 0 and 1 (the full data is the baselines'), "
                        f"got '{text}'")
    return fraction


def write_share_configs(conf_dir: Path, out_dir: Path, fractions: list[str], tags: list[str]) -> list[Path]:
    """``train_<tag>_frac<percent>.yaml`` in ``out_dir`` for each fraction and tag, inheriting the
    tag's config by a relative ``base:`` path (the dirs can move together)."""
    shares = [_fraction(text) for text in fractions]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fraction in shares:
        for tag in tags:
            base = conf_dir / f"{CONFIG_PREFIX}{tag}.yaml"
            if not base.is_file():
                raise MtbiError(f"{base} is missing: no training config of '{tag}' to train on a share of the data")
            path = out_dir / share_config_name(tag, fraction)
            text = yaml.safe_dump({"base": os.path.relpath(base, out_dir), "data": {"utt_fraction": fraction}},
                                  sort_keys=False)
            with atomic_write(path) as f:
                f.write(text)
            written.append(path)
    return written


def main(args: argparse.Namespace) -> None:
    if args.mode == "runs":
        lines = [f"{conf} {seed} {run_dir}" for conf, seed, run_dir in list_runs(args.configs, args.seeds, args.expdir)]
    elif args.mode == "baselines":
        lines = [" ".join(os.path.join(args.conf_dir, f"{CONFIG_PREFIX}{tag}.yaml") for tag in BASELINES)]
    elif args.mode == "teacher":
        lines = [os.path.join(args.expdir, TEACHER_TEXT)]
    else:
        lines = [str(p) for p in write_share_configs(Path(args.conf_dir), Path(args.out_dir), args.fractions, args.tags)]
    sys.stdout.write("".join(line + "\n" for line in lines))


if __name__ == "__main__":
    run_main(build_parser, main)
