"""Stage 8: score a system's benchmark answers (hyp.jsonl).

For each group of items (a split, or one task in one split):

- ``fidelity``: imitation of the teacher, i.e. agreement with the teacher's answer to the
  transcript (its text-input hyp.jsonl): exact match, BLEU and ROUGE-L;
- ``task_accuracy`` (exact-match tasks) or ``wer`` (transcription): against the task's own
  reference, on the items that have one;
- ``task_following``: on items of non-transcription tasks whose answer (the teacher's, else
  the reference) is not itself a near-verbatim transcription, the fraction of answers that do
  the task rather than transcribe the input, well or badly (metrics.follows_task; the failure
  mode of ASR-trained SLLMs, which transcribe whatever they are asked).

``scores.json``: ``{"prompt_generalization": {"seen": G, "unseen": G}, "task_generalization":
{"heldout": G}, "per_task": {task: {split: G}}, ...}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from mtbi.bench.metrics import bleu, exact_match, follows_task, is_transcription, rouge_l, word_error_rate
from mtbi.errors import MtbiError
from mtbi.tasks.bank import TaskBank
from mtbi.tasks.records import record_key

HYP_FIELDS = ("utt", "task", "prompt_id", "split", "input", "hyp", "ref")


def read_hyps(path: str | Path) -> list[dict]:
    """Read a hyp.jsonl (stage 7), checking its fields."""
    path = Path(path)
    if not path.is_file():
        raise MtbiError(f"{path} is missing; it is made by stage 7 (benchmark inference)")
    records, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise MtbiError(f"{path}:{lineno}: not JSON; re-run stage 7") from None
            missing = [k for k in HYP_FIELDS if k not in record]
            if missing:
                raise MtbiError(f"{path}:{lineno}: no '{missing[0]}' field; re-run stage 7")
            if record_key(record) in seen:
                raise MtbiError(f"{path}:{lineno}: item {record_key(record)} answered twice; re-run stage 7")
            seen.add(record_key(record))
            records.append(record)
    if not records:
        raise MtbiError(f"{path} is empty; re-run stage 7")
    return records


def _none_if_nan(value: float) -> float | None:
    return None if value != value else round(value, 4)


def score_group(records: list[dict], teacher: dict[tuple, str] | None, bank: TaskBank) -> dict:
    """The metrics of one group of hyp records (``teacher``: key -> the teacher's answer)."""
    hyps = [r["hyp"] for r in records]
    out: dict = {"n": len(records)}
    if teacher is not None:
        refs = [teacher[record_key(r)] for r in records]
        out["fidelity"] = {"exact_match": _none_if_nan(exact_match(hyps, refs)),
                           "bleu": _none_if_nan(bleu(hyps, refs)),
                           "rouge_l": _none_if_nan(rouge_l(hyps, refs))}
    by_scorer: dict[str, list[dict]] = {"exact_match": [], "wer": []}
    for r in records:
        if r["ref"] is not None:
            by_scorer[bank.task(r["task"]).scorer].append(r)
    em, wer = by_scorer["exact_match"], by_scorer["wer"]
    out["task_accuracy"] = _none_if_nan(exact_match([r["hyp"] for r in em], [r["ref"] for r in em]))
    out["wer"] = _none_if_nan(word_error_rate([r["hyp"] for r in wer], [r["ref"] for r in wer]))
    following = []
    for r in records:
        task_answer = teacher[record_key(r)] if teacher is not None else r["ref"]
        if (bank.task(r["task"]).family != "transcription" and task_answer is not None
                and not is_transcription(task_answer, r["transcript"])):
            following.append(follows_task(r["hyp"], r["transcript"], task_answer))
    out["task_following"] = _none_if_nan(sum(following) / len(following) if following else float("nan"))
    return out


def score_system(records: list[dict], teacher_records: list[dict] | None, bank: TaskBank) -> dict:
    """scores.json of one system's hyp records; fidelity needs the teacher's text-input records."""
    teacher = None
    if teacher_records is not None:
        teacher = {record_key(r): r["hyp"] for r in teacher_records}
        mine = {record_key(r) for r in records}
        for lacking, extra, whose in ((set(teacher), mine, "the teacher's"), (mine, set(teacher), "this system's")):
            missing = sorted(extra - lacking)
            if missing:
                raise MtbiError(f"{whose} answers lack {len(missing)} item(s), e.g. {missing[0]}; both must "
                                "answer the same bench.jsonl (re-run stage 7)")
    unknown = sorted({r["task"] for r in records} - set(bank.tasks))
    if unknown:
        raise MtbiError(f"task '{unknown[0]}' of the answers is not in the task bank; use the --task_conf "
                        "the benchmark was built with")

    def group(pred) -> dict:
        return score_group([r for r in records if pred(r)], teacher, bank)

    splits = sorted({r["split"] for r in records})
    per_task = {task: {split: group(lambda r, t=task, s=split: r["task"] == t and r["split"] == s)
                       for split in splits if any(r["task"] == task and r["split"] == split for r in records)}
                for task in sorted({r["task"] for r in records})}
    transcription = [r for r in records if bank.task(r["task"]).scorer == "wer" and r["ref"] is not None]
    return {
        "input": records[0]["input"],
        "num_items": len(records),
        "prompt_generalization": {s: group(lambda r, s=s: r["split"] == s) for s in ("seen", "unseen") if s in splits},
        "task_generalization": {"heldout": group(lambda r: r["split"] == "heldout")} if "heldout" in splits else {},
        "per_task": per_task,
        "wer": _none_if_nan(word_error_rate([r["hyp"] for r in transcription], [r["ref"] for r in transcription])),
    }
