"""The names of an experiment dir's runs and systems, and the baselines: the one module that
writes and reads them (the driver through ``mtbi.bin.run_names``).

A training config ``conf/train_<tag>.yaml`` trains the system ``<tag>``, one run dir per seed:
``sllm_<tag>`` (seed 0) and ``sllm_<tag>_seed<k>``. A tag ending in ``_frac<percent>`` is a
training-share run of the study (``data.utt_fraction`` = percent / 100) of the system's base tag,
so ``sllm_mtbi_frac10_seed2`` is seed 2 of MTBI on 10% of the training utterances. The teacher's
answers to the transcripts (text input) are the system ``teacher_text``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from mtbi.errors import MtbiError

PRIOR_METHODS = ("asr_sft", "blsp")  # ASR-only SFT and BLSP-style continuation, which the paper's claims beat
REFERENCE = "mtbi"  # the system every comparison tests the others against
BASELINES = (*PRIOR_METHODS, REFERENCE, "mtbi_interleave")
TEACHER_TEXT = "teacher_text"
RUN_PREFIX = "sllm_"
CONFIG_PREFIX = "train_"
_TAG = r"[A-Za-z0-9][A-Za-z0-9_.-]*?"
_RUN = re.compile(rf"^{RUN_PREFIX}(?P<tag>{_TAG})(?:_frac(?P<percent>\d+))?(?:_seed(?P<seed>\d+))?$")
_SEED_SUFFIX = re.compile(r"_seed\d+$")


@dataclass(frozen=True)
class RunName:
    """One training run: the config's ``tag`` (less a ``_frac<percent>`` suffix), the share of
    the training utterances in percent (None: all of them) and the seed."""

    tag: str
    percent: int | None = None
    seed: int = 0

    @property
    def system(self) -> str:
        """The system the run is a seed of: ``<tag>[_frac<percent>]``."""
        return self.tag if self.percent is None else f"{self.tag}_frac{self.percent}"

    @property
    def share(self) -> float:
        """The share of the training utterances, 0-1."""
        return 1.0 if self.percent is None else self.percent / 100

    @property
    def dir_name(self) -> str:
        """``sllm_<system>`` for seed 0, ``sllm_<system>_seed<k>`` for seed k."""
        return f"{RUN_PREFIX}{self.system}" + (f"_seed{self.seed}" if self.seed else "")

    @classmethod
    def parse(cls, name: str) -> RunName | None:
        """The run a dir name ``sllm_...`` names, or None for another name."""
        found = _RUN.match(name)
        if found is None:
            return None
        return cls(found["tag"], int(found["percent"]) if found["percent"] else None, int(found["seed"] or 0))


def system_of(run_dir: str | Path) -> str:
    """The system a run dir belongs to (``exp/sllm_mtbi_seed2`` -> ``mtbi``); a dir that is not a
    run (``exp/teacher_text``, another model's answers) is a system of its own name."""
    name = Path(run_dir).name
    run = RunName.parse(name)
    return name if run is None else run.system


def config_tag(conf: str | Path) -> str:
    """The tag of a training config ``train_<tag>.yaml``; a name that would be misread as another
    run's (a ``_seed<k>`` suffix) or is no safe dir name is an error naming the file."""
    path = Path(conf)
    if not (path.name.startswith(CONFIG_PREFIX) and path.suffix == ".yaml"):
        raise MtbiError(f"{conf}: a training config is named {CONFIG_PREFIX}<tag>.yaml (its runs are "
                        f"{RUN_PREFIX}<tag>); rename it")
    tag = path.stem[len(CONFIG_PREFIX):]
    if _SEED_SUFFIX.search(tag):
        raise MtbiError(f"{conf}: the tag '{tag}' ends like a seed suffix (_seed<k>), so its runs would be read "
                        "as another seed of another system; rename the file")
    if RunName.parse(RUN_PREFIX + tag) is None:
        raise MtbiError(f"{conf}: the tag '{tag}' must start with a letter or digit and hold only "
                        "[A-Za-z0-9_.-]; rename the file")
    return tag


def run_of(conf: str | Path, seed: int) -> RunName:
    """The run of training config ``conf`` with ``seed``."""
    run = RunName.parse(RUN_PREFIX + config_tag(conf))
    assert run is not None  # config_tag checked the tag
    return replace(run, seed=seed)


def share_config_name(tag: str, fraction: float) -> str:
    """The file name of the training-share config of ``tag`` on ``fraction`` of the utterances."""
    return f"{CONFIG_PREFIX}{RunName(tag, round(fraction * 100)).system}.yaml"
