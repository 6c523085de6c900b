"""Stage 5: imitation targets, the teacher's answers to task prompts about each transcript.

Which (utterance, task, prompt) pairs are asked is planned deterministically per utterance, so
the plan does not depend on sharding. Each shard appends its answers to
``shards/targets.<n>.jsonl`` a chunk at a time (flushed and fsynced); a re-run after a kill
drops a half-written last line, skips what is already answered and generates the rest, so no
line is lost or duplicated (:func:`mtbi.stage.answer_resumably`). The merge writes
``targets.jsonl`` sorted by (utt, task, prompt_id), one JSON object a line::

    {"utt", "task", "prompt_id", "prompt", "transcript", "response", "truncated", "teacher", "gen"}

``truncated``: the answer was cut at ``gen.max_new_tokens``; training then learns it without
the end-of-sequence token (the teacher had not finished).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from transformers import PreTrainedTokenizerBase

from mtbi.data.datadir import draw_utts
from mtbi.errors import MtbiError
from mtbi.stage import Step, answer_resumably, atomic_write, merge_step, shard_slice, shard_step
from mtbi.tasks.bank import TaskBank
from mtbi.tasks.generation import Completion, Generator
from mtbi.tasks.prompting import normalize_transcript, render_prompt
from mtbi.tasks.records import record_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetRequest:
    """One question for the teacher: a task prompt about one transcript."""

    utt: str
    task: str
    prompt_id: str
    prompt: str
    transcript: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.utt, self.task, self.prompt_id)


def plan_requests(texts: dict[str, str], bank: TaskBank, tasks: list[str], prompt_set: str = "seen",
                  tasks_per_utt: int = 0, prompts_per_task: int = 1, seed: int = 0,
                  max_utts: int = 0, every_utt: tuple[str, ...] = ()) -> list[TargetRequest]:
    """The requests for the utterances of ``texts`` (``max_utts`` of them drawn with ``seed``;
    0: all): the tasks of ``every_utt`` and ``tasks_per_utt`` tasks drawn from the other
    ``tasks`` (0: all of them), each with ``prompts_per_task`` prompts drawn from its
    ``prompt_set`` (seen, unseen or all). Draws are seeded per utterance."""
    unknown = sorted(set(every_utt) - set(tasks))
    if unknown:
        raise MtbiError(f"tasks asked about every utterance {unknown} are not among the tasks {sorted(tasks)}")
    others = [t for t in tasks if t not in every_utt]
    requests = []
    for utt in draw_utts(texts, max_utts, seed):
        rng = random.Random(f"{seed}:{utt}")
        drawn = others if not 0 < tasks_per_utt < len(others) else rng.sample(others, tasks_per_utt)
        chosen = [t for t in tasks if t in every_utt] + drawn
        transcript = normalize_transcript(texts[utt])
        for task in chosen:
            ids = bank.prompt_ids(task, prompt_set)
            for prompt_id in sorted(rng.sample(ids, min(prompts_per_task, len(ids)))):
                requests.append(TargetRequest(utt, task, prompt_id, bank.prompt(prompt_id), transcript))
    return requests


def fit_context(requests: list[TargetRequest], tokenizer: PreTrainedTokenizerBase, max_prompt_tokens: int
                ) -> tuple[list[TargetRequest], list[TargetRequest]]:
    """Split ``requests`` into those whose rendered prompt has at most ``max_prompt_tokens``
    tokens and the rest (only prompts of more bytes than that are tokenized: a token holds at
    least one byte)."""
    kept, dropped = [], []
    for r in requests:
        text = render_prompt(tokenizer, r.prompt, r.transcript)
        too_long = (len(text.encode()) > max_prompt_tokens
                    and len(tokenizer(text, add_special_tokens=False)["input_ids"]) > max_prompt_tokens)
        (dropped if too_long else kept).append(r)
    return kept, dropped


def shard_requests(requests: list[TargetRequest], shard: int, num_shards: int) -> list[TargetRequest]:
    """The requests of every ``num_shards``-th utterance, from the ``shard``-th (1-based)."""
    mine = set(shard_slice(sorted({r.utt for r in requests}), shard, num_shards))
    return [r for r in requests if r.utt in mine]


def _shard_file(out_dir: str | Path, shard: int) -> Path:
    return Path(out_dir) / "shards" / f"targets.{shard}.jsonl"


def _plan_digest(requests: Iterable[TargetRequest]) -> str:
    digest = hashlib.sha256()
    for r in requests:
        digest.update(json.dumps([*r.key, r.prompt, r.transcript]).encode())
    return digest.hexdigest()


def targets_shard_step(out_dir: str | Path, shard: int, num_shards: int, requests: list[TargetRequest],
                       teacher: str, fingerprint: str, gen: dict) -> Step:
    """The bookkeeping of one shard: it records the teacher (name and model files' fingerprint),
    its decoding parameters and the plan (checked before loading a teacher)."""
    stamp = {"teacher": teacher, "fingerprint": fingerprint, "gen": gen, "plan": _plan_digest(requests)}
    return shard_step(out_dir, shard, num_shards, stamp, outputs=[_shard_file(out_dir, shard)])


def generate_targets(requests: list[TargetRequest], generator: Generator, out_dir: str | Path,
                     step: Step, chunk_size: int = 256) -> None:
    """Answer ``requests`` (one shard's) with ``generator`` into the shard file of ``step`` (from
    :func:`targets_shard_step`), resumably."""
    stamp = step.stamp
    path = _shard_file(out_dir, stamp["shard"])

    def answer(chunk: list[TargetRequest]) -> list[Completion]:
        return generator.complete([render_prompt(generator.tokenizer, r.prompt, r.transcript) for r in chunk])

    def record(r: TargetRequest, response: Completion) -> dict:
        return {"utt": r.utt, "task": r.task, "prompt_id": r.prompt_id, "prompt": r.prompt,
                "transcript": r.transcript, "response": response.text, "truncated": response.truncated,
                "teacher": stamp["teacher"], "gen": stamp["gen"]}

    answer_resumably(path, stamp, requests, answer, record, record_key, chunk_size, f"targets shard {stamp['shard']}")
    step.mark_done()


def merge_targets(out_dir: str | Path, num_shards: int, samples_per_task: int = 1) -> int:
    """Merge the shards into ``targets.jsonl``; log a few samples per task; return the count."""
    out_dir = Path(out_dir)
    shards = [_shard_file(out_dir, shard) for shard in range(1, num_shards + 1)]
    target_file = out_dir / "targets.jsonl"
    # Merged already from these very shards: leave targets.jsonl (and what depends on it) alone.
    step = merge_step(out_dir, num_shards, "targets", 5, outputs=[target_file])
    if step.is_done():
        with open(target_file, "rb") as f:
            count = sum(1 for _ in f)
        logger.info("%s already merged: %d targets", target_file, count)
        return count
    records = []
    for path in shards:
        with open(path, encoding="utf-8") as f:
            records += [json.loads(line) for line in f]
    records.sort(key=record_key)
    keys = [record_key(r) for r in records]
    if len(set(keys)) != len(keys):
        raise MtbiError(f"{out_dir}: duplicate targets across shards; remove {out_dir}/shards and re-run stage 5")
    with atomic_write(target_file) as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    step.mark_done()
    shown: dict[str, int] = {}
    for r in records:
        if shown.get(r["task"], 0) < samples_per_task:
            shown[r["task"]] = shown.get(r["task"], 0) + 1
            logger.info("sample [%s] %s | %s -> %s", r["task"], r["prompt"], r["transcript"], r["response"])
    truncated = sum(bool(r.get("truncated")) for r in records)
    logger.info("%s: %d targets from teacher %s, %d (%.1f%%) cut at max_new_tokens", out_dir / "targets.jsonl",
                len(records), records[0]["teacher"] if records else "-", truncated,
                100 * truncated / max(len(records), 1))
    return len(records)


def target_utts(target_file: str | Path) -> set[str]:
    """The utterances that ``targets.jsonl`` has answers for."""
    utts = set()
    with open(target_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                utts.add(json.loads(line)["utt"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise MtbiError(f"{target_file}:{lineno}: not a targets line; re-run stage 5") from None
    return utts
