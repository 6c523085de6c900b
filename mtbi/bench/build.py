"""Stage 7, part 1: the benchmark's questions about a test set.

For every utterance, each train task is asked once with a *seen* prompt (one used in training)
and once with an *unseen* paraphrase (prompt generalization), and each held-out task once
(task generalization: never trained with speech). Prompts are drawn with an RNG seeded by the
utterance id, so the benchmark depends only on the data dir, the task bank and the seed.
Each item carries the task's own reference where the task has one (the transcript for
transcription; the rule's answer for the other tasks on mini-corpus sentences), else null::

    {"utt", "task", "prompt_id", "split", "prompt", "transcript", "ref"}

Items of an external test set (:mod:`mtbi.bench.external`) add ``audio`` and, for multiple
choice, ``choices``; their split is ``external``.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from mtbi.data.datadir import draw_utts
from mtbi.errors import MtbiError
from mtbi.mini.rules import rule_answer
from mtbi.stage import atomic_write
from mtbi.tasks.bank import TaskBank
from mtbi.tasks.prompting import normalize_transcript

logger = logging.getLogger(__name__)

SPLITS = ("seen", "unseen", "heldout")  # seen/unseen prompts of train tasks; held-out tasks
EXTERNAL_FIELDS = ("audio", "choices")


@dataclass(frozen=True)
class BenchItem:
    """One benchmark question: a task prompt about one utterance."""

    utt: str
    task: str
    prompt_id: str
    split: str
    prompt: str
    transcript: str
    ref: str | None  # the task's reference answer; None where the task has none
    audio: str | None = None  # external items (mtbi.bench.external): their audio file
    choices: list[str] | None = None  # external multiple-choice items: the options, ``ref`` the right one

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.utt, self.task, self.prompt_id)


def build_bench(texts: dict[str, str], bank: TaskBank, max_utts: int = 0, seed: int = 0) -> list[BenchItem]:
    """The benchmark items of the utterances in ``texts`` (``max_utts`` of them drawn with
    ``seed`` when > 0), sorted by (utt, task, prompt_id). Empty transcripts are left out."""
    utts = sorted(u for u, t in texts.items() if t.strip())
    if len(utts) < len(texts):
        logger.warning("%d utterances with an empty transcript are left out of the benchmark",
                       len(texts) - len(utts))
    utts = draw_utts(utts, max_utts, seed)
    items = []
    for utt in utts:
        rng = random.Random(f"{seed}:{utt}")
        transcript = normalize_transcript(texts[utt])
        for name, task in bank.tasks.items():
            ref = rule_answer(task.rule, transcript) if task.rule else None
            splits = [("seen", "seen"), ("unseen", "unseen")] if name in bank.train_tasks else [("heldout", "all")]
            for split, which in splits:
                prompt_id = rng.choice(bank.prompt_ids(name, which))
                items.append(BenchItem(utt, name, prompt_id, split, bank.prompt(prompt_id), transcript, ref))
    return sorted(items, key=lambda item: item.key)


def write_bench(items: list[BenchItem], path: str | Path) -> None:
    """Write ``bench.jsonl`` atomically (the external fields only where an item has them)."""
    with atomic_write(path) as f:
        for item in items:
            fields = {k: v for k, v in asdict(item).items() if v is not None or k not in EXTERNAL_FIELDS}
            f.write(json.dumps(fields, ensure_ascii=False) + "\n")


def read_bench(path: str | Path) -> list[BenchItem]:
    """Read ``bench.jsonl`` (stage 7)."""
    path = Path(path)
    if not path.is_file():
        raise MtbiError(f"{path} is missing; it is made by stage 7 (mtbi.bin.build_bench)")
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                items.append(BenchItem(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                raise MtbiError(f"{path}:{lineno}: not a benchmark line; re-run stage 7") from None
    if not items:
        raise MtbiError(f"{path} is empty; check the test set's text and re-run stage 7")
    return items
