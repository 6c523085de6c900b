"""External test sets: questions about audio files with their answers, from a jsonl file.

One item a line (the shape of VoiceBench- or AIR-Bench-style sets after conversion)::

    {"id": "q1", "audio": "wav/q1.flac", "question": "What colour is the car?", "answer": "red"}
    {"id": "q2", "audio": "wav/q2.flac", "question": "Who speaks?",
     "choices": ["a child", "a man", "a woman"], "answer": "B"}

``audio`` is a path relative to the jsonl file's dir, or absolute; ``answer`` of a
multiple-choice item is its choice's text or letter (A, B, ...). Optional keys: ``task`` (the
name scores are grouped by; default ``multiple_choice`` or ``free_form``), ``transcript`` (the
words spoken, kept for reference) and ``list_choices`` (false where the audio itself reads the
choices out: VoiceBench's openbookqa and mmsu). The question is asked as it is (with the speech
in its ``{transcript}`` slot, or after it: :func:`mtbi.tasks.prompting.with_speech_slot`); a
multiple-choice question lists its choices after that, one a line as ``A. text``, and asks for
the letter.

Scores (``scores.json`` ``external``, per task): multiple choice: accuracy, with the choice an
answer picks found by :func:`parse_choice`, and the share of answers that pick none; free form:
exact match, BLEU, ROUGE-L and chrF against ``answer``. Each with a 95% bootstrap interval over items.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import numpy as np

from mtbi.bench.build import BenchItem
from mtbi.bench.intervals import bootstrap_interval
from mtbi.bench.metrics import bleu, chrf, normalize_answer, rouge_l_f1
from mtbi.errors import MtbiError
from mtbi.tasks.prompting import with_speech_slot

SPLIT = "external"
LETTERS = string.ascii_uppercase
CHOICE_INSTRUCTION = "Answer with the letter of the right choice."
_LETTER_ANSWER = re.compile(r"^\(?([A-Z])\)?(?:[.:)]|$)|\b(?i:answer)(?: is)?:?\s*\(?([A-Z])\)?(?:[.:)\s]|$)")


def choice_prompt(question: str, choices: list[str]) -> str:
    """The prompt of a multiple-choice item: the question (with its speech slot), then the choices."""
    lines = [f"{LETTERS[k]}. {choice}" for k, choice in enumerate(choices)]
    return "\n".join([with_speech_slot(question), *lines, CHOICE_INSTRUCTION])


def parse_choice(answer: str, choices: list[str]) -> int | None:
    """The index of the choice ``answer`` picks: the choice it is (normalized), else the letter it
    starts with or names ("B", "(B)", "B. ...", "the answer is B"), else the one choice whose text
    it contains as words; None when it picks none, or several."""
    normalized = normalize_answer(answer)
    texts = [normalize_answer(c) for c in choices]
    if normalized in texts and texts.count(normalized) == 1:
        return texts.index(normalized)
    match = _LETTER_ANSWER.search(answer.strip())
    if match:
        index = LETTERS.index(match.group(1) or match.group(2))
        if index < len(choices):
            return index
    contained = [k for k, text in enumerate(texts) if text and re.search(rf"(^| ){re.escape(text)}( |$)", normalized)]
    return contained[0] if len(contained) == 1 else None


def _choice_index(answer: str, choices: list[str], where: str) -> int:
    """The index of the right choice an item's ``answer`` names (its text or its letter)."""
    texts = [normalize_answer(c) for c in choices]
    if normalize_answer(answer) in texts:
        return texts.index(normalize_answer(answer))
    letter = answer.strip().strip("().").upper()
    if len(letter) == 1 and letter in LETTERS[:len(choices)]:
        return LETTERS.index(letter)
    raise MtbiError(f"{where}: answer '{answer}' is neither one of the choices nor their letter "
                    f"(A-{LETTERS[len(choices) - 1]}); fix the item")


def read_external(path: str | Path) -> list[BenchItem]:
    """The benchmark items of the external test set ``path`` (checked: fields, unique ids, audio files)."""
    path = Path(path)
    if not path.is_file():
        raise MtbiError(f"{path} is missing; give a jsonl file of {{id, audio, question, answer}} items")
    items, ids = [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError:
                raise MtbiError(f"{where}: not JSON; one item a line") from None
            missing = [k for k in ("id", "audio", "question", "answer") if not isinstance(raw.get(k), str)]
            if missing:
                raise MtbiError(f"{where}: no '{missing[0]}' string; each item needs id, audio, question and answer")
            if raw["id"] in ids:
                raise MtbiError(f"{where}: id '{raw['id']}' is used twice; ids must be unique")
            ids.add(raw["id"])
            audio = (path.parent / raw["audio"]).resolve()
            if not audio.is_file():
                raise MtbiError(f"{where}: audio file {audio} not found (a relative path is read from {path.parent})")
            try:  # a question with two slots is refused here, not at inference
                with_speech_slot(raw["question"])
            except MtbiError as err:
                raise MtbiError(f"{where}: {err}") from None
            choices = raw.get("choices")
            if choices is not None:
                if not (isinstance(choices, list) and 2 <= len(choices) <= len(LETTERS)
                        and all(isinstance(c, str) for c in choices)):
                    raise MtbiError(f"{where}: choices must be a list of 2 to 26 strings")
                ref = choices[_choice_index(raw["answer"], choices, where)]
                listed = raw.get("list_choices", True)
                prompt = choice_prompt(raw["question"], choices) if listed else raw["question"]
            else:
                ref, prompt = raw["answer"], raw["question"]
            task = raw.get("task") or ("multiple_choice" if choices is not None else "free_form")
            items.append(BenchItem(raw["id"], task, "0", SPLIT, prompt, raw.get("transcript") or "", ref,
                                   str(audio), choices))
    if not items:
        raise MtbiError(f"{path} has no items")
    return sorted(items, key=lambda item: item.key)


def _with_interval(values: list[float]) -> dict:
    interval = bootstrap_interval(np.asarray(values))
    return {"mean": round(interval.mean, 4), "low": round(interval.low, 4), "high": round(interval.high, 4)}


def score_group(records: list[dict]) -> dict:
    """Scores of one task's answers: multiple choice when its items have choices, else free form."""
    hyps, refs = [r["hyp"] for r in records], [r["ref"] for r in records]
    if all(r.get("choices") for r in records):
        picked = [parse_choice(r["hyp"], r["choices"]) for r in records]
        correct = [float(p == r["choices"].index(r["ref"])) for p, r in zip(picked, records)]
        return {"kind": "multiple_choice", "n": len(records), "accuracy": _with_interval(correct),
                "no_choice": round(sum(p is None for p in picked) / len(records), 4)}
    return {"kind": "free_form", "n": len(records),
            "exact_match": _with_interval([float(normalize_answer(h) == normalize_answer(r)) for h, r in zip(hyps, refs)]),
            "chrf": _with_interval([chrf(h, r) for h, r in zip(hyps, refs)]),
            "rouge_l": _with_interval([rouge_l_f1(h, r) for h, r in zip(hyps, refs)]),
            "bleu": round(bleu(hyps, refs), 2)}


def score_external(records: list[dict]) -> dict:
    """``scores.json`` of answers to an external set: per task, and the number of items."""
    tasks = sorted({r["task"] for r in records})
    return {"input": records[0]["input"], "num_items": len(records),
            "external": {t: score_group([r for r in records if r["task"] == t]) for t in tasks}}


def external_markdown(name: str, scores: dict) -> str:
    """RESULTS.md of an external set: one row per task (means in %, 95% intervals in brackets)."""

    def cell(value: dict | None) -> str:
        return "-" if value is None else f"{100 * value['mean']:.1f} [{100 * value['low']:.1f}, {100 * value['high']:.1f}]"

    lines = [f"# {name}: external test set ({scores['num_items']} items, {scores['input']} input)", "",
             "| task | items | accuracy | no choice | exact match | chrF | ROUGE-L |", "|---|---|---|---|---|---|---|"]
    for task, group in scores["external"].items():
        no_choice = f"{100 * group['no_choice']:.1f}" if "no_choice" in group else "-"
        lines.append(f"| {task} | {group['n']} | {cell(group.get('accuracy'))} | {no_choice} | "
                     f"{cell(group.get('exact_match'))} | {cell(group.get('chrf'))} | {cell(group.get('rouge_l'))} |")
    return "\n".join(lines) + "\n"
